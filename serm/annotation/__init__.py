"""Multi-agent relevance annotator: agents registered by the name the policy uses."""

from serm.annotation.click_evidence import ClickEvidence
from serm.annotation.embedding import EmbeddingJudge
from serm.annotation.human import HumanJudge
from serm.annotation.lexical import LexicalJudge
from serm.annotation.llm_judge import LLMJudge
from serm.annotation.noisy_judge import NoisyJudge
from serm.annotation.teacher import Teacher

REGISTRY = {cls.name: cls for cls in (LexicalJudge, EmbeddingJudge, ClickEvidence, Teacher, HumanJudge, LLMJudge, NoisyJudge)}

__all__ = ["REGISTRY"]
