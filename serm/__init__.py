"""SERM: self-evolving search relevance models.

The package is import-light on purpose: heavy libraries (torch, transformers, feast,
evidently, great_expectations, kfp) are imported inside the functions that need them,
so `serm --help` stays fast.
"""

__version__ = "0.1.0"
