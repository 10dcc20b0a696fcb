"""Rendering many executed batch records, in order, on several processes (``export-records``).

Drawing a record is pure (labels: data in, PDF bytes out) and takes most of an export, so an
export hands each record's data to a pool of worker processes while it reads the next batch,
and takes the PDFs back in the order the batches were added. At most ``2 * jobs`` records are
in flight, so memory does not grow with the number of batches. With one job, each record is
drawn in this process when it is submitted.

While the pool runs, this process has helper threads (feeding tasks to the workers, reading
their results), and on CPython 3.11 a cyclic garbage collection that starts on one of them can
read a frame the main thread is in the middle of running from a stack position not yet saved,
and free objects still in use (CPython issues gh-101975, gh-111629): export-records died of a
segmentation fault this way in the main thread's ORM loading, in 3 of 9 runs started as the
facility benchmark starts it (none of 29 started directly). So while the pool runs, automatic collections are off, and the exporting
thread collects (:meth:`RecordRenderer.collect`) between batches, where none of its own code is
half evaluated.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from lab.services.worker_exit import exit_with_parent
from labels.record import render_record
from labels.record_data import BatchRecordData, Issue
from labels.text import UnprintableText


@dataclass(frozen=True)
class Rendering:
    """What an export keeps of a record while it is drawn: everything but the PDF."""

    batch_number: str
    digest: str
    canonical: bytes


@dataclass(frozen=True)
class Rendered(Rendering):
    pdf: bytes


class UnprintableRecord(Exception):
    """The record of ``batch_number`` cannot be printed, for ``reason``."""

    def __init__(self, batch_number: str, reason: str) -> None:
        super().__init__(batch_number, reason)
        self.batch_number, self.reason = batch_number, reason


class RecordRenderer:
    """Records drawn on ``jobs`` processes, given back in the order submitted."""

    def __init__(self, jobs: int) -> None:
        self.jobs = max(1, jobs)
        self._pool: ProcessPoolExecutor | None = None
        self._waiting: deque[tuple[Rendering, Future[bytes]]] = deque()
        self._collecting = False  # whether automatic collections were on before the pool started

    def submit(self, rendering: Rendering, record: BatchRecordData, issue: Issue) -> None:
        future: Future[bytes]
        if self.jobs == 1:
            future = Future()
            try:
                future.set_result(render_record(record, issue, rendering.digest))
            except UnprintableText as error:
                future.set_exception(error)
        else:
            if self._pool is None:
                self._collecting = gc.isenabled()
                gc.disable()  # from now on collections only in collect(), see the module's docstring
                # Spawned, not forked: a worker starts clean, without this process's database connections.
                self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=exit_with_parent)
            future = self._pool.submit(render_record, record, issue, rendering.digest)
        self._waiting.append((rendering, future))

    def ready(self) -> Iterator[Rendered]:
        """The records drawn so far, in order; waits for the oldest while too many are in flight."""
        while self._waiting and (self._waiting[0][1].done() or len(self._waiting) > 2 * self.jobs):
            yield self._take()

    def drain(self) -> Iterator[Rendered]:
        """Every record still in flight, in order."""
        while self._waiting:
            yield self._take()

    def collect(self) -> None:
        """Collect garbage cycles, on the calling thread, while the pool runs (call it between records)."""
        if self._pool is not None:
            gc.collect()

    def close(self) -> None:
        """Stop the workers (records still in flight are dropped)."""
        self._waiting.clear()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
            if self._collecting:
                gc.enable()

    def _take(self) -> Rendered:
        rendering, future = self._waiting.popleft()
        try:
            pdf = future.result()
        except UnprintableText as error:
            raise UnprintableRecord(rendering.batch_number, str(error)) from None
        return Rendered(rendering.batch_number, rendering.digest, rendering.canonical, pdf)
