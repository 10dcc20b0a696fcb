"""A batch pins the exact process definition it started with; editing the file changes no batch, and a
new version reaches new batches only through change control (stored, approved, effective)."""

from __future__ import annotations

import hashlib
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Batch, Deviation, ProcessDefinitionRecord, utcnow
from lab.services.processes import ProcessConflict, approve, import_definition, lab_date, parse_upload
from lab.services.signatures import Credentials
from tests.factories import (
    PASSWORD,
    entries,
    form_data,
    get_batch,
    page_text,
    patient,
    signature,
    signed_in,
    step_values,
    user,
)
from workflows.definition import DEFINITIONS_DIR

pytestmark = pytest.mark.requirements("PROC-2", "A11-10")

ORIGINAL = DEFINITIONS_DIR / "cd19_car_t_v1.toml"
#: The receipt volume's acceptance limit (>= 50 mL), the only limit_min of 50 in the file.
VOLUME_LIMIT = re.compile(r"^(\s*limit_min\s*=\s*)50\b.*$", re.MULTILINE)
VERSION = re.compile(r"^version\s*=\s*1\s*$", re.MULTILINE)



def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit(path: Path, *, volume_limit: int, version: int | None = None) -> None:
    """Change the receipt's volume limit and, when given, the version number."""
    text = path.read_text(encoding="utf-8")
    assert len(VOLUME_LIMIT.findall(text)) == 1 and len(VERSION.findall(text)) == 1
    text = VOLUME_LIMIT.sub(rf"\g<1>{volume_limit}", text)
    if version is not None:
        text = VERSION.sub(f"version = {version}", text)
    path.write_text(text, encoding="utf-8")


def change_control(app: Flask, path: Path) -> None:
    """The edited file through change control: imported by admin, approved by qa1 effective today."""
    with app.app_context():
        version = import_definition(parse_upload(path.read_bytes(), path.name), actor=user("admin"), origin="imported")
        approve(version, effective_on=lab_date(utcnow()), actor=user("qa1"), credentials=Credentials(PASSWORD, "qa1"))
        db.session.commit()


@pytest.fixture
def workflow_file(app: Flask, tmp_path: Path) -> Path:
    """A copy of the packaged definition in a folder of its own, which new batches start from."""
    copy = tmp_path / ORIGINAL.name
    shutil.copyfile(ORIGINAL, copy)
    app.config["WORKFLOW_DIR"] = str(tmp_path)
    return copy


@pytest.fixture
def tech(login: Any, users: Any, inventory: Any) -> FlaskClient:
    return login("tech1")


def start(app: Flask, client: FlaskClient, ref: str) -> str:
    """Register patient ``ref`` and start a batch for them over HTTP; the batch number."""
    response = client.post("/patients/new", data={"patient_ref": ref, "initials": "AB", "date_of_birth": "1980-05-01",
                                                  "weight_kg": "70", "indication": "SLE"})
    assert response.status_code == 302
    response = client.post(f"/patients/{ref}/batches")
    assert response.status_code == 302, page_text(response)
    with app.app_context():
        return patient(ref).batches[-1].batch_number


def record_receipt(app: Flask, client: FlaskClient, number: str, *, comment: str = "", **overrides: str) -> Any:
    with app.app_context():
        batch = get_batch(number)
        raw = step_values("receipt", when=datetime.now(UTC), batch=batch, **overrides)
        data = form_data(raw, comment=comment, batch_version=batch.version)
    return client.post(f"/batches/{number}/steps/receipt", data={**data, **signature(signed_in(app, client))})


def test_a_batch_pins_its_definition(app, workflow_file, tech):
    number = start(app, tech, "SLE-01")
    with app.app_context():
        record = get_batch(number).definition
        assert (record.key, record.version, record.source_name) == ("cd19-car-t", 1, "cd19_car_t_v1.toml")
        assert record.sha256 == sha256(workflow_file) == sha256(ORIGINAL)
        assert record.source_text == workflow_file.read_text(encoding="utf-8")
        assert record.stored_at.tzinfo is not None
    page = page_text(tech.get(f"/batches/{number}"))
    assert "cd19-car-t</span> version 1" in page
    assert f"sha256 {sha256(ORIGINAL)}" in page


def test_a_new_version_changes_new_batches_only(app, workflow_file, tech):
    first = start(app, tech, "SLE-01")
    v1_sha, v1_text = sha256(workflow_file), workflow_file.read_text(encoding="utf-8")
    edit(workflow_file, volume_limit=100, version=2)
    v2_sha = sha256(workflow_file)
    assert v2_sha != v1_sha
    unapproved = start(app, tech, "SLE-03")  # a file on disk is used by no batch until approved
    with app.app_context():
        assert get_batch(unapproved).definition.sha256 == v1_sha
    change_control(app, workflow_file)
    second = start(app, tech, "SLE-02")
    with app.app_context():
        one, two = get_batch(first).definition, get_batch(second).definition
        assert (one.version, one.sha256, one.source_text) == (1, v1_sha, v1_text)
        assert (two.version, two.sha256) == (2, v2_sha)
        assert two.source_text == workflow_file.read_text(encoding="utf-8")
        assert db.session.scalar(select(func.count()).select_from(ProcessDefinitionRecord)) == 2

    # 80 mL is within v1's limit (>= 50 mL) but not v2's (>= 100 mL)
    form = page_text(tech.get(f"/batches/{first}/steps/receipt"))
    assert "Limit: ≥ 50 mL" in form
    response = record_receipt(app, tech, first, volume_ml="80")
    assert response.status_code == 302
    with app.app_context():
        value = next(v for v in entries(first, "receipt")[0].values if v.field_key == "volume_ml")
        assert (value.text, value.out_of_limit, value.limit_text) == ("80", False, "≥ 50 mL")
        assert get_batch(first).deviations == []

    form = page_text(tech.get(f"/batches/{second}/steps/receipt"))
    assert "Limit: ≥ 100 mL" in form
    response = record_receipt(app, tech, second, volume_ml="80")
    assert response.status_code == 422
    assert "Volume 80 mL is below the limit of 100 mL." in page_text(response)
    response = record_receipt(app, tech, second, volume_ml="80", comment="Small collection accepted by QA.")
    assert response.status_code == 302
    with app.app_context():
        value = next(v for v in entries(second, "receipt")[0].values if v.field_key == "volume_ml")
        assert (value.out_of_limit, value.limit_text) == (True, "≥ 100 mL")
        [deviation] = get_batch(second).deviations
        assert deviation.field_key == "volume_ml"
        assert db.session.scalar(select(func.count()).select_from(Deviation)) == 1

    page = page_text(tech.get(f"/batches/{first}"))
    assert "cd19-car-t</span> version 1" in page and f"sha256 {v1_sha}" in page
    assert v2_sha not in page
    page = page_text(tech.get(f"/batches/{second}"))
    assert "cd19-car-t</span> version 2" in page and f"sha256 {v2_sha}" in page


def test_corrections_on_an_old_batch_check_its_own_version(app, workflow_file, tech):
    first = start(app, tech, "SLE-01")
    assert record_receipt(app, tech, first).status_code == 302
    edit(workflow_file, volume_limit=100, version=2)
    with app.app_context():
        entry_id, version = entries(first, "receipt")[0].id, get_batch(first).version
    response = tech.post(f"/batches/{first}/entries/{entry_id}/fields/volume_ml/correct",
                         data={"value": "80", "reason": "Re-weighed.", "batch_version": version,
                               **signature(signed_in(app, tech))})
    assert response.status_code == 302
    with app.app_context():
        # 80 mL is within version 1's limit: no limit deviation (the apheresis bag labelled 180 mL is
        # named for reconciliation, as every correction that changes a container's volume is)
        assert [d.source for d in get_batch(first).deviations] == ["correction"]


def test_the_newest_approved_version_is_used_not_the_newest_file(app, workflow_file, tech):
    newer = workflow_file.with_name("cd19_car_t_v2.toml")
    shutil.copyfile(workflow_file, newer)
    edit(newer, volume_limit=100, version=2)
    number = start(app, tech, "SLE-01")
    with app.app_context():
        assert get_batch(number).definition.version == 1
    change_control(app, newer)
    number = start(app, tech, "SLE-02")
    with app.app_context():
        record = get_batch(number).definition
        assert (record.version, record.sha256, record.source_name) == (2, sha256(newer), "cd19_car_t_v2.toml")


def test_an_edit_without_a_new_version_number_is_refused(app, workflow_file, tech):
    first = start(app, tech, "SLE-01")
    edit(workflow_file, volume_limit=100)
    with pytest.raises(ProcessConflict, match="already stored with other content"):
        change_control(app, workflow_file)
    second = start(app, tech, "SLE-02")  # the edited file changes nothing: new batches keep the approved text
    with app.app_context():
        assert get_batch(second).definition.sha256 == sha256(ORIGINAL)
        assert db.session.scalar(select(func.count()).select_from(Batch)) == 2
        assert db.session.scalar(select(func.count()).select_from(ProcessDefinitionRecord)) == 1
        assert patient("SLE-01").batches[0].batch_number == first
    # the running batch is untouched and still records under version 1
    assert record_receipt(app, tech, first, volume_ml="80").status_code == 302
    page = page_text(tech.get(f"/batches/{first}"))
    assert f"sha256 {sha256(ORIGINAL)}" in page
