"""Exceptions of our own. Each message says what was wrong, where, and what to do."""


class SermError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""

    exit_code = 2


class PolicyError(SermError):
    """The evolution policy is malformed. `errors` holds (field path, message, hint)."""

    def __init__(self, source: str, errors: list[tuple[str, str, str]]):
        self.source = source
        self.errors = errors
        lines = [f"{source}: {len(errors)} error(s) in the policy"]
        for field, message, hint in errors:
            lines.append(f"  {field or '<root>'}: {message}")
            if hint:
                lines.append(f"    fix: {hint}")
        super().__init__("\n".join(lines))


class DataError(SermError):
    """Input data cannot be read or lacks what the stage needs."""


class WorkspaceError(SermError):
    """The workspace (git + DVC + data/) is missing, locked or inconsistent."""


class WorkspaceLocked(WorkspaceError):
    exit_code = 3


class CheckFailed(SermError):
    """A data-quality gate (Great Expectations) failed: the round stops before training."""

    exit_code = 4


class RegistryError(SermError):
    """An agent/detector name or parameter is unknown; the message lists the valid ones."""


class AnnotationError(SermError):
    """An annotator agent cannot work as configured (endpoint, model, credentials)."""


class ServiceError(SermError):
    """A local service SERM starts (the Evidently UI) cannot start."""


class PipelineError(SermError):
    """A pipeline step or the Kubeflow Pipelines backend failed (clone, DVC pull, submit, push)."""
