import yaml

from serm.cli import main


def test_compiles_to_kfp_ir(tmp_path):
    out = tmp_path / "evolution.yaml"
    assert main(["pipeline", "compile", "--out", str(out)]) == 0
    ir = yaml.safe_load(out.read_text())
    assert ir["pipelineInfo"]["name"] == "serm-evolution"
    tasks = ir["root"]["dag"]["tasks"]
    assert set(tasks) == {"mine-op", "annotate-op", "check-op", "train-op", "evaluate-op", "promote-op"}
    assert tasks["train-op"]["dependentTasks"] == ["annotate-op", "check-op"] or \
        set(tasks["train-op"]["dependentTasks"]) == {"annotate-op", "check-op"}
    images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert images == {"serm:0.1.0"}
    assert set(ir["root"]["inputDefinitions"]["parameters"]) == {"workspace", "round_no", "policy_path", "batch"}
