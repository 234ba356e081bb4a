import subprocess
import sys


def test_help_imports_nothing_heavy():
    code = ("import sys, serm.cli\n"
            "try:\n    serm.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'feast', 'evidently', 'great_expectations', 'kfp', 'dvc',"
            " 'pandas') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "evolve" in out and "rollback" in out


def test_version_is_the_installed_package_version():
    from importlib.metadata import version

    res = subprocess.run([sys.executable, "-m", "serm.cli", "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == f"serm {version('serm')}" and version("serm") != ""


def test_serm_errors_print_without_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "serm.cli", "policy", "validate", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "file not found" in res.stderr and "Traceback" not in res.stderr


def test_policy_schema_validates_the_shipped_policies(tmp_path, capsys):
    """`serm policy schema` is a JSON Schema that accepts every shipped policy and refuses a
    misspelt field where the loader does (what an editor's YAML language server checks)."""
    import json
    from pathlib import Path

    import jsonschema
    import yaml

    from serm.cli import main

    assert main(["policy", "schema", "--out", str(tmp_path / "s.json")]) == 0
    schema = json.loads((tmp_path / "s.json").read_text())
    assert schema["title"] == "SERM evolution policy" and "versioning" in schema["properties"]
    root = Path(__file__).parents[2]
    policies = [*root.glob("policies/*.yaml"), root / "tests" / "policies" / "tiny.yaml"]
    for path in policies:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    bad = yaml.safe_load((root / "tests" / "policies" / "tiny.yaml").read_text())
    bad["training"]["epoch"] = 2
    try:
        jsonschema.validate(bad, schema)
        raise AssertionError("a misspelt field passed the schema")
    except jsonschema.ValidationError as exc:
        assert "epoch" in exc.message


def test_policy_show_resolved_fills_in_defaults(capsys):
    import json
    from pathlib import Path

    from serm.cli import main
    from serm.policy import load_policy

    tiny = Path(__file__).parents[2] / "tests" / "policies" / "tiny.yaml"
    assert main(["policy", "show", str(tiny), "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert main(["policy", "show", str(tiny), "--resolved", "--json"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert given["training"] == {"epochs": 1, "seed_epochs": 1, "batch_size": 16, "replay_ratio": 1.0}
    assert resolved == load_policy(tiny).model_dump(mode="json")
    assert resolved["training"]["lr"] == load_policy(tiny).training.lr and "lr" not in given["training"]
    assert main(["policy", "show", str(tiny)]) == 0
    assert capsys.readouterr().out.startswith("# policy 'tiny' (")
