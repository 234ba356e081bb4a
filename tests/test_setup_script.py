"""`scripts/setup.sh` says what is missing before it makes anything (run in a copy of the
script and pyproject.toml, so the project's own .venv is never touched)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_in(tmp_path, python: str) -> subprocess.CompletedProcess:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": python})


def test_a_missing_python_is_named(tmp_path):
    res = setup_in(tmp_path, str(tmp_path / "no-python3"))
    assert res.returncode == 1 and "not found: install Python 3.10 or newer" in res.stderr
    assert not (tmp_path / ".venv").exists()


def test_a_python_without_venv_names_the_package(tmp_path):
    # A real interpreter whose `ensurepip` cannot be imported, as on Debian without python3.X-venv.
    runner = tmp_path / "without_ensurepip.py"
    runner.write_text("import sys\nsys.modules['ensurepip'] = None\nassert sys.argv[1] == '-c'\n"
                      "exec(compile(sys.argv[2], '-c', 'exec'))\n")
    shim = tmp_path / "python-without-venv"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} {runner} "$@"\n')
    shim.chmod(0o755)
    res = setup_in(tmp_path, str(shim))
    assert res.returncode == 1, res.stderr
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"install the package python{minor}-venv" in res.stderr, res.stderr
    assert not (tmp_path / ".venv").exists()
