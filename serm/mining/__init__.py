"""Multi-agent sample miner: agents registered by the name the policy uses."""

from serm.mining.click_model import ClickModel
from serm.mining.disagreement import Disagreement
from serm.mining.novelty import Novelty
from serm.mining.uncertainty import Uncertainty
from serm.mining.user_feedback import UserFeedback

REGISTRY = {cls.name: cls for cls in (UserFeedback, Uncertainty, ClickModel, Disagreement, Novelty)}

__all__ = ["REGISTRY"]
