"""Allocation of COIs, batch numbers and deviation numbers without gaps or duplicates."""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from lab.extensions import db
from lab.models import CodeSequence
from workflows.codes import CodeKind, make_code


def next_value(name: str) -> int:
    """Increment counter ``name`` atomically (one UPDATE ... RETURNING) and return it."""
    bump = (
        update(CodeSequence)
        .where(CodeSequence.name == name)
        .values(last_value=CodeSequence.last_value + 1)
        .returning(CodeSequence.last_value)
    )
    value = db.session.execute(bump).scalar_one_or_none()
    if value is not None:
        return value
    try:
        with db.session.begin_nested():
            db.session.add(CodeSequence(name=name, last_value=0))
    except IntegrityError:
        pass  # another transaction created it first
    return db.session.execute(bump).scalar_one()


def next_code(kind: CodeKind, now: datetime) -> str:
    """The next COI or batch number of this facility for the year of ``now``."""
    fin = current_app.config["FACILITY_ID"]
    sequence = next_value(f"{kind.name}-{now.year % 100:02d}")
    return str(make_code(kind, fin, now.year, sequence))


def next_deviation_number(now: datetime) -> str:
    return f"DEV-{now.year}-{next_value(f'DEV-{now.year % 100:02d}'):04d}"
