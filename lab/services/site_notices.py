"""Late results reach the physician: a release result that fails after the product left the lab
becomes a notice to every site it was shipped to (DOMAIN.md §5, late failures; EU GMP for
ATMPs §11.5; 21 CFR 211.192).

``notify_late_failure`` is called by results recording (``lab.services.results``) in the same
transaction as the result, so a result and its notices are written together or not at all.
A notice stays open, on the site's and QA's dashboards, until a clinician of that site
acknowledges it with a signature (meaning "acknowledged"); the acknowledgement is set once.

One notice per failing result and site. A result recorded before the batch's product was
shipped (no shipment, or only one still packed and unverified) notifies nobody: the product
has not left the lab and QA's hold keeps it there. A correction that fails again does not
notify a site a second time when the result it corrects already did: the site was told that
the test failed, and the notice's page shows the test's current result. (Corrections are
refused once a batch was released, so after shipment this only guards the rule.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload

from lab import audit
from lab.exceptions import LabError, NotAllowed
from lab.extensions import db
from lab.models import Batch, QcResult, Shipment, SiteNotice, User, utcnow
from lab.permissions import require, require_role
from lab.services.progress import definition_for
from lab.services.signatures import Credentials, reauthenticate, register_signed, sign
from lab.services.site_scope import is_clinician, require_site
from workflows.formatting import format_recorded, format_utc
from workflows.release import FAIL

register_signed(SiteNotice)

#: Who reads notices: a clinician their own site's, the quality unit, supervisors and auditors every site's.
READERS = ("clinician", "qa_officer", "supervisor", "auditor")
MEANING = "acknowledged"


class AlreadyAcknowledged(LabError):
    """The notice was acknowledged before: the first acknowledgement stands."""

    status = 409


def notify_late_failure(result: QcResult, *, now: datetime) -> list[SiteNotice]:
    """One notice per site the result's batch was shipped to (a shipment verified and gone,
    any status but "packed"), when ``result`` fails. Returns the notices made now: none for a
    passing result, before shipment, or for a site already told of this result (or of the
    result it corrects). Flushes; the caller's transaction and audit action hold it."""
    if result.verdict != FAIL:
        return []
    batch = result.batch
    shipments = db.session.scalars(
        select(Shipment).where(Shipment.batch_id == batch.id, Shipment.status != "packed").order_by(Shipment.id)
    ).all()
    if not shipments:
        return []
    told = set(db.session.scalars(select(SiteNotice.site_id).where(SiteNotice.result_id.in_(_chain(result)))))
    what = failure_text(result)
    made: list[SiteNotice] = []
    for shipment in shipments:
        if shipment.site_id in told:
            continue
        told.add(shipment.site_id)
        notice = SiteNotice(batch_id=batch.id, site_id=shipment.site_id, result_id=result.id, what=what,
                            created_at=now)
        db.session.add(notice)
        made.append(notice)
    db.session.flush()
    return made


def _chain(result: QcResult) -> list[int]:
    """The ids of ``result`` and of every result it corrects, directly or through others."""
    ids = [result.id]
    superseded = result.supersedes_id
    while superseded is not None and superseded not in ids:
        ids.append(superseded)
        superseded = db.session.scalar(select(QcResult.supersedes_id).where(QcResult.id == superseded))
    return ids


def failure_text(result: QcResult) -> str:
    """What failed, in words: the test, the result with its unit, the specification, the
    verdict, when it was recorded and by whom."""
    test = definition_for(result.batch).release_test(result.test_key)
    shown = format_recorded(result.text, test.kind, result.unit)
    kind = "Corrected result" if result.is_correction else "Result"
    return (f"{test.title}: {kind} {shown} FAILS its specification ({result.spec_text}). "
            f"Recorded {format_utc(result.recorded_at)} by {result.recorded_by.full_name}, after batch "
            f"{result.batch.batch_number} was shipped.")


# --- reading ----------------------------------------------------------------------------------


def _query() -> Select[tuple[SiteNotice]]:
    return select(SiteNotice).options(
        selectinload(SiteNotice.batch).selectinload(Batch.patient), selectinload(SiteNotice.site),
        selectinload(SiteNotice.acknowledged_by),
        selectinload(SiteNotice.result).selectinload(QcResult.recorded_by))


def open_notices(site_id: int | None) -> list[SiteNotice]:
    """Notices not yet acknowledged, oldest first: of one site, or of every site (None)."""
    query = _query().where(SiteNotice.acknowledged_at.is_(None))
    if site_id is not None:
        query = query.where(SiteNotice.site_id == site_id)
    return list(db.session.scalars(query.order_by(SiteNotice.created_at, SiteNotice.id)))


def notices_of_batch(batch: Batch) -> list[SiteNotice]:
    """Every notice about ``batch``, in the order they were made."""
    return list(db.session.scalars(_query().where(SiteNotice.batch_id == batch.id).order_by(SiteNotice.id)))


def require_reader(actor: User) -> None:
    require_role(actor, READERS, "read notices of late results")


def visible_notices(actor: User) -> list[SiteNotice]:
    """What ``actor`` may read: a clinician their site's notices, the others every site's;
    open ones first (oldest first), then the acknowledged ones (newest first)."""
    require_reader(actor)
    query = _query()
    if is_clinician(actor):
        query = query.where(SiteNotice.site_id == (actor.site_id or -1))
    notices = list(db.session.scalars(query.order_by(SiteNotice.created_at, SiteNotice.id)))
    open_ = [n for n in notices if n.acknowledged_at is None]
    done = sorted((n for n in notices if n.acknowledged_at is not None), key=lambda n: (n.acknowledged_at, n.id),
                  reverse=True)
    return open_ + done


def get_visible(notice_id: int, actor: User) -> SiteNotice | None:
    """The notice ``notice_id`` for ``actor``: None when there is none; NotAllowed for another site's."""
    require_reader(actor)
    notice = db.session.scalar(_query().where(SiteNotice.id == notice_id))
    if notice is not None:
        require_site(actor, notice.site_id, "notice")
    return notice


def current_result(notice: SiteNotice) -> QcResult | None:
    """The result of the notice's test that stands now, when a later correction replaced the
    notified one; None when the notified result still stands."""
    later = db.session.scalar(select(QcResult).where(QcResult.supersedes_id == notice.result_id))
    found = None
    while later is not None:
        found = later
        later = db.session.scalar(select(QcResult).where(QcResult.supersedes_id == later.id))
    return found


def may_acknowledge(actor: User, notice: SiteNotice) -> bool:
    return (notice.acknowledged_at is None and actor.can_act_as("clinician") and actor.site_id is not None
            and actor.site_id == notice.site_id)


# --- acknowledging ----------------------------------------------------------------------------


def acknowledge(notice: SiteNotice, *, actor: User, credentials: Credentials,
                now: datetime | None = None) -> SiteNotice:
    """A clinician of the notice's site acknowledges it, signing "acknowledged". Raises
    NotAllowed (not a clinician, or of another site), AlreadyAcknowledged (409: the first
    acknowledgement stands) or SignatureError. Nothing is written on refusal."""
    require(actor, "acknowledge_notice", "acknowledge a notice of a late result")
    require_site(actor, notice.site_id, "notice")
    if actor.site_id is None:
        raise NotAllowed("You belong to no treatment site: only a clinician of the notice's site may acknowledge it.")
    now = now or utcnow()
    db.session.execute(select(SiteNotice).where(SiteNotice.id == notice.id).with_for_update()
                       .execution_options(populate_existing=True)).scalar_one()
    if notice.acknowledged_at is not None:
        by = notice.acknowledged_by.full_name if notice.acknowledged_by else "someone"
        raise AlreadyAcknowledged(f"This notice was already acknowledged by {by} at "
                                  f"{format_utc(notice.acknowledged_at)}: the first acknowledgement stands.")
    reauthenticate(actor, credentials, meaning=MEANING,
                   subject=f"notice of a late failing result of batch {notice.batch.batch_number}",
                   batch_id=notice.batch_id)
    with audit.action("notice.acknowledge", actor=actor):
        notice.acknowledged_at = now
        notice.acknowledged_by = actor
        db.session.flush()
        sign(notice, actor=actor, meaning=MEANING, now=now)
    return notice


@dataclass(frozen=True)
class NoticeLine:
    """A notice as the printed records state it: to which site, what failed, when it was made,
    and its acknowledgement (None: not yet)."""

    site: str
    what: str
    created_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None


def notice_lines(notices: Sequence[SiteNotice]) -> list[NoticeLine]:
    return [NoticeLine(f"{n.site.code} {n.site.name}", n.what, n.created_at,
                       n.acknowledged_by.full_name if n.acknowledged_by else None, n.acknowledged_at)
            for n in notices]
