"""Time the audit screens' paging on a trail of a million entries (run by hand).

    python benchmarks/audit_paging.py postgresql+psycopg://root@127.0.0.1:5432/scratch_bench
    python benchmarks/audit_paging.py sqlite:////tmp/bench.sqlite

The database must be empty (a scratch one: it is filled, not cleaned up). The entries are
chained as the application chains them, spread over three years, 2,000 batches, 30 users,
20 actions and 15 tables; then the first page, a middle page, filtered pages and the
chain check of verify-audit are timed (median of 5, in milliseconds).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, inspect, select

from config import TestingConfig
from lab import create_app
from lab.audit_chain import GENESIS, HEAD_ID, entry_hash
from lab.extensions import db
from lab.models import AuditChainHead, AuditEvent, Batch, User
from lab.services.audit_trail import TrailFilter, page
from lab.services.audit_verify import verify_chain

START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=3 * 365)
BATCHES, USERS = 2000, 30
ACTIONS = [f"{noun}.{verb}" for noun in ("step", "result", "batch", "deviation", "user")
           for verb in ("record", "correct", "verify", "close")]
TABLES = ["batches", "step_entries", "step_values", "signatures", "containers", "custody_events", "deviations",
          "qc_results", "dispositions", "patients", "users", "label_prints", "material_lots", "equipment",
          "downloads"]


def fill(total: int, chunk: int = 10_000) -> None:
    rng = random.Random(42)
    last_hash, step = GENESIS, SPAN / total
    for start in range(0, total, chunk):
        rows = []
        for entry_id in range(start + 1, min(start + chunk, total) + 1):
            row: dict[str, Any] = {
                "id": entry_id, "prev_hash": last_hash, "occurred_at": START + step * entry_id,
                "actor_id": rng.randint(1, USERS), "actor_username": f"user{rng.randint(1, USERS)}",
                "action": rng.choice(ACTIONS), "operation": rng.choice(("insert", "update")),
                "table_name": rng.choice(TABLES), "row_id": str(rng.randint(1, 100_000)), "field": "text",
                "old_value": "12.5", "new_value": '{"text": "13.0", "unit": "mL", "reason": "Typo on entry."}',
                "reason": None, "batch_id": min(BATCHES, entry_id * BATCHES // total + 1),
            }
            row["hash"] = last_hash = entry_hash(row)
            rows.append(row)
        db.session.execute(insert(AuditEvent), rows)
        db.session.commit()
        print(f"\r{min(start + chunk, total):,} entries", end="", flush=True)
    db.session.execute(insert(AuditChainHead).values(id=HEAD_ID, last_id=total, last_hash=last_hash))
    db.session.commit()
    print()


def timed(what: str, work: Callable[[], object], runs: int = 5) -> None:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        times.append((time.perf_counter() - began) * 1000)
        db.session.rollback()
    print(f"{what:<58} {statistics.median(times):9.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", help="an empty scratch database")
    parser.add_argument("--entries", type=int, default=1_000_000)
    options = parser.parse_args()

    class BenchConfig(TestingConfig):
        SQLALCHEMY_DATABASE_URI = options.database_url

    app = create_app(BenchConfig)
    with app.app_context():
        if inspect(db.engine).get_table_names():
            sys.exit("Refused: the database is not empty; give an empty scratch database.")
        db.create_all()
        began = time.perf_counter()
        fill(options.entries)
        print(f"filled in {time.perf_counter() - began:.0f} s on {db.engine.dialect.name}")
        if db.engine.dialect.name == "postgresql":
            db.session.execute(db.text("ANALYZE audit_events"))
            db.session.commit()
        middle = options.entries // 2
        batch = Batch(id=BATCHES // 2, batch_number="B-A9999-26-01000-X")  # transient: filters use its id
        user = User(id=7, username="user7")
        week = date(2025, 3, 3)
        timed("first page (50 newest)", lambda: page(TrailFilter()))
        timed(f"middle page (older than entry {middle:,})", lambda: page(TrailFilter(), before=middle))
        timed("last page", lambda: page(TrailFilter(), before=51))
        timed("one batch, first page", lambda: page(TrailFilter(batch=batch)))
        timed("one user, first page", lambda: page(TrailFilter(user=user)))
        timed("one user, middle page", lambda: page(TrailFilter(user=user), before=middle))
        timed("one action (step.correct), middle page",
              lambda: page(TrailFilter(action="step.correct"), before=middle))
        timed("one table (deviations), first page", lambda: page(TrailFilter(table="deviations")))
        timed("one week, first page", lambda: page(TrailFilter(date_from=week, date_to=week + timedelta(days=6))))
        timed("one week and one action, first page",
              lambda: page(TrailFilter(action="step.correct", date_from=week, date_to=week + timedelta(days=6))))
        timed("from a date on, middle page", lambda: page(TrailFilter(date_from=week), before=middle))
        timed("verify-audit chain walk (all entries)", verify_chain, runs=1)
        count = db.session.scalar(select(db.func.count()).select_from(AuditEvent))
        print(f"{count:,} entries")


if __name__ == "__main__":
    main()
