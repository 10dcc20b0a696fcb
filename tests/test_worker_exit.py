"""Worker processes end with the command that started them: killing (or a crash of) an
export or a verify-audit run leaves no worker behind holding memory or the terminal's output."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RENDERER = """
    import os, signal
    from lab.services.record_rendering import RecordRenderer, Rendering
    renderer = RecordRenderer(2)
    for n in range(2):  # a record that cannot be drawn still starts a worker, which then waits for the next
        renderer.submit(Rendering(f"B{n}", "0" * 64, b"{}"), None, None)
    for _, future in renderer._waiting:
        future.exception()
    print(*renderer._pool._processes, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""

VERIFY_POOL = """
    import os, signal, time
    from config import TestingConfig
    from lab import create_app
    from lab.services import verify_workers

    class OnFile(TestingConfig):
        SQLALCHEMY_DATABASE_URI = "sqlite:///{database}"

    def pid_then_wait(connection, task):
        if task:
            time.sleep(600)  # a long part of the check, under way when the command dies
        return os.getpid()

    with create_app(OnFile).app_context():
        results = verify_workers.run(pid_then_wait, [0, 1, 1], 2)
        first = next(results)
        time.sleep(0.5)
        print(*(child.pid for child in __import__("multiprocessing").active_children()), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _orphans(script: str, output: Path) -> list[int]:
    """Run ``script`` (which prints its workers' pids, then kills itself); the pids still running 10 s later.
    Its output goes to a file: a pipe would stay open, and the reader wait, as long as any worker lives."""
    with output.open("w+") as out:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, stdout=out,
                              stderr=subprocess.STDOUT, timeout=120, check=False)
    printed = output.read_text()
    assert done.returncode == -9, printed
    workers = [int(pid) for pid in printed.splitlines()[0].split()]  # then a warning of the resource tracker
    assert len(workers) == 2, printed
    deadline = time.monotonic() + 10
    while (running := [pid for pid in workers if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in running:  # do not leave them behind this test either
        os.kill(pid, 9)
    return running


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited; only its exit status waits to be read


def test_record_rendering_workers_end_when_the_export_dies(tmp_path: Path) -> None:
    assert _orphans(RENDERER, tmp_path / "output") == []


def test_verify_audit_workers_end_when_the_command_dies(tmp_path: Path) -> None:
    assert _orphans(VERIFY_POOL.replace("{database}", str(tmp_path / "lab.sqlite")), tmp_path / "output") == []
