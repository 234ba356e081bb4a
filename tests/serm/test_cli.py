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
