"""Real subprocesses for tests: SIGKILL a command at a known state, limit what it may write,
and read the one error line a command must end with."""

from __future__ import annotations

import os
import resource
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


def file_size_limit(limit_bytes: int):
    """A ``preexec_fn``: in the child, files cannot grow beyond ``limit_bytes`` (writes fail
    with EFBIG, "File too large"), which is how a full disk is simulated."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def _error_lines(code: int, output: str) -> str:
    assert code == 1, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    return errors[0]


def one_line_error(result: Any) -> str:
    """The error line of an in-process click run (``CliRunner().invoke``); asserts exit 1,
    exactly one ``Error:`` line and no traceback."""
    return _error_lines(result.exit_code, result.output)


def process_error(completed: subprocess.CompletedProcess) -> str:
    """The same for a real process: its one ``Error:`` line on stderr."""
    return _error_lines(completed.returncode, completed.stderr)


def only_line(completed: subprocess.CompletedProcess) -> str:
    """A real process that failed with exit 1 and wrote exactly one line on stderr: that line."""
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    return lines[0]
