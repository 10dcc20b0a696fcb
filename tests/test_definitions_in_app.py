"""Starting a batch when no process version is approved, or a file on disk is malformed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Batch
from workflows.definition import DEFINITIONS_DIR

pytestmark = pytest.mark.requirements("A11-10", "PROC-2")

SOURCE = DEFINITIONS_DIR / "cd19_car_t_v1.toml"


def _register(client) -> None:
    response = client.post("/patients/new", data={"patient_ref": "SLE-11", "initials": "AB",
                                                   "date_of_birth": "1980-02-03", "weight_kg": "61.5",
                                                   "indication": "Systemic lupus erythematosus"})
    assert response.status_code == 302


def test_a_malformed_file_on_disk_changes_no_batch_start(app: Flask, users, login, tmp_path: Path) -> None:
    """New batches start under the approved version kept in the database: a file on disk,
    broken or not, is used only once imported and approved (change control)."""
    broken = tmp_path / "cd19_car_t_v1.toml"
    shutil.copy(SOURCE, broken)
    broken.write_text(broken.read_text().replace('key = "receipt"', 'key = "Receipt step"', 1))
    app.config["WORKFLOW_DIR"] = str(tmp_path)
    client = login("super1")
    _register(client)
    response = client.post("/patients/SLE-11/batches")
    assert response.status_code == 302
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Batch)) == 1


@pytest.fixture
def nothing_approved(app: Flask, tmp_path: Path) -> None:
    """A lab whose shipped definitions were never approved (an empty WORKFLOW_DIR when users are made)."""
    app.config["WORKFLOW_DIR"] = str(tmp_path)


def test_no_approved_version_refuses_batch_start(app: Flask, nothing_approved, users, login) -> None:
    client = login("super1")
    _register(client)
    response = client.post("/patients/SLE-11/batches")
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "no process version is approved and effective" in page
    assert "approve-shipped-processes" in page
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Batch)) == 0
