"""Bulk export of executed batch records to a ZIP, and checking such a ZIP later.

Which batches: every batch started, or changed (any entry in its audit trail), from
``since`` 00:00 to ``until`` 24:00 UTC; taking copies (downloads, issued records, audit
exports) is not a change. The ZIP holds, per batch, ``records/<batch>.pdf`` (the record as
printed) and ``records/<batch>.json`` (the same record as its canonical JSON, so that
file's SHA-256 is the record's digest; a ``*`` check character is written ``_`` in file
names), and ``manifest.json``: the format, when and which range was exported, the SHA-256
of every other file and each batch's digest. The manifest's own SHA-256 is logged as the
export's download, so that verify-export can tell a manifest this CellTrail wrote from an
edited one.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Self

from sqlalchemy import or_, select

from lab.extensions import db
from lab.models import AuditEvent, Batch, Download
from lab.services.audit_trail import EARLIEST
from lab.services.batch_record import COPY_TABLES
from lab.services.downloads import record_download
from lab.services.record_issue import issue_record, snapshot, verify_digest
from lab.services.record_rendering import RecordRenderer, Rendered, Rendering, UnprintableRecord
from labels.digest import sha256_hex
from labels.record_data import Issue

FORMAT = "celltrail/record-export/1"
MANIFEST = "manifest.json"
EXPORTER = "the command line (export-records)"
SELECTION = "batches started, or changed (any audit trail entry), from since 00:00 to until 24:00 UTC"


class ExportRefused(Exception):
    """The export cannot be written, or the ZIP does not check out; the message says why."""


def check_range(since: date, until: date, *, today: date) -> None:
    """Refuse a backwards range, or one reaching before 2000 or after tomorrow."""
    if until < since:
        raise ExportRefused(f"The range is backwards: --until {until} is before --since {since}.")
    if since < EARLIEST:
        raise ExportRefused(f"--since {since} is before {EARLIEST}: no CellTrail record is that old; check the year.")
    if until > today + timedelta(days=1):
        raise ExportRefused(f"--until {until} is in the future (today is {today}, UTC); check the year.")


def check_destination(out: Path) -> None:
    """Refuse a path that is not a new .zip file in an existing, writable folder."""
    if out.suffix.lower() != ".zip":
        raise ExportRefused(f"{out}: the export is a ZIP file; give a name ending in .zip.")
    if out.exists():
        raise ExportRefused(f"{out} already exists: an export never overwrites a file; choose a new name.")
    folder = out.parent
    if not folder.is_dir():
        raise ExportRefused(f"Cannot write {out}: the folder {folder} does not exist.")
    if not os.access(folder, os.W_OK):
        raise ExportRefused(f"Cannot write {out}: the folder {folder} is not writable.")


def select_batches(since: date, until: date) -> list[int]:
    """The ids of the batches started, or with an audit trail entry, between the two UTC dates inclusive."""
    start = datetime.combine(since, time(), UTC)
    end = datetime.combine(until + timedelta(days=1), time(), UTC)
    changed = select(AuditEvent.batch_id).where(
        AuditEvent.occurred_at >= start, AuditEvent.occurred_at < end, AuditEvent.batch_id.is_not(None),
        AuditEvent.table_name.not_in(COPY_TABLES))
    started = (Batch.created_at >= start) & (Batch.created_at < end)
    return list(db.session.scalars(select(Batch.id).where(or_(started, Batch.id.in_(changed))).order_by(Batch.id)))


def file_stem(batch_number: str) -> str:
    return f"records/{batch_number.replace('*', '_')}"


class ExportWriter:
    """An export being written: each record goes into the ZIP (under a temporary name beside
    ``out``) as soon as it is rendered and is then let go, so memory does not grow with the
    number of batches; only names and digests are kept, for the manifest written last.

    Use it as a context manager: leaving it without :meth:`finish` (a refusal, an error) removes
    the temporary file. Raises ExportRefused when the file cannot be written.
    """

    def __init__(self, out: Path, *, since: date, until: date, now: datetime, jobs: int = 1) -> None:
        self.out, self.since, self.until, self.now = out, since, until, now
        self.files: dict[str, str] = {}  # name -> SHA-256
        self.records: list[dict[str, str]] = []
        self._renderer = RecordRenderer(jobs)
        handle, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
        self.temporary = Path(name)
        self._raw = os.fdopen(handle, "wb")
        self._archive = zipfile.ZipFile(self._raw, "w", zipfile.ZIP_DEFLATED)
        self._finished = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._renderer.close()
        if not self._finished:
            with suppress(OSError):
                self._archive.close()
            with suppress(OSError):
                self._raw.close()
            self.temporary.unlink(missing_ok=True)

    def add(self, batch: Batch) -> None:
        """Log ``batch``'s record as issued in this export (flushes) and have it rendered; it goes
        into the ZIP, in the order added, once rendered. Raises ExportRefused (a record that cannot
        be printed is named when its turn comes, at a later add or at finish)."""
        self._renderer.collect()  # what the batches before left
        copy = snapshot(batch)
        self._renderer.submit(Rendering(batch.batch_number, copy.digest, copy.canonical),
                              copy.record, Issue(EXPORTER, self.now, verb="Exported"))
        issue_record(batch, copy, actor=None, now=self.now, detail=f"in export {self.out.name}")
        self._store(self._renderer.ready())

    def _store(self, rendered: Iterator[Rendered]) -> None:
        try:
            for done in rendered:
                self._write_record(done)
        except UnprintableRecord as error:
            raise ExportRefused(f"The record of batch {error.batch_number} cannot be printed: {error.reason}") from None

    def _write_record(self, done: Rendered) -> None:
        stem = file_stem(done.batch_number)
        self._write(f"{stem}.pdf", done.pdf)
        self._write(f"{stem}.json", done.canonical)
        self.records.append({"batch": done.batch_number, "digest": done.digest, "pdf": f"{stem}.pdf",
                             "json": f"{stem}.json"})

    def finish(self) -> Path:
        """Write the manifest, close the ZIP and log the export (flushes). Returns the temporary
        file, for the caller to rename to ``out`` and then commit."""
        self._store(self._renderer.drain())
        manifest = json.dumps({
            "format": FORMAT,
            "exported_at": self.now.astimezone(UTC).isoformat(),
            "selection": {"since": self.since.isoformat(), "until": self.until.isoformat(), "rule": SELECTION},
            "files": self.files,
            "records": self.records,
        }, indent=2, sort_keys=True).encode("utf-8")
        self._write(MANIFEST, manifest, listed=False)
        try:
            self._archive.close()
            self._raw.close()
        except OSError as error:
            raise self._refusal(error) from None
        self._finished = True
        record_download(None, "record_export", digest=sha256_hex(manifest), now=self.now,
                        detail=f"{self.out.name}: {len(self.records)} batch records, {self.since} to {self.until}")
        return self.temporary

    def _write(self, name: str, data: bytes, *, listed: bool = True) -> None:
        try:
            self._archive.writestr(name, data)
        except OSError as error:
            raise self._refusal(error) from None
        if listed:
            self.files[name] = sha256_hex(data)

    def _refusal(self, error: OSError) -> ExportRefused:
        return ExportRefused(f"Cannot write {self.out}: {error.strerror or error}.")


@dataclass(frozen=True)
class RecordCheck:
    batch_number: str
    digest: str
    is_current: bool
    changes: int


def _manifest(archive: zipfile.ZipFile) -> tuple[bytes, dict[str, Any]]:
    try:
        raw = archive.read(MANIFEST)
    except KeyError:
        raise ExportRefused(f"The ZIP has no {MANIFEST}: it is not a CellTrail export.") from None
    try:
        manifest = json.loads(raw)
    except ValueError as error:
        raise ExportRefused(f"{MANIFEST} is not valid JSON ({error}): it was altered.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportRefused(f"{MANIFEST} is not a CellTrail export manifest (format {FORMAT}).")
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("records"), list):
        raise ExportRefused(f"{MANIFEST} lacks its list of files or records: it was altered.")
    return raw, manifest


def _check_files(archive: zipfile.ZipFile, listed: dict[str, str]) -> None:
    present = [name for name in archive.namelist() if name != MANIFEST]
    for name in present:
        if name not in listed:
            raise ExportRefused(f"{name} is in the ZIP but not in {MANIFEST}: a file was added.")
    for name, expected in listed.items():
        if name not in present:
            raise ExportRefused(f"{name} is listed in {MANIFEST} but missing from the ZIP.")
        actual = sha256_hex(archive.read(name))
        if actual != expected:
            raise ExportRefused(f"{name} does not match {MANIFEST} (sha256 {actual}, listed {expected}): "
                                "the file was altered.")


def _check_record(archive: zipfile.ZipFile, entry: Any) -> RecordCheck:
    if not isinstance(entry, dict) or not {"batch", "digest", "json"} <= entry.keys():
        raise ExportRefused(f"{MANIFEST} lists a record without its batch, digest and file: it was altered.")
    batch_number, digest = str(entry["batch"]), str(entry["digest"])
    if sha256_hex(archive.read(str(entry["json"]))) != digest:
        raise ExportRefused(f"{entry['json']} does not hash to the digest {MANIFEST} gives batch {batch_number}.")
    found = verify_digest(digest)
    if found is None:
        raise ExportRefused(f"The record of batch {batch_number} (sha256 {digest}) is unknown: this CellTrail "
                            "never issued it.")
    if found.issued.batch.batch_number != batch_number or not found.stored_intact:
        raise ExportRefused(f"The record sha256 {digest} does not belong to batch {batch_number} in this "
                            "CellTrail, or CellTrail's stored copy of it was altered.")
    return RecordCheck(batch_number, digest, found.is_current, len(found.changes))


def verify_export(path: Path) -> list[RecordCheck]:
    """Check every file of the ZIP against its manifest, the manifest against the export
    log, and each record against the database. Raises ExportRefused naming the first problem."""
    if not path.is_file():
        raise ExportRefused(f"{path}: no such file.")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ExportRefused(f"{path} is not a ZIP file.") from None
    with archive:
        raw, manifest = _manifest(archive)
        _check_files(archive, manifest["files"])
        logged = select(Download.id).where(Download.kind == "record_export", Download.digest == sha256_hex(raw))
        if db.session.scalar(logged) is None:
            raise ExportRefused(f"{MANIFEST} was not written by this CellTrail (no export with its SHA-256 was "
                                "logged): the manifest was altered, or the ZIP comes from another system.")
        return [_check_record(archive, entry) for entry in manifest["records"]]
