"""Test data and lookups. Valid step values and inventory are the demo lab's own."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from lab.demo import add_inventory, lot_code, step_values
from lab.extensions import db
from lab.models import AuditEvent, Batch, Deviation, Patient, Signature, StepEntry, StepValue, User

__all__ = ["PASSWORD", "PASSWORD_HASH", "add_inventory", "demo_lot", "entries", "form_data", "get_batch",
           "page_text", "patient", "signature", "signed_in", "snapshot", "step_values", "user"]

PASSWORD = "correct-horse-42"
PASSWORD_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")  # fast to check: tests sign often


def user(name: str) -> User:
    return db.session.execute(db.select(User).filter_by(username=name)).scalar_one()


def demo_lot(app: Flask, lot_number: str) -> str:
    """The generated code of the demo lot with supplier lot number ``lot_number`` (e.g. "TRA-2610")."""
    with app.app_context():
        return lot_code(lot_number)


def get_batch(number: str) -> Batch:
    return db.session.execute(db.select(Batch).filter_by(batch_number=number)).scalar_one()


def entries(number: str, step_key: str) -> list[StepEntry]:
    return [e for e in get_batch(number).entries if e.step_key == step_key]


def patient(ref: str) -> Patient:
    return db.session.execute(db.select(Patient).filter_by(patient_ref=ref)).scalar_one()


def form_data(raw: dict[str, str], *, signer: str = "tech1", **extra: Any) -> dict[str, Any]:
    """The POST body of a step form: field-<key> per value, the performer's signature
    (``signer``'s username and password), plus comment and version."""
    return {**{f"field-{k}": v for k, v in raw.items()}, **signature(signer), **extra}


def signed_in(app: Flask, client: Any) -> str:
    """The username of whoever ``client`` is signed in as (from its Flask-Login session)."""
    with client.session_transaction() as session:
        user_id = int(session["_user_id"])
    with app.app_context():
        found = db.session.get(User, user_id)
        assert found is not None
        return found.username


def signature(username: str, password: str = PASSWORD) -> dict[str, str]:
    """The signature components of a signing form. The username matters only on the first
    signature of a sign-in (21 CFR 11.200(a)); later ones ignore it."""
    return {"username": username, "password": password}


def post_step(app: Flask, client: Any, number: str, step_key: str, *, comment: str = "",
              when: datetime | None = None, **overrides: str) -> Any:
    """POST a step form with in-limit values (as of ``when``, default now) and the current batch version."""
    with app.app_context():
        batch = get_batch(number)
        raw = step_values(step_key, when=when or datetime.now(UTC), batch=batch, **overrides)
        version = batch.version
    return client.post(f"/batches/{number}/steps/{step_key}",
                       data=form_data(raw, signer=signed_in(app, client), comment=comment, batch_version=version))


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
