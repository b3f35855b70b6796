"""Starting the local services of ``scripts/`` (postgres, mariadb, registry,
connect) from the tests, with one error when a script fails: its own words."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["REPO", "start_script"]

REPO = Path(__file__).resolve().parents[2]


def start_script(name: str, **env: str) -> str:
    """``scripts/<name> start`` with these environment variables added: the last line
    it printed (a URL or a port). Raises RuntimeError with the end of its stderr."""
    done = subprocess.run(
        [str(REPO / "scripts" / name), "start"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-2000:] or f"scripts/{name} start failed")
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""
