"""A cell counter's export file, imported for a step that counts cells (issue 16, CNT-1).

The steps that take one are those whose definition has a viable cell count and a viability
(``expansion.cells_field``, ``expansion.viability_field``): in CD19 CAR-T v4 the enrichment,
the daily expansion counts and the harvest. The file is read (``workflows.counters``), checked
against the batch and the step, kept as an Attachment with its SHA-256 (the original record of
the count) and turned into a pending Submission of two values: viable cells (the viable
concentration × the culture volume the person or the API call gives) and the viability. A
person then reviews the values with the file's sample ID and time, completes the form and signs
(``lab.services.submissions``): an import never records an entry by itself.

A file is refused, with nothing written, when it is not a counter export, names another
sample, was measured in the future or before the step's window opens, or was already imported
for this batch (the same SHA-256), unless that earlier submission was withdrawn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy import select

from lab import audit
from lab.exceptions import InvalidInput, LabError, StepNotAllowed
from lab.extensions import db
from lab.models import ApiToken, Attachment, Batch, Submission, User, utcnow
from lab.permissions import require_role
from lab.services.attachments import keep, sha256_of
from lab.services.expansion import cells_field, viability_field
from lab.services.progress import batch_progress, definition_for, lab_timezone
from lab.services.step_context import zero_step
from lab.services.steps import lock_batch
from lab.services.submissions import submit_step
from workflows.counters import CounterFileError, CounterReading, parse_counter_file
from workflows.engine import can_start
from workflows.formatting import format_datetime
from workflows.model import FieldSpec, ProcessDefinition, StepSpec

#: A counter's clock may run a little ahead of the server's: a count this far "in the future" is still now.
CLOCK_SKEW = timedelta(minutes=5)
#: The culture volumes a count may stand for (mL): a bag holds at most a few litres.
VOLUME_RANGE = (Decimal("0.1"), Decimal(10000))
CSV_TYPE = "text/csv"
_CODE_CHARACTERS = re.compile(r"[^0-9A-Z*]")


class DuplicateFile(LabError):
    """The same file (by its SHA-256) is already imported for this batch."""

    status = 409


@dataclass(frozen=True)
class CountFields:
    """The two fields of a step a counter file fills."""

    cells: FieldSpec
    viability: FieldSpec


def count_fields(step: StepSpec) -> CountFields | None:
    """The fields a counter file fills in ``step``; None for a step that takes no cell count."""
    cells, viability = cells_field(step), viability_field(step)
    return CountFields(cells, viability) if cells is not None and viability is not None else None


def sample_id_help(batch: Batch, step: StepSpec) -> str:
    """What to type as the sample ID on the counter, for the form's help."""
    kinds = _container_kinds(step)
    codes = [c.code for c in batch.containers if c.kind in kinds]
    bag = f" or the code of its container ({', '.join(codes)})" if codes else ""
    return (f"Type the batch number {batch.batch_number}{bag} as the sample ID on the counter "
            "(a day or a note may follow it, such as “D6”).")


def import_counter_file(batch: Batch, step_key: str, content: bytes, filename: str | None, *, volume_ml: str,
                        actor: User, token: ApiToken | None, expected_version: int | None,
                        now: datetime | None = None) -> Submission:
    """Check ``content`` (a counter's export) against ``batch`` and its step ``step_key`` and make
    the pending Submission that holds its values and the file.

    Raises KeyError for a step the batch's process does not have, StepNotAllowed (409) for a step
    that takes no cell count or may not be recorded now, NotAllowed (403) for a role that may not
    record it, InvalidInput (422, on ``file`` or ``volume_ml``) for a file or volume refused, and
    DuplicateFile (409) for a file already imported, ConcurrentChangeError (409) for a stale
    ``expected_version``. Writes nothing when it refuses.
    """
    now = now or utcnow()
    definition = definition_for(batch)
    step = definition.step(step_key)
    fields = count_fields(step)
    if fields is None:
        raise StepNotAllowed(f"{step.title} takes no cell count: a counter file is imported for a step that "
                             "records viable cells and viability.")
    require_role(actor, step.role, f"record {step.title}")
    lock_batch(batch, expected_version)  # a duplicate is judged under the lock: two uploads of a file race
    blocked = can_start(definition, step_key, batch_progress(batch, definition), batch.state)
    if blocked:
        raise StepNotAllowed(blocked)
    errors: dict[str, str] = {}
    volume = _volume(volume_ml, errors)
    reading = _reading(content, errors)
    if reading is not None:
        _check_sample(batch, step, reading.sample_id, errors)
        _check_time(batch, definition, step, reading.measured_at, now, errors)
    if errors or volume is None or reading is None:
        raise InvalidInput("The counter file was not imported: " + " ".join(errors.values()) + " Nothing was saved.",
                           errors)
    digest = sha256_of(content)
    _check_new(batch, digest)
    values = {fields.cells.key: cells_text(reading.viable_per_ml, volume),
              fields.viability.key: reading.viability_text}
    comment = (f"From the {reading.instrument} file {filename or 'without a name'} (SHA-256 {digest}): sample "
               f"{reading.sample_id}, {cells_text(reading.viable_per_ml, Decimal(1))} viable cells/mL × "
               f"{volume:f} mL culture volume, "
               f"viability {reading.viability_text} %.")
    with audit.action("counter_file.import", actor=actor):
        attachment = keep(content, filename, content_type=CSV_TYPE, actor=actor, now=now)
        return submit_step(batch, step_key, values, comment=comment, actor=actor, token=token,
                           expected_version=expected_version, attachment=attachment,
                           sample_id=reading.sample_id, measured_at=reading.measured_at, now=now)


def cells_text(viable_per_ml: float, volume_ml: Decimal) -> str:
    """Viable cells in the culture, as a step field takes them: ``2.436e8`` (every digit the
    concentration and the volume carry, none invented)."""
    exact = (Decimal(repr(viable_per_ml)) * volume_ml).normalize()
    if exact.is_zero():
        return "0"
    digits = "".join(str(d) for d in exact.as_tuple().digits).rstrip("0") or "0"
    exponent = exact.adjusted()
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{exponent}"


def _volume(text: str, errors: dict[str, str]) -> Decimal | None:
    typed = (text or "").strip().removesuffix("mL").removesuffix("ml").strip()
    low, high = VOLUME_RANGE
    try:
        volume = Decimal(typed)
    except InvalidOperation:
        volume = None
    if volume is None or not volume.is_finite() or not low <= volume <= high:
        errors["volume_ml"] = (f"Enter the culture volume the count stands for, in mL (a number from {low} to "
                               f"{high}), not “{typed[:40]}”." if typed else
                               "Enter the culture volume the count stands for, in mL.")
        return None
    return volume


def _reading(content: bytes, errors: dict[str, str]) -> CounterReading | None:
    try:
        return parse_counter_file(content, lab_timezone())
    except CounterFileError as error:
        errors["file"] = str(error)
        return None


def _container_kinds(step: StepSpec) -> set[str]:
    """The kinds of container a step handles: those its fields scan and those it makes."""
    return {f.container for f in step.fields if f.container} | {c.kind for c in step.creates}


def _compact(text: str) -> str:
    """A code or a sample ID as letters and digits only: the counter may drop the hyphens."""
    return _CODE_CHARACTERS.sub("", text.upper())


def _check_sample(batch: Batch, step: StepSpec, sample_id: str, errors: dict[str, str]) -> None:
    """The sample ID names this batch: its number, or a container of the step's kinds."""
    kinds = _container_kinds(step)
    names = [batch.batch_number, *(c.code for c in batch.containers if c.kind in kinds)]
    given = _compact(sample_id)
    if not any(_compact(name) in given for name in names):
        errors["file"] = (f"The file's sample ID {sample_id} is not of batch {batch.batch_number}. "
                          + sample_id_help(batch, step))


def window_opens(batch: Batch, definition: ProcessDefinition, step: StepSpec) -> tuple[datetime, str] | None:
    """When a count for ``step`` may first have been taken, and why: day 0 of the step (its
    window's ``after`` step, or the step its culture day counts from) plus the window's first
    day, else the recording of the step before it. None when that step is not recorded."""
    zero = zero_step(definition, step)
    index = definition.index(step.key)
    key = zero if zero is not None else definition.steps[index - 1].key if index else None
    entries = [e for e in batch.entries if e.step_key == key]
    if not entries:
        return None
    title = definition.step(key).title
    if zero is None:
        return entries[-1].performed_at, f"{title} was recorded then"
    day = step.window.min_days if step.window and step.window.min_days else 0
    opened = entries[0].performed_at + timedelta(days=day)
    return opened, (f"culture day {day} after {title}" if day else f"{title} was recorded then")


def _check_time(batch: Batch, definition: ProcessDefinition, step: StepSpec, measured_at: datetime,
                now: datetime, errors: dict[str, str]) -> None:
    zone = lab_timezone()
    when = format_datetime(measured_at, zone)
    if measured_at > now + CLOCK_SKEW:
        errors["file"] = (f"The file says the count was measured at {when}, later than now "
                          f"({format_datetime(now, zone)}): check the counter's clock and export again.")
        return
    opens = window_opens(batch, definition, step)
    if opens is not None and measured_at < opens[0]:
        errors["file"] = (f"The file says the count was measured at {when}, before {step.title} could be "
                          f"counted: its window opens at {format_datetime(opens[0], zone)} ({opens[1]}). "
                          "This is not this step's count.")


def _check_new(batch: Batch, digest: str) -> None:
    earlier = db.session.scalar(
        select(Submission).join(Attachment, Submission.attachment_id == Attachment.id)
        .where(Submission.batch_id == batch.id, Attachment.sha256 == digest, Submission.status != "withdrawn")
        .order_by(Submission.id).limit(1))
    if earlier is not None:
        raise DuplicateFile(f"This file was already imported for batch {batch.batch_number}: submission "
                            f"{earlier.id} ({earlier.status}, {format_datetime(earlier.submitted_at, lab_timezone())}"
                            f"). Nothing was saved; withdraw that submission first to import the file again.")
