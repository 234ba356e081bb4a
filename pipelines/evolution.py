"""The SERM evolution pipeline (KFP v2): mine → annotate → check labels → train → evaluate →
promote. Each component is a thin wrapper over `pipelines.runtime`, which calls the round
runner (`serm.round`) with the artifacts the component was handed: the ingested batch (the
round's ingest folder, imported as a KFP Dataset with `dsl.importer`) and each earlier step's
KFP output. Compile with `serm pipeline compile`; `serm evolve` runs it
with `kfp.local` on this machine.

No `from __future__ import annotations` here: KFP reads the annotations as real types."""


from pathlib import Path

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

# Built from the repo's Dockerfile for cluster runs; kfp.local ignores it.
IMAGE = "serm:0.1.0"


@dsl.component(base_image=IMAGE)
def mine_op(workspace: str, round_no: int, policy_path: str, batch: Input[Dataset], candidates: Output[Dataset]):
    from pipelines import runtime

    runtime.mine(workspace, round_no, policy_path, batch.path, candidates.path)


@dsl.component(base_image=IMAGE)
def annotate_op(workspace: str, round_no: int, policy_path: str, batch: Input[Dataset], candidates: Input[Dataset],
                labels: Output[Dataset]):
    from pipelines import runtime

    runtime.annotate(workspace, round_no, policy_path, batch.path, candidates.path, labels.path)


@dsl.component(base_image=IMAGE)
def check_op(workspace: str, round_no: int, policy_path: str, labels: Input[Dataset],
             report: Output[Artifact]):
    from pipelines import runtime

    runtime.check(workspace, round_no, policy_path, labels.path, report.path)


@dsl.component(base_image=IMAGE)
def train_op(workspace: str, round_no: int, policy_path: str, labels: Input[Dataset],
             model: Output[Model]):
    from pipelines import runtime

    runtime.train(workspace, round_no, policy_path, labels.path, model.path)


@dsl.component(base_image=IMAGE)
def evaluate_op(workspace: str, round_no: int, policy_path: str, model: Input[Model],
                metrics: Output[Artifact]):
    from pipelines import runtime

    runtime.evaluate(workspace, round_no, policy_path, model.path, metrics.path)


@dsl.component(base_image=IMAGE)
def promote_op(workspace: str, round_no: int, policy_path: str, model: Input[Model],
               metrics: Input[Artifact]) -> str:
    from pipelines import runtime

    return runtime.promote(workspace, round_no, policy_path, model.path, metrics.path)


@dsl.pipeline(name="serm-evolution", description="One SERM evolution round")
def evolution_pipeline(workspace: str, round_no: int, policy_path: str, batch: str):
    # The ingested batch (events, quarantine, per-query frame) enters as a KFP artifact.
    ingested = dsl.importer(artifact_uri=batch, artifact_class=Dataset, reimport=False)
    mined = mine_op(workspace=workspace, round_no=round_no, policy_path=policy_path, batch=ingested.output)
    annotated = annotate_op(workspace=workspace, round_no=round_no, policy_path=policy_path, batch=ingested.output,
                            candidates=mined.outputs["candidates"])
    checked = check_op(workspace=workspace, round_no=round_no, policy_path=policy_path,
                       labels=annotated.outputs["labels"])
    trained = train_op(workspace=workspace, round_no=round_no, policy_path=policy_path,
                       labels=annotated.outputs["labels"]).after(checked)
    evaluated = evaluate_op(workspace=workspace, round_no=round_no, policy_path=policy_path,
                            model=trained.outputs["model"])
    promote_op(workspace=workspace, round_no=round_no, policy_path=policy_path,
               model=trained.outputs["model"], metrics=evaluated.outputs["metrics"])
    for task in (mined, annotated, checked, trained, evaluated):
        task.set_caching_options(False)  # the round manifest decides what to reuse


def compile_pipeline(out_path: str) -> str:
    from kfp import compiler

    compiler.Compiler().compile(evolution_pipeline, package_path=out_path)
    return out_path


def run_local(workspace: str, round_no: int, policy_path: str, pipeline_root: str, log_path: str) -> None:
    """Run the pipeline on this machine's Python with kfp.local (no containers). The batch is
    the round's ingest folder, which `serm evolve` filled before the pipeline."""
    from serm.schema import WorkspaceLayout

    batch = str(WorkspaceLayout(Path(workspace)).round(round_no).stage_dir("ingest"))
    run_locally(evolution_pipeline, {"workspace": workspace, "round_no": round_no, "policy_path": policy_path,
                                     "batch": batch}, pipeline_root, log_path)


def run_locally(pipeline, arguments: dict, pipeline_root: str, log_path: str) -> None:
    """Run `pipeline` with kfp.local's SubprocessRunner on this machine's Python.

    kfp.local echoes every task's executor input and output JSON; all of it goes to
    `log_path`, and only the stages' own progress lines and task statuses reach the terminal.
    """
    import contextlib
    import logging
    import sys

    from kfp import local

    with open(log_path, "a", encoding="utf-8") as log_file:
        tee = _StageLines(sys.stdout, log_file)
        handler = logging.StreamHandler(tee)
        kfp_loggers = [logging.getLogger(n) for n in ("kfp", "kfp.local", "root")]
        saved = [(lg, lg.handlers[:], lg.propagate) for lg in kfp_loggers]
        try:
            with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
                local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root,
                           raise_on_error=True)
                for lg in kfp_loggers[:2]:
                    lg.handlers = [handler]
                    lg.propagate = False
                pipeline(**arguments)
        finally:
            for lg, handlers, prop in saved:
                lg.handlers, lg.propagate = handlers, prop


class _StageLines:
    """A stream that writes everything to a log file and stage lines to the terminal."""

    def __init__(self, terminal, log_file):
        self.terminal, self.log_file, self.buf = terminal, log_file, ""

    def write(self, text: str) -> int:
        self.log_file.write(text)
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self._echo(line)
        return len(text)

    def _echo(self, line: str) -> None:
        import re

        plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
        body = plain.split(" - INFO - ", 1)[-1].strip()
        if re.match(r"\[[a-z]+\] ", body) or body.startswith("epoch") or "finished with status" in body \
                or "Error" in body or body.startswith("Traceback") or "FAILURE" in body:
            self.terminal.write("  " + body + "\n")

    def flush(self) -> None:
        self.log_file.flush()
        self.terminal.flush()
