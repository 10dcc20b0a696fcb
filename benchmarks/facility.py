"""Time CellTrail's pages on a facility-scale database, side by side with a bare Flask request.

    python benchmarks/facility_data.py sqlite:////tmp/facility.sqlite      # once: 10,000 batches
    python benchmarks/facility.py sqlite:////tmp/facility.sqlite

Both apps run under gunicorn with the same settings (2 sync workers) on the same database. Each
round asks every page once or more and, right after each request, the bare app once (one indexed
``session.get`` and a small template: ``benchmarks/bare_app.py``), so both see the same machine
load; the table gives each page's median, the bare request's median and their ratio. The
executed record is timed against reportlab drawing as many pages of plain tables in-process
right after each download (the floor), and a 100-label sheet is rendered in-process. Then the
whole ``verify-audit``, and, each on a scratch copy of the database (both write to it),
``benchmarks/export.py`` (export-records of the busiest month: seconds a batch, peak memory) and
``benchmarks/audit_write.py`` (an audited write against the same write with the audit listeners
detached). Nothing here is asserted: the README keeps the table (machines differ; the ratios hold).
``benchmarks/run`` does all of it, from building the database, in one command.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from io import BytesIO
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reportlab.lib.pagesizes import A4
from reportlab.platypus import PageBreak, SimpleDocTemplate, Table
from sqlalchemy import create_engine, func, make_url, select, text

from lab import create_app
from lab.extensions import db
from lab.models import Batch, Container, StepValue
from lab.models.batches import StepEntry
from lab.services.labels import label_data
from labels.pdf import render_label_sheet

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "celltrail-demo"
ROLES = ("tech1", "supervisor1", "qc1", "qa1", "auditor1", "admin", "nurse1")
SECRET = "benchmark-only-secret-key-000000"
RECORD = "executed batch record (PDF)"


@dataclass
class Timings:
    page: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)

    def row(self, name: str) -> str:
        page, bare = statistics.median(self.page), statistics.median(self.bare)
        return f"| {name} | {page:.1f} ms | {bare:.1f} ms | {page / bare:.1f}x |"


class Client:
    """One person's browser: a cookie, and requests timed from sending to the last byte."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def request(self, method: str, path: str, body: str = "") -> tuple[int, bytes, float, dict[str, str]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        began = time.perf_counter()
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        data = response.read()
        elapsed = (time.perf_counter() - began) * 1000
        answer = {k.lower(): v for k, v in response.getheaders()}
        connection.close()
        if "set-cookie" in answer:
            self.cookie = answer["set-cookie"].split(";", 1)[0]
        return response.status, data, elapsed, answer

    def sign_in(self, username: str) -> None:
        _, page, _, _ = self.request("GET", "/login")
        token = re.search(rb'name="csrf_token"[^>]*value="([^"]+)"', page)
        assert token is not None, "no CSRF token on the sign-in page"
        status, _, _, _ = self.request("POST", "/login", urlencode(
            {"csrf_token": token.group(1).decode(), "username": username, "password": PASSWORD}))
        assert status == 302, f"{username} could not sign in ({status})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(app: str, url: str, workers: int):  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": SECRET, "LAB_SESSION_COOKIE_SECURE": "false",
           "PYTHONPATH": str(ROOT),
           "PYTHONFAULTHANDLER": "1"}  # a worker that crashes in C code prints where (seen once: SIGSEGV)
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind",
                               f"127.0.0.1:{port}", "--log-level", "warning", app], cwd=ROOT, env=env)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait()


@dataclass(frozen=True)
class Subjects:
    open_batch: str
    open_batch_id: int
    counts: int
    early_batch: str  # an open batch with the fewest daily counts
    early_counts: int
    closed_batch: str
    container: str
    batches: int


def subjects() -> Subjects:
    """The open batches with the most and the fewest daily counts, a shipped batch, and a container
    of the first."""
    counted = (select(StepEntry.batch_id, func.count(StepValue.id).label("n")).join(StepValue)
               .where(StepEntry.step_key == "expansion").group_by(StepEntry.batch_id).subquery())
    in_process = select(Batch, counted.c.n).join(counted, counted.c.batch_id == Batch.id).where(
        Batch.state == "in_process")
    open_batch = db.session.execute(in_process.order_by(counted.c.n.desc(), Batch.id).limit(1)).one()
    early = db.session.execute(in_process.order_by(counted.c.n, Batch.id).limit(1)).one()
    closed = db.session.scalars(select(Batch).where(Batch.state == "shipped").order_by(Batch.id).limit(1)).one()
    container = db.session.scalars(select(Container).where(Container.batch_id == open_batch[0].id)
                                   .order_by(Container.id.desc()).limit(1)).one()
    total = db.session.scalar(select(func.count(Batch.id))) or 0
    return Subjects(open_batch[0].batch_number, open_batch[0].id, open_batch[1], early[0].batch_number, early[1],
                    closed.batch_number, container.code, total)


def floor_pdf(pages: int) -> bytes:
    """reportlab alone: ``pages`` pages of plain 40-row tables."""
    buffer = BytesIO()
    story = []
    for page in range(pages):
        story += [Table([[f"row {page}.{i}", "value", "unit", "limit", "by", "at"] for i in range(40)]), PageBreak()]
    SimpleDocTemplate(buffer, pagesize=A4).build(story)
    return buffer.getvalue()


def timed(work, runs: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", help="a database made by benchmarks/facility_data.py")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warm-up", type=int, default=3,
                        help="rounds not counted: each request goes to either worker, and each worker keeps its own "
                             "caches and makes its own first-time garbage (one round leaves a worker cold)")
    parser.add_argument("--pages-only", action="store_true",
                        help="time the pages, the record and the labels; skip verify-audit, the export and the writes")
    options = parser.parse_args()
    os.environ.update(DATABASE_URL=options.database_url, SECRET_KEY=SECRET)
    app = create_app()
    with app.app_context():
        subject = subjects()
        containers = list(db.session.scalars(select(Container).where(Container.batch_id == subject.open_batch_id)))
        now = datetime.now(UTC)
        labels = [label_data(c, reprint=False, now=now) for c in containers]
        hundred = (labels * (100 // len(labels) + 1))[:100]
        label_ms = timed(lambda: render_label_sheet(hundred), options.rounds)
        db.session.rollback()
        dialect = db.engine.dialect.name
        db.engine.dispose()  # no connection left open: a PostgreSQL database is copied from it below
    print(f"{subject.batches:,} batches on {dialect}; open batch {subject.open_batch} "
          f"({subject.counts} expansion values), shipped batch {subject.closed_batch}\n")
    pages = {
        f"batch page ({subject.counts} expansion values)": ("tech1", f"/batches/{subject.open_batch}"),
        f"batch page ({subject.early_counts} expansion values)": ("tech1", f"/batches/{subject.early_batch}"),
        **{f"dashboard ({user})": (user, "/") for user in ROLES},
        "scan of a batch code (redirect)": ("tech1", f"/scan?code={subject.open_batch}"),
        "scan of a container code (redirect)": ("tech1", f"/scan?code={subject.container}"),
        "audit screen": ("qa1", "/audit"),
        "batch list": ("qa1", "/batches"),
        RECORD: ("qa1", f"/batches/{subject.closed_batch}/record.pdf"),
    }
    results = {name: Timings() for name in pages}
    record_pages, floors = 0, []
    with served("lab:create_app()", options.database_url, options.workers) as port, \
            served("benchmarks.bare_app:create_app()", options.database_url, options.workers) as bare_port:
        clients = {user: Client(port) for user in ROLES}
        for user, client in clients.items():
            client.sign_in(user)
        bare = Client(bare_port)
        for _ in range(options.warm_up + options.rounds):  # the first rounds warm both apps up, not counted
            for name, (user, path) in pages.items():
                status, body, elapsed, _ = clients[user].request("GET", path)
                assert status in (200, 302), f"{name}: {status}"
                record_pages = body.count(b"/Type /Page\n") or body.count(b"/Type /Page ") or record_pages
                _, _, floor, _ = bare.request("GET", f"/bare/{subject.open_batch_id}")
                results[name].page.append(elapsed)
                results[name].bare.append(floor)
                if name == RECORD:  # reportlab's floor for as many pages, right after, under the same load
                    floors.append(timed(partial(floor_pdf, record_pages or 18), 1))
        for timing in results.values():
            del timing.page[:options.warm_up], timing.bare[:options.warm_up]
        del floors[:options.warm_up]
    print("| request | p50 | bare Flask p50 | ratio |\n|---|---|---|---|")
    for name, timing in results.items():
        print(timing.row(name))
    record, floor = statistics.median(results[RECORD].page), statistics.median(floors)
    print(f"\nexecuted batch record: {record_pages} pages, {record:.0f} ms; reportlab alone, the same pages of "
          f"plain tables: {floor:.0f} ms ({record / floor:.1f}x)")
    print(f"100-label sheet, rendered: {label_ms:.0f} ms")
    if options.pages_only:
        return
    began = time.perf_counter()
    verified = subprocess.run([sys.executable, "-m", "flask", "--app", "lab", "verify-audit"], cwd=ROOT, check=False,
                              env={**os.environ, "FLASK_DEBUG": "1"}, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    print(f"verify-audit, whole command: {seconds:.1f} s; {verify_rate(verified.stdout, seconds)}")
    failed = []
    for script in ("export.py", "audit_write.py"):  # both write: each on its own copy
        with copy_of(options.database_url) as copy:
            run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), copy], cwd=ROOT, check=False)
            if run.returncode:
                failed.append(script)  # it said why; the next measurement still runs
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


def verify_rate(output: str, seconds: float) -> str:
    """verify-audit's time per million entries (the targets are for a million entries and their
    signatures; the check is linear in both, and this database has more), or why there is none."""
    found = re.search(r"Audit trail: (\d+) entries", output)
    if found is None:
        return f"no count of entries in its output: {output.strip()[-300:]}"
    entries = int(found[1])
    return f"{entries:,} entries, {seconds / entries * 1e6:.1f} s per million"


@contextmanager
def copy_of(url: str):  # type: ignore[no-untyped-def]
    """A scratch copy of the database at ``url`` (a file copy, or a PostgreSQL database made from
    it as a template), removed afterwards."""
    if url.startswith("sqlite:///"):
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / "copy.sqlite"
            shutil.copyfile(url.removeprefix("sqlite:///"), copy)
            yield f"sqlite:///{copy}"
        return
    source = make_url(url)
    name = f"{source.database}_copy"
    server = create_engine(source.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{source.database}"'))
    try:
        yield source.set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}"'))
        server.dispose()


if __name__ == "__main__":
    main()
