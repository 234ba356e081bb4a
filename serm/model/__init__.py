"""The relevance model: a transformer cross-encoder over 4 grades; score = expected grade."""

from serm.model.passages import model_inputs

__all__ = ["model_inputs"]
