"""The SERM evolution pipeline for a Kubeflow Pipelines cluster (KFP v2).

One round, every step a pod of the image the repo's Dockerfile builds:

    prepare ──► if the trigger fired (or force):
                  ParallelFor shard: score ──► mine (merge) ──► annotate ──► check ──► train (GPU) ──► evaluate ──► promote
                else: keep (commit the batch and its drift report)

No step assumes a filesystem shared with another (see `pipelines/cluster_runtime.py`): each
clones the workspace's git repository at `rev` and pulls `data/` from the DVC remote; results
move only as KFP artifacts; the last step pushes the commit and tag. Mining is sharded by query:
each shard scores its pairs once with the production model, the merge hands the whole batch's
scores to the miner agents and the combiner (one forward pass per pair, every shard's pairs
seen by every agent). Deterministic steps (shard scoring, the merge, the label checks, the
evaluation: pure functions of `rev` and their input artifacts) are cached by the backend;
ingest (it reads the live stream), annotation (LLM judges, people), training (GPU kernels are
not deterministic) and the commit are not.

The same components run under kfp.local (`run_local`), which is how the tests run them.
No `from __future__ import annotations` here: KFP reads the annotations as real types.
"""

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from pipelines.evolution import IMAGE

NAME = "serm-evolution-cluster"
DEFAULT_SHARDS = 4
GPU = "nvidia.com/gpu"
# Components run on the image's own kfp (install_kfp_package=False): a pod needs no package index.
CACHED = ("score-shard-op", "mine-op", "check-op", "evaluate-op")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_op(repo: str, rev: str, policy_path: str, dvc_remote: str, force: bool, batch: Output[Dataset]) -> bool:
    from pipelines import cluster_runtime

    return cluster_runtime.prepare(repo, rev, policy_path, dvc_remote, force, batch.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def score_shard_op(repo: str, rev: str, policy_path: str, dvc_remote: str, shard: int, shards: int,
                   batch: Input[Dataset], scores: Output[Dataset]):
    from pipelines import cluster_runtime

    cluster_runtime.score_shard(repo, rev, policy_path, dvc_remote, shard, shards, batch.path, scores.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def mine_op(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: Input[Dataset],
            scores: Input[List[Dataset]], candidates: Output[Dataset]):
    from pipelines import cluster_runtime

    candidates.metadata["manifest"] = cluster_runtime.mine(repo, rev, policy_path, dvc_remote, batch.path,
                                                           [s.path for s in scores], candidates.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def annotate_op(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: Input[Dataset],
                candidates: Input[Dataset], labels: Output[Dataset]):
    from pipelines import cluster_runtime

    labels.metadata["manifest"] = cluster_runtime.annotate(repo, rev, policy_path, dvc_remote, batch.path,
                                                           candidates.path, labels.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def check_op(repo: str, rev: str, policy_path: str, dvc_remote: str, labels: Input[Dataset],
             report: Output[Artifact]):
    from pipelines import cluster_runtime

    report.metadata["manifest"] = cluster_runtime.check(repo, rev, policy_path, dvc_remote, labels.path, report.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_op(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: Input[Dataset], labels: Input[Dataset],
             model: Output[Model]):
    from pipelines import cluster_runtime

    model.metadata["manifest"] = cluster_runtime.train(repo, rev, policy_path, dvc_remote, batch.path, labels.path,
                                                       model.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_op(repo: str, rev: str, policy_path: str, dvc_remote: str, batch: Input[Dataset], model: Input[Model],
                metrics: Output[Artifact]):
    from pipelines import cluster_runtime

    metrics.metadata["manifest"] = cluster_runtime.evaluate(repo, rev, policy_path, dvc_remote, batch.path,
                                                            model.path, metrics.path)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote_op(repo: str, rev: str, policy_path: str, dvc_remote: str, branch: str, batch: Input[Dataset],
               candidates: Input[Dataset], labels: Input[Dataset], report: Input[Artifact], model: Input[Model],
               metrics: Input[Artifact]) -> str:
    from pipelines import cluster_runtime

    entries = {stage: art.metadata.get("manifest") for stage, art in
               (("mine", candidates), ("annotate", labels), ("check", report), ("train", model), ("evaluate", metrics))}
    return cluster_runtime.promote(repo, rev, policy_path, dvc_remote, branch, batch.path, candidates.path,
                                   labels.path, report.path, model.path, metrics.path, entries)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def keep_op(repo: str, rev: str, policy_path: str, dvc_remote: str, branch: str, batch: Input[Dataset]) -> str:
    from pipelines import cluster_runtime

    return cluster_runtime.keep(repo, rev, policy_path, dvc_remote, branch, batch.path)


def build_pipeline(shards: int = DEFAULT_SHARDS):
    """The cluster pipeline with mining fanned out over `shards` parallel scoring steps."""
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= 256:
        from serm.errors import PipelineError

        raise PipelineError(f"shards must be a whole number from 1 to 256, got {shards!r}; e.g. --shards 4")

    @dsl.pipeline(name=NAME, description="One SERM evolution round on a Kubeflow cluster")
    def evolution_cluster(repo: str, rev: str, branch: str = "main", policy_path: str = "policies/default.yaml",
                          dvc_remote: str = "", force: bool = False):
        common = dict(repo=repo, rev=rev, policy_path=policy_path, dvc_remote=dvc_remote)
        prepared = prepare_op(**common, force=force).set_caching_options(False)
        batch = prepared.outputs["batch"]
        with dsl.If(prepared.outputs["Output"] == True, name="trigger-fired"):  # noqa: E712 (a KFP condition)
            with dsl.ParallelFor(items=list(range(shards)), name="mining-shards") as shard:
                scored = score_shard_op(**common, shard=shard, shards=shards, batch=batch)
            mined = mine_op(**common, batch=batch, scores=dsl.Collected(scored.outputs["scores"]))
            annotated = annotate_op(**common, batch=batch, candidates=mined.outputs["candidates"])
            checked = check_op(**common, labels=annotated.outputs["labels"])
            trained = train_op(**common, batch=batch, labels=annotated.outputs["labels"]).after(checked)
            trained.set_accelerator_type(GPU).set_accelerator_limit(1)
            evaluated = evaluate_op(**common, batch=batch, model=trained.outputs["model"])
            promoted = promote_op(**common, branch=branch, batch=batch, candidates=mined.outputs["candidates"],
                                  labels=annotated.outputs["labels"], report=checked.outputs["report"],
                                  model=trained.outputs["model"], metrics=evaluated.outputs["metrics"])
            for task in (scored, mined, checked, evaluated):
                task.set_caching_options(True)
            for task in (annotated, trained, promoted):
                task.set_caching_options(False)
        with dsl.Else(name="no-trigger"):
            keep_op(**common, branch=branch, batch=batch).set_caching_options(False)

    return evolution_cluster


def compile_pipeline(out_path: str, shards: int = DEFAULT_SHARDS) -> str:
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(shards), package_path=out_path)
    return out_path


def run_local(arguments: dict, pipeline_root: str, log_path: str, shards: int = 2) -> None:
    """Run the cluster pipeline's own components on this machine with kfp.local (no pods)."""
    from pipelines.evolution import run_locally

    run_locally(build_pipeline(shards), arguments, pipeline_root, log_path)


def submit(host: str, arguments: dict, shards: int = DEFAULT_SHARDS, experiment: str = "serm",
           run_name: str | None = None, namespace: str | None = None) -> str:
    """Compile and start a run on the KFP backend at `host` (kfp.Client); returns the run id."""
    import tempfile
    import warnings
    from pathlib import Path

    from serm.errors import PipelineError

    try:
        import kfp
    except ImportError as exc:   # the SDK is a dependency; a broken install is the user's to fix
        raise PipelineError(f"the KFP SDK cannot be imported ({exc}); reinstall with scripts/setup.sh") from exc
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_pipeline(str(Path(tmp) / f"{NAME}.yaml"), shards)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                client = kfp.Client(host=host, namespace=namespace)
                run = client.create_run_from_pipeline_package(path, arguments=arguments, run_name=run_name,
                                                              experiment_name=experiment, namespace=namespace)
        except Exception as exc:   # urllib3, kfp_server_api and requests errors alike: say where and why
            reason = getattr(exc, "reason", None) or getattr(exc, "body", None) or exc
            raise PipelineError(f"could not submit {NAME} to the Kubeflow Pipelines API at {host}: "
                                f"{type(exc).__name__}: {str(reason)[:500]}; check --host (the KFP API, e.g. "
                                "http://127.0.0.1:8888 after `kubectl port-forward -n kubeflow "
                                "svc/ml-pipeline-ui 8888:80`) and that the cluster is up") from None
    return run.run_id
