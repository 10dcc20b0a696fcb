"""Helpers of the release tests: QC results, QA decisions and deviations, through the
services (to set a batch up) or over HTTP (what is under test)."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from lab.demo import RELEASE_RESULTS
from lab.extensions import db
from lab.services.deviations import Investigation, close_deviation, record_investigation, report_deviation
from lab.services.disposition import DecisionInput, decide
from lab.services.results import record_result
from lab.services.signatures import Credentials
from tests.factories import PASSWORD, get_batch, signature, signed_in, user

EXCEPTIONAL = {
    "reason": "Viability 72 % after thaw; no second apheresis possible for this patient.",
    "physician_name": "Dr. Hanna Berg, University Hospital Erlangen",
    "physician_request": "Written request of 2026-11-20: the patient's disease is progressing; no alternative.",
    "risk_assessment": "Lower viability may reduce expansion in vivo; no safety signal; dose adjusted to viable cells.",
    "physician_confirmation": "Confirmation of 2026-11-21, ref. HB-113: informed of the OOS result, accepts the product.",
}

INVESTIGATION = Investigation("minor", "Counter mis-set.", "None on the product or other batches.",
                              "Count repeated.", "Counter set-up added to the checklist.")


def record_results(app: Flask, number: str, **overrides: str) -> None:
    """Record the demo's in-specification results (``test=None`` leaves one out) as qc1."""
    with app.app_context():
        batch = get_batch(number)
        for key, text in {**RELEASE_RESULTS, **overrides}.items():
            if text is not None:
                record_result(batch, key, text, comment="", actor=user("qc1"), credentials=Credentials(PASSWORD),
                              now=datetime.now(UTC))
        db.session.commit()


def close_all_deviations(app: Flask, number: str) -> None:
    """Investigate (super1) and close (qa1) every open deviation of the batch."""
    with app.app_context():
        for deviation in get_batch(number).deviations:
            if deviation.is_open:
                record_investigation(deviation, INVESTIGATION, actor=user("super1"))
                close_deviation(deviation, actor=user("qa1"), credentials=Credentials(PASSWORD))
        db.session.commit()


def release(app: Flask, number: str, decision: str = "release", **fields: str) -> None:
    with app.app_context():
        decide(get_batch(number), DecisionInput(decision, **fields), expected_version=None, actor=user("qa1"),
               credentials=Credentials(PASSWORD))
        db.session.commit()


def released_with_deviation(app: Flask, number: str) -> None:
    """Take batch ``number`` to released through a hand-reported deviation, its results and a signed
    release: a batch record with every kind of signed record."""
    with app.app_context():
        report_deviation(get_batch(number), title="Label printer jammed", description="Label reprinted.",
                         actor=user("tech1"))
        db.session.commit()
    record_results(app, number)
    close_all_deviations(app, number)
    release(app, number)


def post_result(app: Flask, client: FlaskClient, number: str, test_key: str, value: str, **extra: Any) -> Any:
    data = {"value": value, "batch_version": version(app, number), **signature(signed_in(app, client)), **extra}
    return client.post(f"/batches/{number}/results/{test_key}", data=data)


def version(app: Flask, number: str) -> int:
    """The batch's version now: what a form opened now carries."""
    with app.app_context():
        return get_batch(number).version


def post_decision(app: Flask, client: FlaskClient, number: str, decision: str, **extra: Any) -> Any:
    data = {"decision": decision, "batch_version": version(app, number), **signature(signed_in(app, client)), **extra}
    return client.post(f"/batches/{number}/disposition", data=data)


def words(response: Any) -> str:
    """A page's visible text: tags dropped, entities decoded, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))).split())


def state(app: Flask, number: str) -> str:
    with app.app_context():
        return get_batch(number).state
