import yaml

from serm.cli import main


def test_compiles_to_kfp_ir(tmp_path):
    out = tmp_path / "evolution.yaml"
    assert main(["pipeline", "compile", "--out", str(out)]) == 0
    ir = yaml.safe_load(out.read_text())
    assert ir["pipelineInfo"]["name"] == "serm-evolution"
    tasks = ir["root"]["dag"]["tasks"]
    assert set(tasks) == {"importer", "mine-op", "annotate-op", "check-op", "train-op", "evaluate-op", "promote-op"}
    assert tasks["mine-op"]["inputs"]["artifacts"]["batch"]["taskOutputArtifact"]["producerTask"] == "importer"
    assert tasks["train-op"]["dependentTasks"] == ["annotate-op", "check-op"] or \
        set(tasks["train-op"]["dependentTasks"]) == {"annotate-op", "check-op"}
    executors = ir["deploymentSpec"]["executors"].values()
    images = {e["container"]["image"] for e in executors if "container" in e}
    assert sum("importer" in e for e in executors) == 1   # the ingested batch enters as an artifact
    assert images == {"serm:0.1.0"}
    assert set(ir["root"]["inputDefinitions"]["parameters"]) == {"workspace", "round_no", "policy_path", "batch"}
