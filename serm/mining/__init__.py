"""Multi-agent sample miner: agents registered by the name the policy uses."""

from serm.mining.uncertainty import Uncertainty
from serm.mining.user_feedback import UserFeedback

REGISTRY = {cls.name: cls for cls in (UserFeedback, Uncertainty)}

__all__ = ["REGISTRY"]
