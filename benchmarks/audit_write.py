"""What the audit mechanism adds to a write: a realistic audited write, timed with the audit
listeners on and detached (run by hand, on a COPY of a facility database: it writes).

    cp /tmp/facility.sqlite /tmp/audit.sqlite
    python benchmarks/audit_write.py sqlite:////tmp/audit.sqlite

The write is a correction of a step value on an open batch through the service
(``lab.services.steps.correct_value``: the new value, the recomputed figures, the batch's
version, the corrector's signature; several flushes), committed. Each round times the same
work with the audit listeners (lab.audit) and without, one right after the other, so both see
the same machine load: a correction away from the recorded value and one back to it (the two
cost differently, so each side makes both; timing one of them against the other measured the
difference between the two corrections, not the trail). The password check of the signature,
the same work in both and most of either, is left out (it would hide what the trail costs).
Prints the medians of a correction and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from config import TestingConfig
from lab import audit, create_app
from lab.exceptions import LabError
from lab.extensions import db
from lab.models import Batch, StepEntry, User
from lab.services.signatures import Credentials, current_values
from lab.services.steps import correct_value

FIELD, STEP, SIGNER = "volume_ml", "receipt", "tech1"
#: The listeners that make the trail (lab.audit), by event.
LISTENERS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("before_flush", audit._refuse_rewriting_history),
    ("after_flush", audit._write_audit_entries),
)


@contextmanager
def without_audit() -> Iterator[None]:
    for name, listener in LISTENERS:
        event.remove(Session, name, listener)
    try:
        yield
    finally:
        for name, listener in LISTENERS:
            event.listen(Session, name, listener)


def open_entries(limit: int = 200) -> Iterator[int]:
    """Ids of receipt entries of batches still in manufacturing, newest batches first."""
    yield from db.session.scalars(select(StepEntry.id).join(Batch).where(StepEntry.step_key == STEP, Batch.is_open())
                                  .order_by(Batch.created_at.desc()).limit(limit))


def correct(entry_id: int, text: str) -> None:
    entry = db.session.get(StepEntry, entry_id)
    assert entry is not None
    signer = db.session.scalar(select(User).where(User.username == SIGNER))
    correct_value(entry.batch, entry, FIELD, text, reason="Benchmark: scale print-out re-read.",
                  expected_version=entry.batch.version, actor=signer, credentials=Credentials("unused"))
    db.session.commit()
    db.session.expunge_all()


def subject() -> tuple[int, float]:
    """A correctable entry and its current volume (the first entry that takes a correction)."""
    for entry_id in open_entries():
        entry = db.session.get(StepEntry, entry_id)
        value = current_values(entry).get(FIELD) if entry else None
        if value is None:
            continue
        try:
            correct(entry_id, value.text)  # refused as "no change" if correctable, else for why it is not
        except LabError as error:
            db.session.rollback()
            if "No change" in str(error):
                return entry_id, float(value.text)
    sys.exit("Refused: no open batch has a correctable receipt volume.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database_url")
    parser.add_argument("--rounds", type=int, default=60)
    options = parser.parse_args()

    class BenchConfig(TestingConfig):
        SQLALCHEMY_DATABASE_URI = options.database_url

    User.check_password = lambda self, password: True  # type: ignore[method-assign]  # see the docstring
    app = create_app(BenchConfig)
    audited: list[float] = []
    bare: list[float] = []
    with app.app_context():
        entry_id, volume = subject()
        for number in range(options.rounds + 2):
            for arm, timings in ((nullcontext(), audited), (without_audit(), bare)):
                with arm:
                    began = time.perf_counter()
                    correct(entry_id, f"{volume + 1:g}")
                    correct(entry_id, f"{volume:g}")
                    timings.append((time.perf_counter() - began) / 2)
            if number < 2:  # warm-up
                audited.clear()
                bare.clear()
    with_audit, without = statistics.median(audited) * 1000, statistics.median(bare) * 1000
    print(f"correction of a step value, {options.rounds} rounds on {options.database_url.split(':')[0]}: "
          f"audited {with_audit:.1f} ms, audit listeners detached {without:.1f} ms (medians): "
          f"{with_audit / without:.2f}x")


if __name__ == "__main__":
    main()
