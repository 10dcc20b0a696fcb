"""Printed records built from the database: the certificate of analysis of a batch.

``labels.coa`` draws the PDF from a plain ``CoaData``; this module fills it from the
batch's product bags (their dates and doses as their labels print them, from
``lab.services.labels``), its current results, its deviations, its latest QA decision and
that decision's signature.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from flask import current_app

from lab.models import Batch, Container, Deviation, Disposition, QcResult, User
from lab.services.labels import bag_dose, label_dates
from lab.services.progress import definition_for, lab_timezone
from lab.services.release_status import current_results, release_basis, was_released
from lab.services.signatures import batch_signatures
from labels.data import CoaBag, CoaData, CoaDeviation, CoaResult, ResultStatus, SignatureData
from workflows.formatting import decimal, format_date, format_recorded
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
    coa_results = tuple(_coa_result(batch, definition, test, results.get(test.key)) for test in tests)
    bags = product_bags(batch, definition)
    filled_at, expires_at = _fill_and_expiry(bags, definition)
    doses = [dose for dose in map(bag_dose, bags) if dose is not None]
    weight = decimal(batch.patient.weight_kg) if doses else None
    return CoaData(
        batch_number=batch.batch_number,
        coi=batch.patient.coi,
        product=definition.product,
        patient_ref=batch.patient.patient_ref,
        process_key=definition.key,
        process_version=definition.version,
        facility_name=current_app.config["FACILITY_NAME"],
        facility_address=tuple(current_app.config["FACILITY_ADDRESS"]),
        results=coa_results,
        generated_at=now,
        disposition=_disposition(batch, definition, latest),
        disposition_signature=signature,
        exceptional_release_notes=_exceptional(batch),
        downloaded_by=downloaded_by.full_name,
        filled_at=filled_at,
        expires_at=expires_at,
        bags=tuple(_coa_bag(bag) for bag in bags),
        dose_per_kg=sum((dose.cells for dose in doses), Decimal(0)) / weight if weight else None,
        weight_kg=weight,
        deviations=tuple(_coa_deviation(d) for d in batch.deviations),
        qc_analysts=tuple(dict.fromkeys(r.recorded_by.full_name for r in results.values())),
        released_on_interim=was_released(batch, definition) and any(r.interim for r in coa_results),
    )


def product_bags(batch: Batch, definition: ProcessDefinition) -> list[Container]:
    """The bags of the product: the containers a step makes as many of as it computes (bag n
    of m) with a volume each, in bag order; a discarded bag is no longer part of it."""
    kinds = {create.kind for step in definition.steps for create in step.creates
             if isinstance(create.count, str) and create.volume}
    return sorted((c for c in batch.containers if c.kind in kinds and c.status != "discarded"),
                  key=lambda c: (c.created_entry_id, c.number))


def _fill_and_expiry(bags: list[Container], definition: ProcessDefinition) -> tuple[datetime | None, datetime | None]:
    """When the first bag was filled and when it expires, as its label prints them (in UTC)."""
    if not bags:
        return None, None
    dates = {d.what: d.moment for d in label_dates(bags[0], definition.container_kinds.get(bags[0].kind))}
    return dates.get("filled", bags[0].created_entry.performed_at), dates.get("expires")


def _coa_bag(bag: Container) -> CoaBag:
    dose = bag_dose(bag)
    return CoaBag(bag.code, bag.number, bag.count, decimal(bag.volume_ml) if bag.volume_ml is not None else None,
                  dose.cells if dose else None)


def _coa_deviation(deviation: Deviation) -> CoaDeviation:
    return CoaDeviation(deviation.number, deviation.title, deviation.status, deviation.classification,
                        deviation.closed_by.full_name if deviation.closed_by else None, deviation.closed_at)


def _coa_result(batch: Batch, definition: ProcessDefinition, test: ReleaseTestSpec,
                result: QcResult | None) -> CoaResult:
    """A reported result against the specification it was judged on; a pending one against the
    batch's own (a dose relative to the batch's target dose)."""
    if result is None:
        specification = spec_text(test, release_basis(batch, test, definition))
        return CoaResult(test.title, test.method, specification, ResultStatus.PENDING)
    text = format_recorded(result.text, test.kind, result.unit)
    if not result.is_final:
        text += " (interim)"
    return CoaResult(test.title, test.method, result.spec_text, _STATUS[result.verdict], text,
                     result.recorded_by.full_name, result.recorded_at.astimezone(lab_timezone()).date(),
                     interim=not result.is_final)


def _disposition(batch: Batch, definition: ProcessDefinition, latest: Disposition | None) -> str | None:
    if latest is None:
        return None
    state = definition.states.get(batch.state, batch.state)
    decided = f"{latest.title.lower()} on {format_date(latest.decided_at.astimezone(lab_timezone()).date())}"
    if latest.state_after != batch.state:  # moved since by the system (a late failing result)
        return f"{state} (after {decided})"
    return f"{state}: {decided}"


def _exceptional(batch: Batch) -> str | None:
    notes = [f"{d.title} on {format_date(d.decided_at.astimezone(lab_timezone()).date())}: the product did not meet its "
             f"specification. Treating physician: {d.physician_name}.\nPhysician's request: {d.physician_request}\n"
             f"Risk assessment: {d.risk_assessment}\nPhysician's confirmation: {d.physician_confirmation}\n"
             f"Reason: {d.reason}"
             for d in batch.dispositions if d.is_exceptional]
    return "\n\n".join(notes) or None
