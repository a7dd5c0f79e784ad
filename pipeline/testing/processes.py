"""Real subprocesses for kill tests: start a command, SIGKILL it at a known state."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def kill_once_workers_run(cmd: list[str], cwd: Path, workers: int) -> list[Any]:
    """Start ``cmd``, SIGKILL it once ``workers`` pool processes of it are running, and
    return them (psutil processes). Shared by the selectivity and listening-page tests."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        children: list = []
        while time.monotonic() < deadline and proc.poll() is None:
            children = [c for c in parent.children(recursive=True) if c.is_running()]
            if len(children) >= workers:
                break
            time.sleep(0.01)
        if len(children) < workers:
            proc.kill()
            raise AssertionError(f"no {workers} workers came up: {proc.communicate()[1]!r}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the command ended before it was killed"
    return children
