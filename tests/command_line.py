"""Run ``python -m masklrp`` in a subprocess, the way a user types it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_masklrp(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m masklrp *args`` in ``cwd`` with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "masklrp", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)
