"""Multi-agent relevance annotator: agents registered by the name the policy uses — the built-in
ones below and those of installed packages (entry point group `serm.annotation_agents`,
`serm.plugins`)."""

from serm.annotation.base import AnnotationAgent
from serm.annotation.click_evidence import ClickEvidence
from serm.annotation.embedding import EmbeddingJudge
from serm.annotation.human import HumanJudge
from serm.annotation.lexical import LexicalJudge
from serm.annotation.llm_judge import LLMJudge
from serm.annotation.noisy_judge import NoisyJudge
from serm.annotation.teacher import Teacher
from serm.plugins import ANNOTATION_AGENTS, Registry

REGISTRY = Registry("annotation agent", ANNOTATION_AGENTS,
                    {cls.name: cls for cls in (LexicalJudge, EmbeddingJudge, ClickEvidence, Teacher, HumanJudge,
                                               LLMJudge, NoisyJudge)},
                    base=AnnotationAgent)

__all__ = ["REGISTRY"]
