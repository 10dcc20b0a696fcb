"""Build a facility-scale database for the benchmarks: the demo lab, cloned.

    python benchmarks/facility_data.py sqlite:////tmp/facility.sqlite
    python benchmarks/facility_data.py postgresql+psycopg://root@127.0.0.1:5432/facility

The database must be empty (a scratch one). ``flask init-db`` and ``flask seed-demo`` make the
demo lab through the application's services (ten batches at every stage: scheduled to infused,
with their steps, counts, containers, custody, results, signatures, shipments). Its batches are
then copied, row for row, until there are ``--batches`` of them: every copy of the closed
ones (released or shipped), and enough copies of the open ones for about ``--open`` batches in
process, as a facility that has run for years has. Each copy gets its own ids, codes (valid
batch numbers, COIs and container codes, with their check characters), deviation and shipment
numbers, and times shifted into the past. Each copied signature is over its copied record, and
each copied row has its insert entry in the audit trail, chained after the demo's: the database
passes ``verify-audit``. 10,000 batches make 1,575,383 entries and 266,827 signatures; 6,400
batches make just over a million entries, the size issue 17 sets ``verify-audit``'s target for:

    python benchmarks/facility_data.py sqlite:////tmp/million.sqlite --batches 6400
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import current_app
from sqlalchemy import Table, func, insert, inspect, select, text, update

from lab import create_app
from lab.audit import REDACTED, as_text
from lab.audit_chain import HEAD_ID, entry_hash
from lab.extensions import UTCDateTime, db
from lab.models import AuditChainHead, Audited, AuditEvent
from lab.services.signatures import RECORD_TYPES, digest
from workflows.codes import CodeKind, make_code

ROOT = Path(__file__).resolve().parents[1]
#: The tables a batch's record lives in, copied with their batches (parents before children).
COPIED = ("patients", "weight_corrections", "batches", "step_entries", "step_values", "containers", "custody_events",
          "label_prints", "qc_results", "dispositions", "deviations", "lot_consumptions", "signatures",
          "shipments", "shipment_bags", "shipment_receipts", "shipment_decisions", "bedside_checks",
          "administrations", "bag_disposals", "site_notices")
#: Signatures name what they sign by type and id (no foreign key): the table of each type.
SIGNED_TABLES = {"step_entry": "step_entries", "qc_result": "qc_results", "disposition": "dispositions",
                 "deviation": "deviations", "shipment": "shipments", "shipment_receipt": "shipment_receipts",
                 "bedside_check": "bedside_checks", "administration": "administrations"}
CLOSED_STATES = ("released", "shipped", "rejected")
#: The copies' codes are numbered in this year, apart from the demo's (the current year).
COPY_YEAR = 20
#: Each copy's times are this much earlier than the one before.
SHIFT = timedelta(hours=6)
COPY_REASON = "Benchmark data: a copy of a demo batch"


def run_cli(url: str, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "benchmark-only-secret-key", "FLASK_DEBUG": "1"}
    subprocess.run([sys.executable, "-m", "flask", "--app", "lab", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


class Copier:
    """Copies batches with every row of their records, renumbered."""

    def __init__(self, fin: str) -> None:
        self.fin = fin
        self.tables: dict[str, Table] = {name: db.metadata.tables[name] for name in COPIED}
        self.span = {name: (db.session.scalar(select(func.max(t.c.id))) or 0) + 1 for name, t in self.tables.items()}
        self.counters: dict[str, int] = defaultdict(int)
        self.source: dict[str, list[dict[str, Any]]] = {}

    def load(self, batch_ids: list[int]) -> None:
        """Read the rows of ``batch_ids``' records once (the demo is small)."""
        t = self.tables
        batches = self._rows(select(t["batches"]).where(t["batches"].c.id.in_(batch_ids)))
        patient_ids = {b["patient_id"] for b in batches}
        self.source = {"batches": batches,
                       "patients": self._rows(select(t["patients"]).where(t["patients"].c.id.in_(patient_ids))),
                       "weight_corrections": self._rows(select(t["weight_corrections"])
                                                        .where(t["weight_corrections"].c.patient_id.in_(patient_ids)))}
        entry_ids: list[int] = []
        for name in COPIED:
            if name in self.source:
                continue
            table = t[name]
            if name == "step_values":
                query = select(table).where(table.c.entry_id.in_(entry_ids))
            else:
                query = select(table).where(table.c.batch_id.in_(batch_ids))
            self.source[name] = self._rows(query.order_by(table.c.id))
            if name == "step_entries":
                entry_ids = [row["id"] for row in self.source[name]]

    @staticmethod
    def _rows(query: Any) -> list[dict[str, Any]]:
        return [dict(row._mapping) for row in db.session.execute(query)]

    def copy(self, k: int, batch_ids: set[int]) -> dict[str, list[dict[str, Any]]]:
        """The rows of copy number ``k`` (1, 2, ...) of ``batch_ids``' records."""
        codes: dict[str, str] = {}
        patients = {b["patient_id"] for b in self.source["batches"] if b["id"] in batch_ids}
        for patient in self.source["patients"]:
            if patient["id"] in patients:
                codes[patient["coi"]] = str(make_code(CodeKind.COI, self.fin, COPY_YEAR, self._next("coi")))
                codes[patient["patient_ref"]] = f"FAC-{self.counters['coi']:06d}"
        for batch in self.source["batches"]:
            if batch["id"] in batch_ids:
                codes[batch["batch_number"]] = str(make_code(CodeKind.BATCH, self.fin, COPY_YEAR, self._next("batch")))
        for container in self.source["containers"]:
            if container["batch_id"] in batch_ids:
                codes[container["code"]] = str(make_code(CodeKind.CONTAINER, self.fin, COPY_YEAR,
                                                         self._next("container")))
        for deviation in self.source["deviations"]:
            if deviation["batch_id"] in batch_ids:
                codes[deviation["number"]] = f"DEV-F{self._next('deviation'):07d}"
        for shipment in self.source["shipments"]:
            if shipment["batch_id"] in batch_ids:
                codes[shipment["number"]] = f"SHP-F{self._next('shipment'):07d}"
        shift = SHIFT * k
        out: dict[str, list[dict[str, Any]]] = {}
        for name in COPIED:
            table = self.tables[name]
            rows = [row for row in self.source[name] if self._belongs(name, row, batch_ids, patients)]
            out[name] = [self._renumbered(table, name, row, k, codes, shift) for row in rows]
        return out

    def _next(self, what: str) -> int:
        self.counters[what] += 1
        return self.counters[what]

    def _belongs(self, name: str, row: dict[str, Any], batch_ids: set[int], patients: set[int]) -> bool:
        if name == "patients":
            return row["id"] in patients
        if name == "weight_corrections":
            return row["patient_id"] in patients
        if name == "batches":
            return row["id"] in batch_ids
        if name == "step_values":
            return row["entry_id"] in self._entry_ids(batch_ids)
        return row["batch_id"] in batch_ids

    def _entry_ids(self, batch_ids: set[int]) -> set[int]:
        key = frozenset(batch_ids)
        cache = self.__dict__.setdefault("_entries", {})
        if key not in cache:
            cache[key] = {e["id"] for e in self.source["step_entries"] if e["batch_id"] in batch_ids}
        return cache[key]

    def _renumbered(self, table: Table, name: str, row: dict[str, Any], k: int, codes: dict[str, str],
                    shift: timedelta) -> dict[str, Any]:
        new = dict(row)
        new["id"] = row["id"] + k * self.span[name]
        for fk in table.foreign_keys:
            target = fk.column.table.name
            value = row[fk.parent.name]
            if value is not None and target in self.span:
                new[fk.parent.name] = value + k * self.span[target]
        if name == "signatures" and row["record_type"] in SIGNED_TABLES:
            new["record_id"] = row["record_id"] + k * self.span[SIGNED_TABLES[row["record_type"]]]
        for column in table.columns:
            value = new[column.name]
            if isinstance(value, str) and value in codes:
                new[column.name] = codes[value]
            elif isinstance(column.type, UTCDateTime) and value is not None:
                new[column.name] = value - shift
        return new


def copy_batches(total: int, open_wanted: int, chunk: int = 25) -> None:
    """Copy the demo's batches until there are ``total``, about ``open_wanted`` of them open;
    each chunk of copies is inserted with its signatures' hashes and its audit entries."""
    table = db.metadata.tables["batches"]
    batches = db.session.execute(select(table.c.id, table.c.state).order_by(table.c.id)).all()
    closed = {b.id for b in batches if b.state in CLOSED_STATES}
    every = {b.id for b in batches}
    copier = Copier(str(current_app.config["FACILITY_ID"]))
    copier.load(sorted(every))
    trail = Trail()
    have, k, opened = len(every), 0, len(every - closed)
    pending: dict[str, list[dict[str, Any]]] = defaultdict(list)
    while have < total:
        k += 1
        chosen = every if opened + len(every - closed) <= open_wanted else closed
        chosen = set(sorted(chosen)[:total - have]) if have + len(chosen) > total else chosen
        opened += len(chosen - closed)
        for name, rows in copier.copy(k, chosen).items():
            pending[name].extend(rows)
        have += len(chosen)
        if k % chunk == 0 or have >= total:
            _insert(copier, pending, trail)
            pending = defaultdict(list)
            print(f"\r{have:,} batches, {trail.last_id:,} audit entries", end="", flush=True)
    print()
    if db.engine.dialect.name == "postgresql":  # ids were given: move each table's sequence past them
        for name in COPIED:
            db.session.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                    f"(SELECT coalesce(max(id), 1) FROM {name}))"))
        db.session.commit()


def _insert(copier: Copier, pending: dict[str, list[dict[str, Any]]], trail: Trail) -> None:
    """Insert one chunk of copies: the rows, then the signatures with the hashes of the copied
    records they sign, then an audit entry per inserted row (as the application writes them)."""
    for name in COPIED:
        if name != "signatures" and pending[name]:
            db.session.execute(insert(copier.tables[name]), pending[name])
    _sign_copies(pending["signatures"])
    if pending["signatures"]:
        db.session.execute(insert(copier.tables["signatures"]), pending["signatures"])
    entry_batch = {e["id"]: e["batch_id"] for e in pending["step_entries"]}
    trail.append([(name, row, row["id"] if name == "batches" else
                   entry_batch.get(row["entry_id"]) if name == "step_values" else row.get("batch_id"))
                  for name in COPIED for row in pending[name]])
    db.session.commit()
    db.session.expunge_all()


def _sign_copies(signatures: list[dict[str, Any]]) -> None:
    """Each copied signature's hash, over the copied record it signs (as ``sign`` made it)."""
    models = {name: model for model, name in RECORD_TYPES.items()}
    wanted: dict[str, set[int]] = defaultdict(set)
    for signature in signatures:
        wanted[signature["record_type"]].add(signature["record_id"])
    records = {}
    for record_type, ids in wanted.items():
        model = models[record_type]
        for record in db.session.scalars(select(model).where(model.id.in_(ids))):
            records[record_type, record.id] = record
    for signature in signatures:
        record = records[signature["record_type"], signature["record_id"]]
        signature["content_sha256"] = digest(record, signature["hash_scheme"])


class Trail:
    """Appends insert entries to the audit trail's chain, as lab.audit writes them."""

    def __init__(self) -> None:
        head = db.session.get(AuditChainHead, HEAD_ID)
        assert head is not None
        self.last_id, self.last_hash = head.last_id, head.last_hash
        self.models = {mapper.local_table.name: mapper.class_ for mapper in db.Model.registry.mappers}

    def append(self, rows: list[tuple[str, dict[str, Any], int | None]]) -> None:
        entries = []
        for name, row, batch_id in rows:
            model = self.models[name]
            if not issubclass(model, Audited):
                continue
            content = {column.name: REDACTED if column.key in model.__audit_redact__ else as_text(row[column.name])
                       for column in model.__table__.columns if column.key not in model.__audit_ignore__}
            self.last_id += 1
            entry: dict[str, Any] = {
                "id": self.last_id, "prev_hash": self.last_hash, "occurred_at": _created(row),
                "actor_id": None, "actor_username": "system", "action": "benchmark.copy", "operation": "insert",
                "table_name": name, "row_id": str(row["id"]), "field": None, "old_value": None,
                "new_value": json.dumps(content, sort_keys=True, ensure_ascii=False), "reason": COPY_REASON,
                "via": None, "batch_id": batch_id}
            entry["hash"] = self.last_hash = entry_hash(entry)
            entries.append(entry)
        if entries:
            db.session.execute(insert(AuditEvent), entries)
            db.session.execute(update(AuditChainHead).where(AuditChainHead.id == HEAD_ID)
                               .values(last_id=self.last_id, last_hash=self.last_hash))


def _created(row: dict[str, Any]) -> datetime:
    """The row's own earliest time (when it was made), or now."""
    times = [value for value in row.values() if isinstance(value, datetime)]
    return min(times) if times else datetime.now(UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", help="an empty scratch database")
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--open", type=int, default=200, help="about this many batches in process")
    options = parser.parse_args()
    os.environ["DATABASE_URL"] = options.database_url
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key")
    app = create_app()
    with app.app_context():
        if inspect(db.engine).get_table_names():
            sys.exit("Refused: the database is not empty; give an empty scratch database.")
    began = time.perf_counter()
    run_cli(options.database_url, "init-db")
    run_cli(options.database_url, "seed-demo")
    print(f"demo lab in {time.perf_counter() - began:.0f} s")
    with app.app_context():
        began = time.perf_counter()
        copy_batches(options.batches, options.open)
        print(f"batches copied in {time.perf_counter() - began:.0f} s")
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            # What autovacuum would long since have done to years of history (this server runs
            # without it): the visibility map lets index-only scans skip the table's rows.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("VACUUM (ANALYZE)"))
        counts = {name: db.session.scalar(select(func.count()).select_from(db.metadata.tables[name]))
                  for name in ("batches", "step_values", "custody_events", "signatures", "audit_events")}
        print(", ".join(f"{count:,} {name}" for name, count in counts.items()))


if __name__ == "__main__":
    main()
