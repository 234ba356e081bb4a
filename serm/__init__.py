"""SERM: self-evolving search relevance models.

The package is import-light on purpose: heavy libraries (torch, transformers, feast,
evidently, great_expectations, kfp) are imported inside the functions that need them,
so `serm --help` stays fast.
"""

__version__ = "0.1.0"


def load_model(workspace=".", model: str = "production", device: str = "auto"):
    """A workspace's model for scoring (`serm.serving.Reranker`): `production`, `v3`, or a saved
    model directory. See `serm.serving`."""
    from serm.serving import load_model as _load

    return _load(workspace, model, device)
