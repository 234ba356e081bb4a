"""What miner and annotator agents share: a params model and registration by YAML name."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AgentParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Agent:
    """An agent is built from its validated params; the data and models it needs are handed in
    by the stage, never fetched from globals."""

    name: str = ""
    Params: type[AgentParams] = AgentParams

    def __init__(self, **params):
        self.params = self.Params(**params)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{self.name}({args})"


def build(registry: dict[str, type[Agent]], spec) -> Agent:
    """Instantiate an agent from a policy `AgentSpec` (already validated by the policy)."""
    return registry[spec.name](**spec.params())
