"""Scenarios that mount a file system of their own (a small tmpfs, an XFS image), each run as
`unshare --mount python -m MODULE WORKDIR` so the mount is in its own mount namespace only and
goes with it; the scenario prints one JSON object as its last line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_scenario(module: str, workdir: Path, timeout: float = 300) -> dict:
    p = subprocess.run(["unshare", "--mount", sys.executable, "-m", module, str(workdir)],
                       capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])
