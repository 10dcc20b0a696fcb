"""Every route of the app, with a value for each of its URL arguments: for the tests that
walk the whole URL map (what the auditor may do, what every page must have)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import select

from lab import audit
from lab.demo import INCUBATOR, equipment_code, lot_code
from lab.extensions import db
from lab.models import Container, MaterialLot, QcResult, Site
from lab.services.deviations import report_deviation
from lab.services.submissions import submit_step
from tests.factories import PASSWORD, entries, get_batch, step_values, user
from tests.quality import record_results


def every_kind_of_record(app: Flask, make_batch: Callable[..., str]) -> dict[str, Any]:
    """One record of every kind a route names, and the value of each URL argument (the
    ``lab_records`` fixture)."""
    number = make_batch()
    awaiting = make_batch(until="enrichment", ref="SLE-02", verify=False)
    record_results(app, number)
    with app.app_context():
        batch = get_batch(number)
        deviation = report_deviation(batch, title="Label smudged", description="Relabelled.", actor=user("tech1"))
        # a count an instrument sent for the batch at enrichment, waiting for a signature
        submission = submit_step(get_batch(awaiting), "enrichment", {"post_viability_pct": "95"}, comment="",
                                 actor=user("tech1"), token=None, expected_version=None)
        with audit.action("test.setup", actor=None):
            site = Site(code="NUH-HEM", name="Northern University Hospital", address="1 Hospital Road",
                        contact="Ward desk")
            db.session.add(site)
        db.session.commit()
        result = db.session.scalars(select(QcResult).where(QcResult.batch_id == batch.id)).first()
        container = db.session.scalars(select(Container).where(Container.batch_id == batch.id)).first()
        assert result is not None and container is not None
        return {
            "batch_number": awaiting, "entry_id": entries(awaiting, "receipt")[0].id, "field_key": "volume_ml",
            "step_key": "enrichment", "result_id": result.id, "test_key": result.test_key, "code": container.code,
            "number": deviation.number, "patient_ref": "SLE-02", "user_id": user("tech1").id,
            "coi": get_batch(awaiting).patient.coi, "site_id": site.id, "submission_id": submission.id,
            "notice_id": 1,  # none exists: its pages answer 404
            "token_id": 1,  # no API token exists: its revocation answers 404
            "filename": "celltrail.css", "text": number,
            "key": batch.definition.key, "version": batch.definition.version,  # a process version's page
            # the batch's own records: its results are in the released batch, its open entries in the other
            "by_endpoint": {"quality.correct": {"batch_number": number},
                            # a lot in quarantine (its check and decision forms), by its generated code
                            **{f"materials.{name}": {"code": lot_code("LV-CD19-0043")} for name in (
                                "lot", "check", "decide", "recall", "where_used_csv", "label")},
                            # an instrument the batch used, by its generated code
                            **{f"equipment.{name}": {"code": equipment_code(INCUBATOR)} for name in (
                                "detail", "log", "out_of_service", "return_to_service", "label")},
                            "attachments.download": certificate(lot_code("LV-CD19-0043"))},
            # a plausible body for any form: fields the forms read, the auditor's own signature
            "form": {**{f"field-{k}": v for k, v in step_values("receipt", when=datetime.now(UTC), batch=get_batch(awaiting)).items()},
                     "username": "auditor1", "password": PASSWORD, "batch_version": get_batch(awaiting).version,
                     "value": "185", "reason": "Inspection", "comment": "Inspection", "title": "Inspection",
                     "description": "Inspection", "decision": "release", "classification": "minor",
                     "root_cause": "x", "impact": "x", "corrective_action": "x", "preventive_action": "x",
                     "role": "admin", "status": "active", "full_name": "Audrey Auditor", "patient_ref": "SLE-09",
                     "initials": "AB", "date_of_birth": "1980-01-01", "weight_kg": "70", "indication": "SLE",
                     "event": "moved", "scanned": container.code, "to_location": "Freezer 2"},
        }


def certificate(code: str) -> dict[str, Any]:
    """The URL arguments of the certificate of analysis of the lot ``code``."""
    lot = db.session.scalar(select(MaterialLot).where(MaterialLot.code == code))
    assert lot is not None and lot.certificate is not None
    return {"attachment_id": lot.certificate.id, "filename": lot.certificate.filename}


def url_for_rule(app: Flask, rule: Any, values: dict[str, Any]) -> str:
    values = {**values, **values["by_endpoint"].get(rule.endpoint, {})}
    missing = set(rule.arguments) - set(values)
    assert not missing, f"{rule.endpoint}: give this test a value for {missing}"
    with app.test_request_context():
        adapter = app.url_map.bind("localhost")
        return adapter.build(rule.endpoint, {key: values[key] for key in rule.arguments})
