"""Reviews of the audit trail (EU GMP Annex 11 §9, 21 CFR 11.10(e)).

QA records that it reviewed the trail of a period, what it found, and signs (meaning
"reviewed"). Each review keeps the chain head it saw (the newest entry and its hash):
``verify-audit`` checks that the chain still passes through every review's head, so a
consistent rewrite of the whole chain after a review is detected (lab.anchors does the same
for heads exported off the database).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from lab import audit
from lab.audit_chain import GENESIS, HEAD_ID
from lab.exceptions import InvalidInput
from lab.extensions import db
from lab.models import AuditChainHead, AuditEvent, AuditReview, Batch, Signature, User, utcnow
from lab.permissions import require, require_role
from lab.services.audit_verify import CHUNK, Findings
from lab.services.batch_record import COPY_TABLES
from lab.services.progress import lab_timezone
from lab.services.signatures import Credentials, reauthenticate, record_signatures, register_signed, sign

register_signed(AuditReview)

#: Only the quality unit reviews the trail and signs for it; auditors and administrators read reviews.
REVIEWERS = ("qa_officer",)
MAX_FINDINGS = 4000
#: As on /audit: no trail of this application is older.
EARLIEST = date(2000, 1, 1)
#: Reviews listed on one page, newest first.
PAGE_SIZE = 50


@dataclass(frozen=True)
class ReviewView:
    """A review as listed: with its signatures, each with whether it still matches."""

    review: AuditReview
    signatures: list[tuple[Signature, bool]]

    @property
    def signed_valid(self) -> bool:
        return bool(self.signatures) and all(valid for _, valid in self.signatures)


def chain_head() -> tuple[int, str]:
    """The newest entry of the trail and its hash as the chain head names them (0 and 64 zeros: none)."""
    head = db.session.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash)
                              .where(AuditChainHead.id == HEAD_ID)).one_or_none()
    return (0, GENESIS) if head is None else (int(head.last_id), head.last_hash)


def record_review(period_from: date | None, period_to: date | None, findings: str, *, actor: User,
                  credentials: Credentials, now: datetime | None = None) -> AuditReview:
    """Record and sign (meaning "reviewed") ``actor``'s review of the trail from ``period_from``
    to ``period_to`` (dates in the lab's time zone, both included).

    Raises NotAllowed (not QA), InvalidInput naming the field, or SignatureError; nothing is
    written then (the caller keeps a refused signature's attempt).
    """
    now = now or utcnow()
    require_role(actor, REVIEWERS, "record a review of the audit trail")
    findings = (findings or "").strip()
    today = now.astimezone(lab_timezone()).date()
    errors: dict[str, str] = {}
    if period_from is None:
        errors["period_from"] = "Enter the first day of the period reviewed."
    elif period_from < EARLIEST:
        errors["period_from"] = f"The period cannot start before {EARLIEST.isoformat()}."
    elif period_from > today:
        errors["period_from"] = f"The period cannot start in the future (today is {today.isoformat()})."
    if period_to is None:
        errors["period_to"] = "Enter the last day of the period reviewed."
    elif period_to > today:
        errors["period_to"] = f"The period cannot end in the future (today is {today.isoformat()})."
    elif period_from is not None and period_to < period_from:
        errors["period_to"] = "The period cannot end before it starts."
    if not findings:
        errors["findings"] = "Say what the review found (\"nothing to report\" is a finding too)."
    elif len(findings) > MAX_FINDINGS:
        errors["findings"] = f"Use at most {MAX_FINDINGS} characters."
    if errors:
        raise InvalidInput("The review was not recorded.", errors)
    assert period_from is not None and period_to is not None
    reauthenticate(actor, credentials, meaning="reviewed",
                   subject=f"review of the audit trail {period_from.isoformat()} to {period_to.isoformat()}",
                   batch_id=None)
    head_id, head_hash = chain_head()  # before this review's own entries: the trail as reviewed
    with audit.action("audit.review", actor=actor, reason=findings[:255]):
        review = AuditReview(period_from=period_from, period_to=period_to, findings=findings, reviewed_at=now,
                             reviewed_by=actor, head_entry_id=head_id, head_hash=head_hash)
        db.session.add(review)
        db.session.flush()
        sign(review, actor=actor, meaning="reviewed", now=now)
    return review


def reviews(actor: User, limit: int = PAGE_SIZE) -> list[ReviewView]:
    """The newest reviews, for QA, auditors and administrators."""
    require(actor, "review_audit_trail", "read the reviews of the audit trail")
    found: Sequence[AuditReview] = db.session.scalars(
        select(AuditReview).options(selectinload(AuditReview.reviewed_by))
        .order_by(AuditReview.id.desc()).limit(max(1, min(limit, PAGE_SIZE)))).all()
    return [ReviewView(review, record_signatures(review)) for review in found]


def last_review_of(batch: Batch) -> tuple[AuditReview, int] | None:
    """The newest review whose period overlaps the days of ``batch``'s trail and whose head
    came after its first entry, with how many of the batch's entries were written after that
    head (not yet reviewed); None if no review covers the batch's trail yet. The trail is the
    one its record's appendix prints (downloads of copies left out)."""
    first, last, first_id = db.session.execute(
        select(func.min(AuditEvent.occurred_at), func.max(AuditEvent.occurred_at), func.min(AuditEvent.id))
        .where(AuditEvent.batch_id == batch.id, AuditEvent.table_name.not_in(COPY_TABLES))).one()
    if first is None:
        return None
    zone = lab_timezone()
    first_day, last_day = first.astimezone(zone).date(), last.astimezone(zone).date()
    review = db.session.scalars(
        select(AuditReview).options(selectinload(AuditReview.reviewed_by))
        .where(AuditReview.period_from <= last_day, AuditReview.period_to >= first_day,
               AuditReview.head_entry_id >= first_id)
        .order_by(AuditReview.id.desc()).limit(1)).first()
    if review is None:
        return None
    later = db.session.scalar(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.batch_id == batch.id, AuditEvent.id > review.head_entry_id,
                                     AuditEvent.table_name.not_in(COPY_TABLES))) or 0
    return review, int(later)


@dataclass
class HeadReport:
    """Reviews whose head was checked against the chain, and what did not match."""

    checked: int = 0
    findings: Findings = field(default_factory=Findings)


def entry_problem(entry_id: int, entry_hash: str) -> str | None:
    """Why the chain does not pass through entry ``entry_id`` with hash ``entry_hash``, or None."""
    if entry_id == 0:
        return None if entry_hash == GENESIS else "entry 0 is the start of the chain, whose hash is 64 zeros"
    stored = db.session.scalar(select(AuditEvent.hash).where(AuditEvent.id == entry_id))
    if stored is None:
        return f"entry {entry_id} is missing from the trail"
    if stored != entry_hash:
        return f"entry {entry_id} now has hash {stored}, not {entry_hash}"
    return None


def verify_review_heads() -> HeadReport:
    """Check that the chain still passes through the head every review saw, a thousand at a time."""
    report = HeadReport()
    after = 0
    while rows := db.session.execute(
            select(AuditReview.id, AuditReview.head_entry_id, AuditReview.head_hash, AuditReview.reviewed_at,
                   User.full_name).join(User, User.id == AuditReview.reviewed_by_id)
            .where(AuditReview.id > after).order_by(AuditReview.id).limit(CHUNK)).all():
        for row in rows:
            report.checked += 1
            problem = entry_problem(row.head_entry_id, row.head_hash)
            if problem:
                report.findings.add(
                    f"Audit-trail review {row.id} ({row.full_name}, {row.reviewed_at:%Y-%m-%d %H:%M:%S} UTC) saw "
                    f"the trail end at entry {row.head_entry_id} with sha256 {row.head_hash}, but {problem}: the "
                    "trail was rewritten in the database since.")
        after = rows[-1].id
    return report
