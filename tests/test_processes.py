"""Process versions under change control (issue 13, item 3): a definition is stored as a draft
(upload page, ``import-process``), its page says what changed, QA approves it with a signature
and an effective date, and from then new batches of its product start under it; running
batches keep theirs. The shipped definitions are approved once on installation."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select

from lab import audit
from lab.extensions import db
from lab.models import (
    AuditEvent,
    Batch,
    ProcessDefinitionRecord,
    ProcessVersion,
    Signature,
    SigningFailure,
    User,
    utcnow,
)
from lab.services.processes import approve_shipped, effective_version, lab_date, status_of
from lab.services.signatures import Credentials, record_signatures
from tests.factories import PASSWORD, get_batch, page_text, patient, signature, step_values, user
from workflows.definition import DEFINITIONS_DIR

pytestmark = pytest.mark.requirements("A11-10")

KEY = "cd19-car-t"
NHL = "cd19-car-t-nhl"
VOLUME_LIMIT = re.compile(r"^(\s*limit_min\s*=\s*)50\b", re.MULTILINE)
VERSION = re.compile(r"^version\s*=\s*(\d+)\s*$", re.MULTILINE)


def current(app: Flask, key: str = KEY) -> tuple[int, str]:
    """The effective version of ``key`` and its text."""
    with app.app_context():
        version = effective_version(key)
        assert version is not None
        return version.version, version.definition.source_text


def next_version(app: Flask, *, volume_limit: int = 60) -> tuple[int, bytes]:
    """The effective definition as its next version, with the receipt volume limit changed."""
    number, text = current(app)
    text = VERSION.sub(f"version = {number + 1}", text, count=1)
    text = VOLUME_LIMIT.sub(rf"\g<1>{volume_limit}", text, count=1)
    return number + 1, text.encode("utf-8")


def counts() -> dict[str, int]:
    """Rows a refused request must not add (a sign-in adds audit entries of its own)."""
    return {model.__name__: db.session.scalar(select(func.count()).select_from(model))
            for model in (ProcessVersion, Signature, Batch, ProcessDefinitionRecord)}


def snapshot(app: Flask) -> dict[str, Any]:
    with app.app_context():
        found = counts()
        found["states"] = [(v.key, v.version, v.approved_at is not None) for v in
                           db.session.scalars(select(ProcessVersion).order_by(ProcessVersion.id))]
        return found


def upload(client: FlaskClient, data: bytes, filename: str = "cd19_car_t_next.toml", reason: str = "Site validation") -> Any:
    from io import BytesIO
    return client.post("/processes/upload", data={"file": (BytesIO(data), filename), "reason": reason},
                       content_type="multipart/form-data")


def approve(client: FlaskClient, app: Flask, version: int, effective_on: str, *, key: str = KEY,
            password: str = PASSWORD) -> Any:
    with client.session_transaction() as session:
        user_id = int(session["_user_id"])
    with app.app_context():
        from lab.models import User
        username = db.session.get(User, user_id).username
    return client.post(f"/processes/{key}/{version}/approve",
                       data={"effective_on": effective_on, **signature(username, password)})


def today(app: Flask) -> str:
    with app.app_context():
        return lab_date(utcnow()).isoformat()


def register(client: FlaskClient, ref: str) -> None:
    response = client.post("/patients/new", data={"patient_ref": ref, "initials": "AB", "date_of_birth": "1980-05-01",
                                                  "weight_kg": "70", "indication": "Lymphoma"})
    assert response.status_code == 302


def start(client: FlaskClient, app: Flask, ref: str, **data: str) -> str:
    register(client, ref)
    response = client.post(f"/patients/{ref}/batches", data=data)
    assert response.status_code == 302, page_text(response)
    with app.app_context():
        return patient(ref).batches[-1].batch_number


@pytest.fixture
def draft(app: Flask, users: dict[str, int], login: Any) -> int:
    """The next version of cd19-car-t uploaded by the administrator: a draft."""
    number, data = next_version(app)
    response = upload(login("admin"), data)
    assert response.status_code == 302, page_text(response)
    return number


@pytest.fixture
def both_products(app: Flask, users: dict[str, int]) -> None:
    """The lymphoma product approved too, as a lab running both does."""
    with app.app_context():
        approve_shipped(actor=user("qa1"), credentials=Credentials(PASSWORD, "qa1"), keys=(NHL,),
                        now=utcnow() - timedelta(days=365))
        db.session.commit()


# --- the list and a version's page ---------------------------------------------------------

def test_the_list_shows_every_version_with_its_status_and_approver(app, draft, login):
    page = page_text(login("tech1").get("/processes/"))
    assert f"Version {draft}" in page and "draft" in page
    assert f"Version {draft - 1}" in page and "effective" in page
    assert "Quentin Assurance" in page  # qa1 approved the shipped version
    assert "Upload a new version" not in page  # only QA or an administrator uploads


def test_a_drafts_page_says_what_changed_and_is_not_used(app, draft, login):
    client = login("qa1")
    page = page_text(client.get(f"/processes/{KEY}/{draft}"))
    assert "draft" in page and f"Against version {draft - 1}" in page
    assert "Step Apheresis receipt (receipt): Volume limit_min 50 → 60 mL" in page
    assert "Site validation" in page and "Ada Admin" in page
    assert "Approve and sign" in page
    number = start(login("tech1"), app, "NHL-01")
    with app.app_context():
        assert get_batch(number).definition.version == draft - 1
    source = client.get(f"/processes/{KEY}/{draft}/definition.toml")
    assert source.status_code == 200 and b"limit_min = 60" in source.data


def test_an_unknown_version_is_404(app, users, login):
    client = login("qa1")
    assert client.get(f"/processes/{KEY}/99").status_code == 404
    assert client.get("/processes/no-such/1").status_code == 404


# --- approval -------------------------------------------------------------------------------

def test_qa_approves_with_a_signature_and_new_batches_use_it_running_ones_keep_theirs(app, draft, login):
    tech = login("tech1")
    running = start(tech, app, "NHL-01")
    response = approve(login("qa1"), app, draft, today(app))
    assert response.status_code == 302, page_text(response)
    with app.app_context():
        approved = db.session.scalar(select(ProcessVersion).where(ProcessVersion.version == draft))
        assert status_of(approved) == "effective"
        previous = db.session.scalar(select(ProcessVersion).where(ProcessVersion.version == draft - 1))
        assert status_of(previous) == "retired"
        [(sig, matches)] = record_signatures(approved)
        assert (sig.meaning, sig.printed_name, matches, sig.batch_id) == ("approved for use", "Quentin Assurance", True, None)
        assert approved.approved_by.username == "qa1"
    tech = login("tech1")
    new = start(tech, app, "NHL-02")
    with app.app_context():
        assert get_batch(new).definition.version == draft
        assert get_batch(running).definition.version == draft - 1
    page = page_text(tech.get("/processes/"))
    assert "retired" in page and "effective" in page
    page = page_text(tech.get(f"/processes/{KEY}/{draft}"))
    assert "Quentin Assurance, approved for use" in page
    # the receipt of the running batch keeps its version's limit (≥ 50 mL), the new one has ≥ 60 mL
    assert "Limit: ≥ 50 mL" in page_text(tech.get(f"/batches/{running}/steps/receipt"))
    assert "Limit: ≥ 60 mL" in page_text(tech.get(f"/batches/{new}/steps/receipt"))


def test_an_approval_dated_later_takes_effect_only_then(app, draft, login):
    with app.app_context():
        tomorrow = (lab_date(utcnow()) + timedelta(days=1)).isoformat()
    assert approve(login("qa1"), app, draft, tomorrow).status_code == 302
    with app.app_context():
        approved = db.session.scalar(select(ProcessVersion).where(ProcessVersion.version == draft))
        assert status_of(approved) == "approved"
        assert status_of(approved, utcnow() + timedelta(days=2)) == "effective"
        assert effective_version(KEY, utcnow() + timedelta(days=2)).version == draft
    number = start(login("tech1"), app, "NHL-01")
    with app.app_context():
        assert get_batch(number).definition.version == draft - 1


def test_verify_audit_checks_the_approval_signature(app, draft, login, runner: FlaskCliRunner):
    assert approve(login("qa1"), app, draft, today(app)).status_code == 302
    result = runner.invoke(args=["verify-audit"])
    assert result.exit_code == 0, result.output


# --- bad input: a clear message, a 4xx, nothing written -------------------------------------

@pytest.mark.requirements("PROC-13")
def test_approving_ones_own_upload_is_refused(app, users, login):
    number, data = next_version(app)
    client = login("qa1")
    assert upload(client, data).status_code == 302
    before = snapshot(app)
    page = page_text(client.get(f"/processes/{KEY}/{number}"))
    assert "You uploaded this version: another QA officer approves it." in page
    response = approve(client, app, number, today(app))
    assert response.status_code == 409
    assert "a second person approves it" in page_text(response)
    assert snapshot(app) == before


@pytest.mark.parametrize("who", ["admin", "super1", "tech1", "qc1", "auditor1"])
def test_only_qa_approves(app, draft, login, who):
    before = snapshot(app)
    response = approve(login(who), app, draft, today(app))
    assert response.status_code == 403
    assert "may approve a process version; you are signed in as" in page_text(response)
    assert snapshot(app) == before


def test_a_wrong_password_approves_nothing_and_is_kept(app, draft, login):
    before = snapshot(app)
    response = approve(login("qa1"), app, draft, today(app), password="wrong-password")
    assert response.status_code == 403
    assert "The password is wrong: nothing was signed." in page_text(response)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(SigningFailure)) == 1
        assert db.session.scalar(select(ProcessVersion).where(ProcessVersion.version == draft)).approved_at is None
    assert snapshot(app)["states"] == before["states"]


@pytest.mark.parametrize(("day", "message"), [
    ("past", "is in the past"),
    ("", "Give the date from which new batches use this version."),
    ("31/12/2026", "Enter the date as YYYY-MM-DD."),
    ("far", "Choose a date within 366 days."),
])
def test_a_bad_effective_date_is_refused(app, draft, login, day, message):
    with app.app_context():
        moment = lab_date(utcnow())
    day = {"past": (moment - timedelta(days=1)).isoformat(),
           "far": (moment + timedelta(days=400)).isoformat()}.get(day, day)
    before = snapshot(app)
    response = approve(login("qa1"), app, draft, day)
    assert response.status_code == 422
    assert message in page_text(response)
    assert snapshot(app) == before


def test_an_approved_version_is_not_approved_twice(app, draft, login):
    client = login("qa1")
    assert approve(client, app, draft, today(app)).status_code == 302
    before = snapshot(app)
    response = approve(client, app, draft, today(app))
    assert response.status_code == 409
    assert "was already approved by Quentin Assurance" in page_text(response)
    assert snapshot(app) == before


def test_only_qa_or_an_administrator_uploads(app, users, login):
    _, data = next_version(app)
    before = snapshot(app)
    for who in ("tech1", "super1", "qc1", "auditor1"):
        client = login(who)
        assert client.get("/processes/upload").status_code == 403
        response = upload(client, data)
        assert response.status_code == 403
        assert "may upload a process definition; you are signed in as" in page_text(response)
    assert snapshot(app) == before


@pytest.mark.parametrize(("change", "reason"), [
    (lambda t: t.replace('key = "receipt"', 'key = "Receipt step"', 1), "'Receipt step'"),
    (lambda t: t.replace("[states]", "[states", 1), "invalid TOML"),
    (lambda t: t.replace("limit_min = 60", "limit_min = 6000", 1), "lies outside the valid range"),
])
def test_a_malformed_definition_is_refused_with_the_file_and_the_reason(app, users, login, change, reason):
    _, data = next_version(app)
    before = snapshot(app)
    response = upload(login("qa1"), change(data.decode("utf-8")).encode("utf-8"), filename="broken_v9.toml")
    assert response.status_code == 422
    text = page_text(response)
    assert "Refused: broken_v9.toml:" in text and reason in text
    assert snapshot(app) == before


@pytest.mark.parametrize(("data", "message"), [
    (b"", "the file is empty"),
    (b"\xff\xfe not utf-8", "the file is not UTF-8 text"),
    (b"x" * (256 * 1024 + 10), "the file is larger than 256 kB"),
])
def test_a_file_that_is_not_a_definition_is_refused(app, users, login, data, message):
    before = snapshot(app)
    response = upload(login("qa1"), data)
    assert response.status_code == 422
    assert message in page_text(response)
    assert snapshot(app) == before


def test_no_file_is_refused(app, users, login):
    before = snapshot(app)
    response = login("qa1").post("/processes/upload", data={"reason": "x"}, content_type="multipart/form-data")
    assert response.status_code == 422
    assert "Choose a .toml file." in page_text(response)
    assert snapshot(app) == before


def test_the_same_key_and_version_with_other_content_is_refused(app, draft, login):
    _, data = next_version(app, volume_limit=70)
    before = snapshot(app)
    response = upload(login("qa1"), data)
    assert response.status_code == 409
    assert f"{KEY} version {draft} is already stored with other content" in page_text(response)
    assert snapshot(app) == before
    _, same = next_version(app)
    response = upload(login("qa1"), same)
    assert response.status_code == 409
    assert "already stored, with this same content (draft)" in page_text(response)
    assert snapshot(app) == before


def test_an_older_version_is_not_approved_after_a_newer_one(app, draft, login):
    older_text = (DEFINITIONS_DIR / "cd19_car_t_v1.toml").read_bytes()
    with app.app_context():
        if db.session.scalar(select(ProcessVersion).where(ProcessVersion.key == KEY, ProcessVersion.version == 1)):
            pytest.skip("version 1 is the effective one here")
    assert upload(login("admin"), older_text, filename="cd19_car_t_v1.toml").status_code == 302
    before = snapshot(app)
    response = approve(login("qa1"), app, 1, today(app))
    assert response.status_code == 409
    assert "is older than the approved version" in page_text(response)
    assert snapshot(app) == before


# --- the command line ----------------------------------------------------------------------------

def test_import_process_stores_a_draft(app, users, runner: FlaskCliRunner, tmp_path: Path):
    number, data = next_version(app)
    path = tmp_path / "next.toml"
    path.write_bytes(data)
    result = runner.invoke(args=["import-process", str(path), "--username", "admin", "--reason", "Validation"])
    assert result.exit_code == 0, result.output
    assert f"Stored {KEY} version {number}" in result.output and "as a draft" in result.output
    with app.app_context():
        stored = db.session.scalar(select(ProcessVersion).where(ProcessVersion.version == number))
        assert (stored.origin, stored.uploaded_by.username, stored.change_reason) == ("imported", "admin", "Validation")
        assert status_of(stored) == "draft"
    result = runner.invoke(args=["import-process", str(path), "--username", "admin"])
    assert result.exit_code == 1 and "already stored, with this same content" in result.output


def test_import_process_refuses_a_malformed_file_and_a_non_qa_user(app, users, runner, tmp_path):
    _, data = next_version(app)
    path = tmp_path / "broken.toml"
    path.write_text(data.decode("utf-8").replace('key = "receipt"', 'key = "Receipt step"', 1), encoding="utf-8")
    before = snapshot(app)
    result = runner.invoke(args=["import-process", str(path), "--username", "admin"])
    assert result.exit_code == 1
    assert "Refused: broken.toml:" in result.output and "'Receipt step'" in result.output
    path.write_bytes(data)
    result = runner.invoke(args=["import-process", str(path), "--username", "tech1"])
    assert result.exit_code == 1 and "may upload a process definition" in result.output
    result = runner.invoke(args=["import-process", str(path), "--username", "nobody"])
    assert result.exit_code == 1 and "No user 'nobody'" in result.output
    assert snapshot(app) == before


@pytest.fixture
def fresh_install(app: Flask, tmp_path: Path) -> None:
    """Users made while no definition is shipped: nothing approved yet, as after init-db."""
    app.config["WORKFLOW_DIR"] = str(tmp_path)


def test_approve_shipped_processes_on_installation(app, fresh_install, users, login, runner):
    app.config["WORKFLOW_DIR"] = str(DEFINITIONS_DIR)
    tech = login("tech1")
    register(tech, "NHL-01")
    response = tech.post("/patients/NHL-01/batches")
    assert response.status_code == 409 and "approve-shipped-processes" in page_text(response)
    result = runner.invoke(args=["approve-shipped-processes", "--username", "qa1"], input="wrong\n")
    assert result.exit_code == 1 and "The password is wrong" in result.output
    with app.app_context():
        assert counts()["ProcessVersion"] == 0
    with app.app_context():  # an administrator's temporary password is not the QA officer's own
        db.session.get(User, users["qa1"]).password_must_change = True
        with audit.action("test.temporary", actor=None):
            db.session.commit()
    result = runner.invoke(args=["approve-shipped-processes", "--username", "qa1"], input=f"{PASSWORD}\n")
    assert result.exit_code == 1 and "Your password was set by an administrator" in result.output
    with app.app_context():
        assert counts()["ProcessVersion"] == 0
        db.session.get(User, users["qa1"]).password_must_change = False
        with audit.action("test.own_password", actor=None):
            db.session.commit()
    result = runner.invoke(args=["approve-shipped-processes", "--username", "qa1"], input=f"{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert f"Approved {KEY} version" in result.output and f"Approved {NHL} version 1" in result.output
    with app.app_context():
        assert {v.key for v in db.session.scalars(select(ProcessVersion))} == {KEY, NHL}
        assert effective_version(KEY) is not None and effective_version(NHL) is not None
    result = runner.invoke(args=["approve-shipped-processes", "--username", "qa1"], input=f"{PASSWORD}\n")
    assert result.exit_code == 0 and "Nothing to approve" in result.output
    result = runner.invoke(args=["approve-shipped-processes", "--username", "super1"], input=f"{PASSWORD}\n")
    assert result.exit_code == 1
    number = start(tech, app, "NHL-02", product=NHL)
    with app.app_context():
        assert get_batch(number).definition.key == NHL


# --- scheduling with a product and its dose ------------------------------------------------------

def test_scheduling_offers_each_effective_product_and_its_dose_range(app, both_products, login):
    tech = login("tech1")
    register(tech, "NHL-01")
    page = page_text(tech.get("/patients/NHL-01"))
    assert f"({KEY}, version" in page and f"({NHL}, version 1)" in page
    assert f"{NHL}: 1.00 × 10⁶ to 2.00 × 10⁶ cells/kg, empty for 2.00 × 10⁶ cells/kg" in page
    before = snapshot(app)
    response = tech.post("/patients/NHL-01/batches", data={})
    assert response.status_code == 422 and "Choose the product to make." in page_text(response)
    response = tech.post("/patients/NHL-01/batches", data={"product": NHL, "target_dose": "5e6"})
    assert response.status_code == 422
    assert "Choose a target dose from 1.00 × 10⁶ cells/kg to 2.00 × 10⁶ cells/kg" in page_text(response)
    response = tech.post("/patients/NHL-01/batches", data={"product": NHL, "target_dose": "lots"})
    assert response.status_code == 422 and "is not a number" in page_text(response)
    response = tech.post("/patients/NHL-01/batches", data={"product": "no-such", "target_dose": ""})
    assert response.status_code == 422 and "Choose one of the products offered." in page_text(response)
    assert snapshot(app) == before
    number = start(tech, app, "NHL-02", product=NHL, target_dose="1.5e6")
    default = start(tech, app, "NHL-03", product=NHL)
    lupus = start(tech, app, "SLE-04", product=KEY, target_dose="")
    with app.app_context():
        assert (get_batch(number).definition.key, get_batch(number).target_dose) == (NHL, 1.5e6)
        assert get_batch(default).target_dose == 2e6
        assert (get_batch(lupus).definition.key, get_batch(lupus).target_dose) == (KEY, None)
    assert "1.50 × 10⁶ cells/kg (chosen at scheduling)" in page_text(tech.get(f"/batches/{number}"))
    assert f"under {NHL} version 1, target dose 1.50 × 10⁶" in page_text(tech.get("/patients/NHL-02"))


def test_formulation_takes_the_batchs_dose(app, both_products, make_batch, login):
    number = make_batch(until="formulation", process=NHL)
    tech = login("tech1")
    form = page_text(tech.get(f"/batches/{number}/steps/formulation"))
    assert 'value="2000000"' in tech.get(f"/batches/{number}/steps/formulation").get_data(as_text=True)
    assert "the batch's target dose" in form
    with app.app_context():
        batch = get_batch(number)
        raw = step_values("formulation", when=utcnow(), batch=batch, target_dose_per_kg="1e4")
        version = batch.version
    from tests.factories import form_data
    response = tech.post(f"/batches/{number}/steps/formulation",
                         data=form_data(raw, batch_version=version))
    assert response.status_code == 302, page_text(response)[:2000]
    with app.app_context():
        from tests.factories import entries
        [entry] = entries(number, "formulation")
        value = next(v for v in entry.values if v.field_key == "target_dose_per_kg")
        assert value.number == 2e6  # the batch's dose, not what was typed
        version = get_batch(number).version
    before = snapshot(app)
    response = tech.post(f"/batches/{number}/entries/{entry.id}/fields/target_dose_per_kg/correct",
                         data={"value": "1e6", "reason": "Typed wrong", "batch_version": version,
                               **signature("tech1")})
    assert response.status_code == 422
    assert "The target dose is the batch's, chosen when it was scheduled" in page_text(response)
    assert snapshot(app) == before


def test_a_fresh_install_stores_the_shipped_definitions_and_qa_approves_them_on_the_page(
        app, fresh_install, users, login):
    app.config["WORKFLOW_DIR"] = str(DEFINITIONS_DIR)
    assert login("tech1").post("/processes/shipped").status_code == 403
    admin = login("admin")
    page = page_text(admin.get("/processes/"))
    assert "Shipped with CellTrail, not stored yet" in page and f"{NHL}</span> version 1" in page
    response = admin.post("/processes/shipped")
    assert response.status_code == 302
    with app.app_context():
        drafts = {v.key: v for v in db.session.scalars(select(ProcessVersion))}
        assert set(drafts) == {KEY, NHL} and all(status_of(v) == "draft" for v in drafts.values())
        assert all(v.uploaded_by is None and v.origin == "shipped" for v in drafts.values())
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "process.import")).actor_id \
            == user("admin").id
    assert "Shipped with CellTrail, not stored yet" not in page_text(admin.get("/processes/"))
    response = approve(login("qa1"), app, 1, today(app), key=NHL)
    assert response.status_code == 302, page_text(response)
    number = start(login("tech1"), app, "NHL-01")  # the only effective product
    with app.app_context():
        assert get_batch(number).definition.key == NHL


# --- the [dose] range in a definition ---------------------------------------------------------------

NHL_TEXT = (DEFINITIONS_DIR / "cd19_car_t_nhl_v1.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize(("old", "new", "reason"), [
    ("default = 2e6", "default = 3e6", "dose: default 3e6 lies outside 1e6..2e6"),
    ("min = 1e6\nmax = 2e6", "min = 3e6\nmax = 2e6", "dose: min and max must be positive, min not above max"),
    ('[dose]\nunit = "cells/kg"', '[dose]\nunit = "cells"', "unit 'cells/kg' differs from the [dose] unit 'cells'"),
    ('[dose]\nunit = "cells/kg"\nmin = 1e6\nmax = 2e6\ndefault = 2e6\n', "", "batch_dose needs a [dose] table"),
    ("default = 2e6", "default = 2e6\nbatch = 1", "dose: unknown key 'batch'"),
])
def test_a_malformed_dose_range_is_refused(old, new, reason):
    from workflows.definition import DefinitionError, load_definition_text

    assert NHL_TEXT.count(old) == 1
    with pytest.raises(DefinitionError) as refused:
        load_definition_text(NHL_TEXT.replace(old, new), "cd19_car_t_nhl_v1.toml")
    assert reason in str(refused.value)
