"""The client's own lint and strict typing, so that `py.typed` keeps its promise: ruff's rules
and `mypy --strict` over the package, as configured in pyproject.toml. Runs the tools from this
virtualenv; no server is needed."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_ruff_finds_nothing() -> None:
    run("ruff", "check", "--no-cache", ".")


def test_the_package_type_checks_strictly() -> None:
    run("mypy", "--no-incremental", "--cache-dir", "/dev/null", "src")
