"""The release for infusion certificate of a batch, built from the database.

``labels.rfic`` draws it from a plain ``RficData``. The product, the dose, the disposition and
its signature, an interim result and an exceptional release are the certificate of
analysis's (``coa_data``), so the two documents never disagree; the certificate adds the
patient's other pseudonymous identifiers, QA's reason and the process's thaw-to-infusion
limit. It is issued only while the batch is released: not before QA's release, not for a
rejected batch, not for one put on hold since.
"""

from __future__ import annotations

from datetime import datetime

from lab.exceptions import StepNotAllowed
from lab.models import Batch, User
from lab.services.progress import definition_for
from lab.services.record_distribution import notice_record
from lab.services.records import coa_data
from lab.services.site_notices import notices_of_batch
from labels.rfic import RficData


def rfic_refusal(batch: Batch) -> str | None:
    """Why ``batch`` has no release for infusion certificate now; None when it may have one."""
    definition = definition_for(batch)
    released = definition.release.released_states if definition.release else ()
    if batch.state in released:
        return None
    state = definition.states.get(batch.state, batch.state).lower()
    if any(d.state_after in released for d in batch.dispositions):
        return (f"Batch {batch.batch_number} was released but is {state} now: a release for infusion certificate "
                "is issued only while the batch is released. QA decides what happens to the product.")
    return (f"Batch {batch.batch_number} is {state}: a release for infusion certificate is issued only after "
            "QA has released the batch.")


def rfic_data(batch: Batch, *, record_digest: str, downloaded_by: User, now: datetime) -> RficData:
    """The certificate of ``batch`` as it stands at ``now``, issued on the batch record with
    ``record_digest``. Raises StepNotAllowed (409) when the batch is not released."""
    if refusal := rfic_refusal(batch):
        raise StepNotAllowed(refusal)
    definition = definition_for(batch)
    patient = batch.patient
    return RficData(
        coa=coa_data(batch, downloaded_by=downloaded_by, now=now),
        initials=patient.initials,
        date_of_birth=patient.date_of_birth,
        record_digest=record_digest,
        release_reason=batch.dispositions[-1].reason or None if batch.dispositions else None,
        thaw_to_infusion_minutes=definition.thaw_to_infusion_minutes,
        notices=tuple(notice_record(n) for n in notices_of_batch(batch)),
    )
