"""Worker processes that end when the process that started them ends.

A pool's worker waits for its next task on a pipe whose writing end it holds itself, so it
never reads the end of that pipe: if the command that started it dies (killed, or crashed),
the worker would wait for ever, holding its share of memory and the terminal's output (a
script reading that output would wait for ever too). Each worker therefore watches its parent
and exits as soon as the parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import wait

#: The status a worker exits with when its parent is gone.
ORPHANED = 70


def exit_with_parent() -> None:
    """In a worker process (a pool's initializer): exit as soon as the parent process ends."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel  # readable once the parent has exited

    def watch() -> None:
        wait([sentinel])
        os._exit(ORPHANED)  # nothing of the task in hand is worth keeping: its reader is gone

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
