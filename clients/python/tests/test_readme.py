"""The READMEs' Python examples, run verbatim against the real server: the ``python`` block of
the repository README's "Python" section, and the package README's quickstart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

from .conftest import REPO_ROOT, NewTenant, Server


def python_blocks(readme: Path, heading: str) -> List[str]:
    """The ```python blocks of the section under ``heading`` (up to the next ``## ``)."""
    text = readme.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    blocks: List[str] = []
    current: Optional[List[str]] = None
    for line in section.splitlines():
        if current is None and line.strip() == "```python":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line)
    return blocks


@pytest.mark.parametrize(
    "readme, heading, expect",
    [
        (REPO_ROOT / "README.md", "## Python", "Alice takes oat milk in her coffee"),
        (REPO_ROOT / "clients/python/README.md", "## Quickstart", "Ticket 42"),
    ],
    ids=["repository-readme", "package-readme"],
)
def test_readme_python_runs_verbatim(
    server: Server, new_tenant: NewTenant, readme: Path, heading: str, expect: str
) -> None:
    [block] = python_blocks(readme, heading)
    tenant = new_tenant(permissions=["read", "write"])
    env = dict(os.environ, STRATA_URL=server.url, STRATA_API_KEY=tenant.key)
    done = subprocess.run(
        [sys.executable, "-c", block], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert expect in done.stdout
