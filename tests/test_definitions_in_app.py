"""Starting a batch when the process definition on disk is missing or malformed."""

from __future__ import annotations

import shutil
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import Batch
from workflows.definition import DEFINITIONS_DIR

SOURCE = DEFINITIONS_DIR / "cd19_car_t_v1.toml"


def _register(client) -> None:
    response = client.post("/patients/new", data={"patient_ref": "SLE-11", "initials": "AB",
                                                   "date_of_birth": "1980-02-03", "weight_kg": "61.5",
                                                   "indication": "Systemic lupus erythematosus"})
    assert response.status_code == 302


def test_malformed_definition_refuses_batch_start_naming_file_and_reason(
        app: Flask, users, login, tmp_path: Path) -> None:
    broken = tmp_path / "cd19_car_t_v1.toml"
    shutil.copy(SOURCE, broken)
    broken.write_text(broken.read_text().replace('key = "receipt"', 'key = "Receipt step"', 1))
    app.config["WORKFLOW_DIR"] = str(tmp_path)
    client = login("super1")
    _register(client)
    response = client.post("/patients/SLE-11/batches")
    page = response.get_data(as_text=True)
    assert response.status_code == 409
    assert "cd19_car_t_v1.toml" in page and "Receipt step" in page
    assert "check-workflows" in page
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Batch)) == 0


def test_no_definition_installed_refuses_batch_start(app: Flask, users, login, tmp_path: Path) -> None:
    app.config["WORKFLOW_DIR"] = str(tmp_path)
    client = login("super1")
    _register(client)
    response = client.post("/patients/SLE-11/batches")
    assert response.status_code == 409
    assert "no definition of process cd19-car-t" in response.get_data(as_text=True)
