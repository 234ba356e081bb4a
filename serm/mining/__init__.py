"""Multi-agent sample miner: agents registered by the name the policy uses — the built-in ones
below and those of installed packages (entry point group `serm.mining_agents`, `serm.plugins`)."""

from serm.mining.base import MiningAgent
from serm.mining.click_model import ClickModel
from serm.mining.disagreement import Disagreement
from serm.mining.novelty import Novelty
from serm.mining.uncertainty import Uncertainty
from serm.mining.user_feedback import UserFeedback
from serm.plugins import MINING_AGENTS, Registry

REGISTRY = Registry("mining agent", MINING_AGENTS,
                    {cls.name: cls for cls in (UserFeedback, Uncertainty, ClickModel, Disagreement, Novelty)},
                    base=MiningAgent)

__all__ = ["REGISTRY"]
