"""Worker processes for ``verify-audit``: independent parts of the check run in forked
processes, each on its own database connection, and come back in the order they were given,
so that merging them gives what one process checking them in turn gives.

A worker never uses a connection it inherited: the parent's stay open in the parent (psycopg
does not close a connection from a child process, and the worker exits without collecting
them). An in-memory SQLite database exists only in its process: it is checked in one.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from multiprocessing.pool import Pool
from multiprocessing.util import Finalize
from typing import TypeVar

from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from lab.extensions import db
from lab.services.worker_exit import exit_with_parent

Task = TypeVar("Task")
Result = TypeVar("Result")

#: The worker's own connection (set in each worker process when it starts).
_connection: Connection | None = None


def usable_jobs(jobs: int) -> int:
    """``jobs``, or 1 when workers could not see the database (SQLite in memory)."""
    url = db.engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return 1
    return max(1, jobs)


def run(work: Callable[[Connection, Task], Result], tasks: Sequence[Task], jobs: int) -> Iterator[Result]:
    """``work(connection, task)`` for each task, in task order: in this process on the session's
    connection when ``jobs`` is 1, otherwise spread over ``jobs`` worker processes, which start
    at once (the caller may do other work before it reads the results; it must read them all)."""
    if usable_jobs(jobs) == 1 or len(tasks) < 2:
        connection = db.session.connection()
        return (_without_gc(work, connection, task) for task in tasks)
    url = db.engine.url.render_as_string(hide_password=False)
    pool = multiprocessing.get_context("fork").Pool(min(jobs, len(tasks)), _connect, (url,))
    return _results(pool, pool.imap(partial(_in_worker, work), tasks))


def _results(pool: Pool, results: Iterator[Result]) -> Iterator[Result]:
    """The results; then the workers end, closing their connections (killed if the reader stops)."""
    try:
        yield from results
    except BaseException:
        pool.terminate()
        raise
    pool.close()
    pool.join()


def _connect(url: str) -> None:
    global _connection
    exit_with_parent()
    _connection = create_engine(url, poolclass=NullPool).connect()
    Finalize(_connection, _connection.close, exitpriority=0)  # when the worker ends (not when it is killed)


def _in_worker(work: Callable[[Connection, Task], Result], task: Task) -> Result:
    assert _connection is not None  # set when the worker started
    return _without_gc(work, _connection, task)


def _without_gc(work: Callable[[Connection, Task], Result], connection: Connection, task: Task) -> Result:
    """``work(connection, task)`` with the cyclic garbage collector off: a task makes millions of
    short-lived objects, freed as it goes, which set off collections that find nothing (13 % of
    the time); whatever cycles it leaves are collected after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return work(connection, task)
    finally:
        if enabled:
            gc.enable()
