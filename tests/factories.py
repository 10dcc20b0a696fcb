"""Test data and lookups. Valid step values and inventory are the demo lab's own."""

from __future__ import annotations

import html
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from lab.demo import STEP_DAY, add_inventory, step_values
from lab.extensions import db
from lab.models import AuditEvent, Batch, Deviation, Patient, Signature, StepEntry, StepValue, User

__all__ = ["PASSWORD", "PASSWORD_HASH", "STEP_DAY", "add_inventory", "entries", "form_data", "get_batch",
           "page_text", "patient", "snapshot", "step_values", "user"]

PASSWORD = "correct-horse-42"
PASSWORD_HASH = generate_password_hash(PASSWORD)  # once: hashing is slow on purpose


def user(name: str) -> User:
    return db.session.execute(db.select(User).filter_by(username=name)).scalar_one()


def get_batch(number: str) -> Batch:
    return db.session.execute(db.select(Batch).filter_by(batch_number=number)).scalar_one()


def entries(number: str, step_key: str) -> list[StepEntry]:
    return [e for e in get_batch(number).entries if e.step_key == step_key]


def patient(ref: str) -> Patient:
    return db.session.execute(db.select(Patient).filter_by(patient_ref=ref)).scalar_one()


def form_data(raw: dict[str, str], **extra: Any) -> dict[str, Any]:
    """The POST body of a step form: field-<key> per value, plus comment and version."""
    return {**{f"field-{k}": v for k, v in raw.items()}, **extra}


def page_text(response: Any) -> str:
    """A response's HTML with entities decoded, for asserting on messages."""
    return html.unescape(response.get_data(as_text=True))


def snapshot(app: Flask, number: str) -> dict[str, Any]:
    """What a refused request must leave unchanged: row counts and the batch's version and state."""
    with app.app_context():
        batch = get_batch(number)
        found = {model.__name__: db.session.scalar(select(func.count()).select_from(model))
                 for model in (StepEntry, StepValue, Deviation, Signature, AuditEvent)}
        return {**found, "version": batch.version, "state": batch.state}
