"""Multi-agent relevance annotator: agents registered by the name the policy uses."""

from serm.annotation.click_evidence import ClickEvidence
from serm.annotation.embedding import EmbeddingJudge
from serm.annotation.lexical import LexicalJudge

REGISTRY = {cls.name: cls for cls in (LexicalJudge, EmbeddingJudge, ClickEvidence)}

__all__ = ["REGISTRY"]
