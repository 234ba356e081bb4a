"""The cluster variant's compiled IR, read back as a KFP backend reads it: every executor runs the
image the Dockerfile builds, the training step requests a GPU, mining fans out over shards with
ParallelFor and fans back in to one merge, caching is on exactly for the deterministic steps,
the round runs only when the trigger fired (else the batch is committed), and no parameter or
command names a local path. The Dockerfile installs what pyproject.toml pins."""

import re
import tomllib

import pytest
import yaml

from pipelines import cluster, evolution
from serm.cli import main
from serm.errors import PipelineError

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ir") / "cluster.yaml"
    assert main(["pipeline", "compile", "--cluster", "--shards", "3", "--out", str(out)]) == 0
    return yaml.safe_load(out.read_text())


def tasks_of(ir):
    """Every task of every DAG (root and sub-DAGs), by name: (the DAG's component, the task)."""
    out = {}
    for comp, spec in [("root", ir["root"]), *ir["components"].items()]:
        for name, task in spec.get("dag", {}).get("tasks", {}).items():
            out[name] = (comp, task)
    return out


def test_every_executor_runs_the_project_image_without_installing_anything(ir):
    executors = ir["deploymentSpec"]["executors"]
    assert len(executors) == 9
    assert {e["container"]["image"] for e in executors.values()} == {evolution.IMAGE} == {"serm:0.1.0"}
    for e in executors.values():
        command = " ".join(e["container"]["command"])
        assert "pip install" not in command, "a pod needs no package index: kfp comes with the image"
        assert "from pipelines import cluster_runtime" in command


def test_training_requests_one_gpu_and_nothing_else_does(ir):
    executors = ir["deploymentSpec"]["executors"]
    gpu = {k: e["container"].get("resources", {}).get("accelerator") for k, e in executors.items()
           if e["container"].get("resources", {}).get("accelerator")}
    assert list(gpu) == ["exec-train-op"]
    assert gpu["exec-train-op"]["resourceType"] == "nvidia.com/gpu" and gpu["exec-train-op"]["resourceCount"] == "1"


def test_mining_fans_out_over_shards_and_merges_once(ir):
    tasks = tasks_of(ir)
    loops = [n for n, (_, t) in tasks.items() if "parameterIterator" in t]
    assert len(loops) == 1, loops
    loop_comp, loop = tasks[loops[0]]
    assert loop["taskInfo"]["name"] == "mining-shards"
    assert yaml.safe_load(loop["parameterIterator"]["items"]["raw"]) == [0, 1, 2]
    inner = ir["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["score-shard-op"]
    shard_in = inner["score-shard-op"]["inputs"]["parameters"]
    assert "componentInputParameter" in shard_in["shard"] and shard_in["shards"]["runtimeValue"]["constant"] == 3
    comp, merge = tasks["mine-op"]
    assert comp == loop_comp and loops[0] in merge["dependentTasks"]
    scores = merge["inputs"]["artifacts"]["scores"]["taskOutputArtifact"]
    assert scores == {"outputArtifactKey": "pipelinechannel--score-shard-op-scores", "producerTask": loops[0]}
    merge_def = ir["components"]["comp-mine-op"]["inputDefinitions"]["artifacts"]["scores"]
    assert merge_def["isArtifactList"] is True, "the merge takes every shard's scores as one list"


def test_caching_is_on_for_deterministic_steps_only(ir):
    tasks = tasks_of(ir)
    cached = {n for n, (_, t) in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
    assert cached == set(cluster.CACHED) == {"score-shard-op", "mine-op", "check-op", "evaluate-op"}
    for name in ("prepare-op", "annotate-op", "train-op", "promote-op", "keep-op"):
        assert "cachingOptions" in tasks[name][1] and not tasks[name][1]["cachingOptions"].get("enableCache"), name


def test_the_round_runs_only_when_the_trigger_fired(ir):
    tasks = tasks_of(ir)
    conditions = {n: t["triggerPolicy"]["condition"] for n, (_, t) in tasks.items() if "triggerPolicy" in t}
    assert sorted(conditions.values()) == ["!(inputs.parameter_values['pipelinechannel--prepare-op-Output'] == true)",
                                           "inputs.parameter_values['pipelinechannel--prepare-op-Output'] == true"]
    fired = next(n for n, c in conditions.items() if not c.startswith("!"))
    body = ir["components"][tasks[fired][1]["componentRef"]["name"]]["dag"]["tasks"]
    assert {"mine-op", "annotate-op", "check-op", "train-op", "evaluate-op", "promote-op"} <= set(body)
    assert set(tasks["train-op"][1]["dependentTasks"]) == {"annotate-op", "check-op"}
    other = next(n for n, c in conditions.items() if c.startswith("!"))
    assert list(ir["components"][tasks[other][1]["componentRef"]["name"]]["dag"]["tasks"]) == ["keep-op"]


def test_steps_share_no_filesystem(ir):
    """Inputs are the repository, a revision, a policy path inside it and the DVC remote; every
    other input is an artifact another step produced. Nothing names a local folder."""
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"repo", "rev", "branch", "policy_path", "dvc_remote", "force"}
    assert params["policy_path"]["defaultValue"] == "policies/default.yaml"
    text = yaml.safe_dump(ir)
    assert "workspace" not in set(params) and not re.search(r"/tmp/|/work/|\.serm/rounds", text)
    for name, comp in ir["components"].items():
        if "executorLabel" in comp:
            own = set(comp.get("inputDefinitions", {}).get("parameters", {}))
            assert own <= {"repo", "rev", "branch", "policy_path", "dvc_remote", "force", "shard", "shards"}, name


def test_shards_are_checked():
    for bad in (0, -1, 257, 2.5, True):
        with pytest.raises(PipelineError, match="shards must be a whole number"):
            cluster.build_pipeline(bad)


def test_local_variant_still_compiles_unchanged(tmp_path):
    out = tmp_path / "local.yaml"
    assert main(["pipeline", "compile", "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["pipelineInfo"]["name"] == "serm-evolution"


def test_dockerfile_installs_what_the_project_pins():
    text = (ROOT / "Dockerfile").read_text()
    assert text.splitlines()[[i for i, l in enumerate(text.splitlines()) if l.startswith("FROM")][0]] == \
        "FROM python:3.11-slim"
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cpu = pins["optional-dependencies"]["cpu"]
    assert cpu == ["torch==2.13.0"] and 'ARG TORCH_SPEC="torch==2.13.0"' in text, "the same torch pin as setup.sh"
    assert 'pip install ".[cpu]"' in text and "pip check" in text
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pkg in (p.rstrip("*") for p in packages):
        assert f"COPY {pkg} ./{pkg}" in text, pkg
    assert "install -y --no-install-recommends git" in text, "steps clone the workspace"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".serm", "data", ".dvc-remote"} <= set(ignored)


def test_pairs_are_split_by_query_into_stable_shards():
    from pipelines.cluster_runtime import shard_of

    queries = [f"q{i % 40}" for i in range(200)]          # 40 queries, 5 pairs each
    shards = shard_of(queries, 4)
    assert shards.tolist() == shard_of(queries, 4).tolist(), "the same split in every step"
    assert set(shards.tolist()) == {0, 1, 2, 3}
    by_query = {}
    for q, s in zip(queries, shards):
        by_query.setdefault(q, set()).add(int(s))
    assert all(len(s) == 1 for s in by_query.values()), "a query's pairs stay together"
    assert (shard_of(queries, 1) == 0).all()
