"""flask --app lab export-records and verify-export: the round trip, a tampered ZIP, and refusals."""

from __future__ import annotations

import gc
import hashlib
import json
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Batch, Download, IssuedRecord, utcnow
from lab.services.deviations import report_deviation
from lab.services.exports import ExportWriter
from lab.services.signatures import Credentials
from lab.services.steps import correct_value
from tests.factories import PASSWORD, user
from tests.readback import page_texts

pytestmark = pytest.mark.requirements("P11-10b", "P11-10c", "A11-17")

DEMO_PASSWORD = "demo-password-42"
TODAY = datetime.now(UTC).date()


@pytest.fixture
def demo(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["seed-demo", "--password", DEMO_PASSWORD])
    assert result.exit_code == 0, result.output


def export(runner: FlaskCliRunner, out: Path, since: object = TODAY - timedelta(days=30), until: object = TODAY):
    return runner.invoke(args=["export-records", "--since", str(since), "--until", str(until), "--out", str(out)])


@pytest.fixture
def exported(app: Flask, make_batch, runner: FlaskCliRunner, tmp_path: Path) -> Path:
    """An export of two batches: one manufactured, one received only."""
    make_batch()
    make_batch("enrichment", ref="SLE-02")
    out = tmp_path / "records.zip"
    result = export(runner, out)
    assert result.exit_code == 0, result.output
    return out


def nothing_written(app: Flask, folder: Path) -> bool:
    with app.app_context():
        logged = db.session.scalar(select(func.count()).select_from(Download))
    return logged == 0 and list(folder.iterdir()) == []


def test_the_export_holds_each_batchs_record_as_pdf_and_json_with_a_manifest(app, demo, runner, tmp_path):
    out = tmp_path / "records.zip"
    result = export(runner, out)
    assert result.exit_code == 0, result.output
    with app.app_context():  # every demo batch was started or changed in the last 30 days
        count = db.session.scalar(select(func.count()).select_from(Batch))
    assert count == 10
    assert f"Rendering {count} batch records" in result.output  # the progress bar's label
    assert f"Exported the records of {count} batches to {out}" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["records.zip"]  # no temporary file left
    with zipfile.ZipFile(out) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["format"] == "celltrail/record-export/1"
        assert manifest["selection"]["since"] == str(TODAY - timedelta(days=30))
        assert set(archive.namelist()) == {"manifest.json", *manifest["files"]}
        for name, digest in manifest["files"].items():
            assert hashlib.sha256(archive.read(name)).hexdigest() == digest, name
        assert len(manifest["records"]) == count
        with app.app_context():
            numbers = set(db.session.scalars(select(Batch.batch_number)))
        assert {r["batch"] for r in manifest["records"]} == numbers
        for record in manifest["records"]:
            data = archive.read(record["json"])
            assert hashlib.sha256(data).hexdigest() == record["digest"]  # the JSON is the digested record
            assert json.loads(data)["record"]["batch_number"] == record["batch"]
            text = " ".join(page_texts(archive.read(record["pdf"])))
            assert f"Record digest SHA-256 {record['digest']}" in text
            assert "Exported by the command line (export-records) at" in text
        assert "records/B-A9999-26-00004-_.pdf" in manifest["files"]  # the * check character, file-name safe
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(IssuedRecord)) == count
        [logged] = db.session.scalars(select(Download).where(Download.kind == "record_export")).all()
        assert logged.digest == hashlib.sha256(zipfile.ZipFile(out).read("manifest.json")).hexdigest()
        assert logged.downloaded_by_id is None


def test_verify_export_says_current_then_superseded_after_a_correction(app, exported, runner):
    result = runner.invoke(args=["verify-export", str(exported)])
    assert result.exit_code == 0, result.output
    assert "2 records issued by this CellTrail, 2 current, 0 superseded since" in result.output
    with app.app_context():
        batch = db.session.scalars(select(Batch).where(Batch.state == "in_process")).one()
        number = batch.batch_number
        [receipt] = batch.entries
        correct_value(batch, receipt, "volume_ml", "181", reason="Scale re-read.", expected_version=None,
                      actor=user("tech1"), credentials=Credentials(PASSWORD), now=utcnow())
        db.session.commit()
    result = runner.invoke(args=["verify-export", str(exported)])
    assert result.exit_code == 0, result.output
    assert f"{number}  sha256 " in result.output and "superseded: " in result.output
    assert "1 current, 1 superseded since" in result.output


def _rewrite(source: Path, target: Path, change: dict[str, bytes | None]) -> None:
    """Copy the ZIP with members replaced (bytes), removed (None) or added."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            if name not in change:
                new.writestr(name, old.read(name))
        for name, data in change.items():
            if data is not None:
                new.writestr(name, data)


def _first_record(path: Path) -> tuple[dict, str, bytes]:
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        name = manifest["records"][0]["json"]
        return manifest, name, archive.read(name)


def test_a_tampered_export_is_detected_naming_the_first_problem(app, exported, runner, tmp_path):
    manifest, name, data = _first_record(exported)
    altered = data.replace(b'"state":"', b'"state":"Released; ', 1)
    cases = {
        "file.zip": ({name: altered}, f"{name} does not match manifest.json"),
        "extra.zip": ({"records/notes.txt": b"added later"}, "records/notes.txt is in the ZIP but not in manifest.json"),
        "missing.zip": ({name: None}, f"{name} is listed in manifest.json but missing from the ZIP"),
    }
    # The altered record with a manifest made to match it: the manifest itself is then unknown.
    forged = json.loads(json.dumps(manifest))
    forged["files"][name] = hashlib.sha256(altered).hexdigest()
    cases["manifest.zip"] = ({name: altered, "manifest.json": json.dumps(forged).encode()},
                             "manifest.json was not written by this CellTrail")
    for file, (change, problem) in cases.items():
        target = tmp_path / file
        _rewrite(exported, target, change)
        result = runner.invoke(args=["verify-export", str(target)])
        assert result.exit_code == 1, (file, result.output)
        assert f"NOT VERIFIED: {problem}" in result.output, (file, result.output)
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"PK but not really")
    for path, problem in ((not_zip, "is not a ZIP file"), (tmp_path / "absent.zip", "no such file")):
        result = runner.invoke(args=["verify-export", str(path)])
        assert result.exit_code == 1 and problem in result.output, result.output


@pytest.mark.parametrize(("since", "until", "reason"), [
    (TODAY, TODAY - timedelta(days=1), "The range is backwards"),
    ("1999-12-31", TODAY, "is before 2000-01-01: no CellTrail record is that old"),
    (TODAY, TODAY + timedelta(days=400), "is in the future"),
])
def test_a_backwards_or_absurd_range_is_refused_and_nothing_is_written(app, users, runner, tmp_path, since, until,
                                                                         reason):
    out = tmp_path / "records.zip"
    result = export(runner, out, since, until)
    assert result.exit_code == 1
    assert result.output.startswith("Refused: ") and reason in result.output
    assert "Nothing was written." in result.output
    assert nothing_written(app, tmp_path)


def test_a_range_without_batches_is_refused_and_nothing_is_written(app, make_batch, runner, tmp_path):
    make_batch("enrichment")
    result = export(runner, tmp_path / "records.zip", "2001-01-01", "2001-01-31")
    assert result.exit_code == 1
    assert "Refused: No batch was started or changed from 2001-01-01 to 2001-01-31 (UTC)." in result.output
    assert nothing_written(app, tmp_path)


def test_a_malformed_date_is_refused(app, users, runner, tmp_path):
    result = export(runner, tmp_path / "records.zip", "25/11/2026")
    assert result.exit_code == 2
    assert "'25/11/2026' does not match the format '%Y-%m-%d'" in result.output
    assert nothing_written(app, tmp_path)


def test_a_path_that_cannot_be_written_is_refused_and_nothing_is_written(app, users, runner, tmp_path):
    existing = tmp_path / "existing.zip"
    existing.write_bytes(b"an earlier export")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for out, reason in ((tmp_path / "no-such-folder" / "records.zip", "the folder"),
                        (a_file / "records.zip", "does not exist"),
                        (existing, "already exists: an export never overwrites a file"),
                        (tmp_path / "records.pdf", "give a name ending in .zip")):
        result = export(runner, out)
        assert result.exit_code == 1, result.output
        assert reason in result.output and "Nothing was written." in result.output
    assert existing.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "existing.zip"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Download)) == 0


def test_the_records_drawn_on_several_processes_are_those_drawn_on_one_in_the_same_order(app, demo, tmp_path):
    """export-records draws the PDFs on worker processes (--jobs): the same bytes, in the order added."""
    now = utcnow()
    exports: dict[int, list[tuple[str, bytes]]] = {}
    with app.app_context():
        numbers = db.session.scalars(select(Batch.batch_number).order_by(Batch.id)).all()
        for jobs in (1, 3):
            out = tmp_path / f"records-{jobs}.zip"
            with ExportWriter(out, since=TODAY, until=TODAY, now=now, jobs=jobs) as writer:
                for number in numbers:
                    writer.add(db.session.scalars(select(Batch).filter_by(batch_number=number)).one())
                written = writer.finish()
            with zipfile.ZipFile(written) as archive:
                exports[jobs] = [(name, archive.read(name)) for name in archive.namelist() if name != "manifest.json"]
            db.session.rollback()
    assert [name for name, _ in exports[1]] == [
        f"records/{number.replace('*', '_')}.{kind}" for number in numbers for kind in ("pdf", "json")]
    assert exports[3] == exports[1]


def test_while_records_are_drawn_on_other_processes_garbage_is_collected_only_by_the_exporting_thread(
        app, demo, tmp_path):
    """The worker pool's helper threads never start a collection (on CPython 3.11 one could free
    objects the exporting thread was using: a segmentation fault); the exporting thread collects
    between batches, and automatic collections are back on once the export is done."""
    collections: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(threading.get_ident())

    with app.app_context():
        batches = db.session.scalars(select(Batch).order_by(Batch.id)).all()
        assert len(batches) >= 3
        gc.callbacks.append(note)
        try:
            with ExportWriter(tmp_path / "records.zip", since=TODAY, until=TODAY, now=utcnow(), jobs=2) as writer:
                automatic = []
                for batch in batches:
                    writer.add(batch)
                    automatic.append(gc.isenabled())
                    for _ in range(3000):  # cycles enough to set off automatic collections, were they on
                        cycle: list[object] = []
                        cycle.append(cycle)
                writer.finish()
        finally:
            gc.callbacks.remove(note)
        db.session.rollback()
    assert automatic == [False] * len(batches)
    assert gc.isenabled()
    assert len(collections) >= len(batches) - 1  # one before each batch but the first
    assert set(collections) == {threading.get_ident()}


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_record_the_fonts_cannot_print_stops_the_export_naming_its_batch(app, demo, runner, tmp_path, jobs):
    with app.app_context():
        batch = db.session.scalars(select(Batch).order_by(Batch.id.desc()).limit(1)).one()
        number = batch.batch_number
        report_deviation(batch, title="Bag label torn \U0001F4A5", description="Seen at the incubator.", actor=user("tech1"))
        db.session.commit()
    result = runner.invoke(args=["export-records", "--since", str(TODAY - timedelta(days=30)), "--until", str(TODAY),
                                 "--out", str(tmp_path / "records.zip"), "--jobs", str(jobs)])
    assert result.exit_code == 1, result.output
    assert f"Refused: The record of batch {number} cannot be printed: " in result.output
    assert "Nothing was written." in result.output
    assert nothing_written(app, tmp_path)
