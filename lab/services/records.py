"""Printed records built from the database: the certificate of analysis of a batch.

``labels.coa`` draws the PDF from a plain ``CoaData``; this module fills it from the
batch's current results, its latest QA decision and that decision's signature.
"""

from __future__ import annotations

from datetime import datetime

from flask import current_app

from lab.models import Batch, Disposition, QcResult, User
from lab.services.progress import definition_for, lab_timezone
from lab.services.release_status import current_results
from lab.services.signatures import batch_signatures
from labels.data import CoaData, CoaResult, ResultStatus, SignatureData
from workflows.model import ProcessDefinition, ReleaseTestSpec
from workflows.release import FAIL, INTERIM, PASS, spec_text

_STATUS = {PASS: ResultStatus.PASS, FAIL: ResultStatus.FAIL, INTERIM: ResultStatus.PENDING}


def coa_data(batch: Batch, *, downloaded_by: User, now: datetime) -> CoaData:
    """The certificate of analysis of ``batch`` as it stands at ``now``.

    Lists every test expected for the batch (and any optional one reported), pending
    where no final result is in; the disposition is the batch's state after its latest
    QA decision, signed as that decision was.
    """
    definition = definition_for(batch)
    results = current_results(batch)
    tests = [t for t in definition.release_tests if t.required or t.key in results]
    latest = batch.dispositions[-1] if batch.dispositions else None
    signature = None
    if latest is not None:
        signed = batch_signatures(batch).get(("disposition", latest.id), [])
        signature = SignatureData(signed[0].printed_name, signed[0].meaning, signed[0].signed_at) if signed else None
    return CoaData(
        batch_number=batch.batch_number,
        coi=batch.patient.coi,
        product=definition.product,
        patient_ref=batch.patient.patient_ref,
        process_key=definition.key,
        process_version=definition.version,
        facility_name=current_app.config["FACILITY_NAME"],
        facility_address=tuple(current_app.config["FACILITY_ADDRESS"]),
        results=tuple(_coa_result(test, results.get(test.key)) for test in tests),
        generated_at=now,
        disposition=_disposition(batch, definition, latest),
        disposition_signature=signature,
        exceptional_release_notes=_exceptional(batch),
        downloaded_by=downloaded_by.full_name,
    )


def _coa_result(test: ReleaseTestSpec, result: QcResult | None) -> CoaResult:
    if result is None:
        return CoaResult(test.title, test.method, spec_text(test), ResultStatus.PENDING)
    text = f"{result.text} {result.unit}" if result.unit else result.text
    if not result.is_final:
        text += " (interim)"
    return CoaResult(test.title, test.method, result.spec_text, _STATUS[result.verdict], text,
                     result.recorded_by.full_name, result.recorded_at.astimezone(lab_timezone()).date())


def _disposition(batch: Batch, definition: ProcessDefinition, latest: Disposition | None) -> str | None:
    if latest is None:
        return None
    state = definition.states.get(batch.state, batch.state)
    decided = f"{latest.title.lower()} on {latest.decided_at.astimezone(lab_timezone()):%Y-%m-%d}"
    if latest.state_after != batch.state:  # moved since by the system (a late failing result)
        return f"{state} (after {decided})"
    return f"{state}: {decided}"


def _exceptional(batch: Batch) -> str | None:
    notes = [f"{d.title} on {d.decided_at.astimezone(lab_timezone()):%Y-%m-%d}: the product did not meet its "
             f"specification. Treating physician: {d.physician_name}.\nPhysician's request: {d.physician_request}\n"
             f"Risk assessment: {d.risk_assessment}\nPhysician's confirmation: {d.physician_confirmation}\n"
             f"Reason: {d.reason}"
             for d in batch.dispositions if d.is_exceptional]
    return "\n\n".join(notes) or None
