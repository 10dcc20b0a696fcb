"""The command line: create-user, check-workflows and seed-demo."""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select

from lab.extensions import db
from lab.models import AuditEvent, Batch, Deviation, Equipment, MaterialLot, Patient, StepEntry, StepValue, User
from lab.models.base import utcnow
from lab.services.progress import batch_progress, definition_for
from tests.factories import PASSWORD, user
from workflows.definition import DEFINITIONS_DIR

DEFINITION_FILE = DEFINITIONS_DIR / "cd19_car_t_v1.toml"
DEMO_PASSWORD = "demo-lab-pass-2026"
DEMO_USERS = {"tech1": "technician", "tech2": "technician", "supervisor1": "supervisor", "qc1": "qc_analyst",
              "qa1": "qa_officer", "auditor1": "auditor", "admin": "admin", "nurse1": "clinician",
              "doctor1": "clinician"}


def row_counts(app: Flask) -> dict[str, int]:
    """Rows in every table: what "nothing was written" is checked against."""
    with app.app_context():
        return {table.name: db.session.scalar(select(func.count()).select_from(table)) or 0
                for table in db.metadata.sorted_tables}


# --- create-user -----------------------------------------------------------------------------

def create_user_args(**options: str) -> list[str]:
    values = {"username": "newtech", "full-name": "Nia  Newcomer", "role": "technician",
              "password": "a-long-password", **options}
    return ["create-user", *[part for key, value in values.items() for part in (f"--{key}", value)]]


def test_create_user_with_options(app: Flask, runner: FlaskCliRunner, login: Callable[..., FlaskClient]) -> None:
    result = runner.invoke(args=create_user_args(username="  NewTech ", role="qc_analyst"))
    assert result.exit_code == 0, result.output
    assert "Created newtech (QC analyst)." in result.output
    with app.app_context():
        account = user("newtech")
        assert (account.full_name, account.role, account.active) == ("Nia Newcomer", "qc_analyst", True)
        assert account.password_hash != "a-long-password"
        assert account.check_password("a-long-password")
        created = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "user.create", AuditEvent.row_id == str(account.id))).all()
        assert len(created) == 1
        assert created[0].actor_username == "system"
        assert created[0].actor_id is None
        assert account.password_hash not in (created[0].new_value or "")
        assert '"password_hash": "(redacted)"' in (created[0].new_value or "")
    client = login("newtech", "a-long-password")
    assert client.get("/").headers["Location"] == "/account/password"  # temporary: the owner chooses their own


def test_create_user_puts_a_clinician_at_a_site_named_by_its_code(app: Flask, runner: FlaskCliRunner,
                                                                  sites: dict[str, int]) -> None:
    result = runner.invoke(args=create_user_args(username="nurse9", role="clinician", site="nuh-hem"))
    assert result.exit_code == 0, result.output
    assert "Created nurse9 (Clinician)." in result.output
    with app.app_context():
        assert user("nurse9").site_id == sites["NUH-HEM"]
    unknown = runner.invoke(args=create_user_args(username="nurse8", role="clinician", site="NOPE"))
    assert unknown.exit_code == 1 and "no treatment site has the code 'NOPE'" in unknown.output
    siteless = runner.invoke(args=create_user_args(username="nurse7", role="clinician"))
    assert siteless.exit_code == 1
    assert "site: A clinician belongs to one treatment site" in siteless.output
    with app.app_context():
        assert db.session.scalar(select(User).where(User.username.in_(["nurse8", "nurse7"]))) is None


def test_create_user_prompts_for_what_is_missing(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["create-user"],
                           input="prompted\nPat Prompted\nsupervisor\nanswered-pass-1\nanswered-pass-1\n")
    assert result.exit_code == 0, result.output
    assert "Created prompted (Supervisor)." in result.output
    with app.app_context():
        assert user("prompted").role == "supervisor"
        assert user("prompted").check_password("answered-pass-1")


@pytest.mark.requirements("P11-300", "A11-12.1")
@pytest.mark.parametrize(("options", "exit_code", "message"), [
    ({"role": "superuser"}, 2, "Invalid value for '--role'"),
    ({"role": ""}, 2, "Invalid value for '--role'"),
    ({"username": "tech1"}, 1, "username: The username 'tech1' is taken"),
    ({"username": "TECH1"}, 1, "username: The username 'tech1' is taken"),
    ({"password": "short-pw1"}, 1, "password: Use at least 12 characters."),
    ({"password": "x" * 257}, 1, "password: Use at most 256 characters."),
    ({"username": "bad name!"}, 1, "username: Use 2 to 64 lower-case letters"),
    ({"username": "x" * 65}, 1, "username: Use 2 to 64 lower-case letters"),
    ({"full-name": " "}, 1, "full_name: Enter the full name"),
])
def test_create_user_refusals_write_nothing(app: Flask, runner: FlaskCliRunner, users: dict[str, int],
                                            options: dict[str, str], exit_code: int, message: str) -> None:
    before = row_counts(app)
    result = runner.invoke(args=create_user_args(**options))
    assert result.exit_code == exit_code, result.output
    assert message in result.output
    assert "Created" not in result.output
    assert row_counts(app) == before


# --- check-workflows -------------------------------------------------------------------------

def test_check_workflows_lists_every_definition_and_its_hash(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["check-workflows"])
    assert result.exit_code == 0, result.output
    files = sorted(DEFINITIONS_DIR.glob("*.toml"))
    assert DEFINITION_FILE in files and len(files) >= 2  # version 1 stays for the batches pinned to it
    for file in files:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
        sha256 = hashlib.sha256(file.read_bytes()).hexdigest()
        assert f"{data['key']} v{data['version']}: 9 steps, sha256 {sha256} ({file.name})" in result.output
    assert f"{len(files)} definition(s) OK." in result.output


def _replace(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


MALFORMED = {  # what is done to a copy of the definition -> the reason check-workflows gives
    "bad_version": (lambda t: _replace(t, "\nversion = 1\n", "\nversion = 0\n"),
                    "version must be a positive whole number"),
    "bad_toml": (lambda t: t + "\n[[steps\n", "invalid TOML"),
    "unknown_key": (lambda t: _replace(t, "\nversion = 1\n", "\nversion = 1\ncolour = \"red\"\n"),
                    "unknown key 'colour'"),
    "unknown_role": (lambda t: _replace(t, 'role = "technician"', 'role = "intern"'), "unknown role 'intern'"),
    "not_utf8": (lambda t: t.replace("# Autologous", "# Autologous \udcff", 1), "not UTF-8"),
}


@pytest.mark.requirements("PROC-1")
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_check_workflows_refuses_a_malformed_definition(app: Flask, runner: FlaskCliRunner, tmp_path: Path,
                                                        case: str) -> None:
    change, reason = MALFORMED[case]
    bad = tmp_path / "cd19_car_t_v1.toml"
    bad.write_bytes(change(DEFINITION_FILE.read_text(encoding="utf-8")).encode("utf-8", "surrogateescape"))
    app.config["WORKFLOW_DIR"] = str(tmp_path)
    result = runner.invoke(args=["check-workflows"])
    assert result.exit_code == 1, result.output
    assert "Refused: cd19_car_t_v1.toml:" in result.output
    assert reason in result.output
    assert "OK" not in result.output


def test_check_workflows_refuses_two_files_with_one_version(app: Flask, runner: FlaskCliRunner,
                                                            tmp_path: Path) -> None:
    shutil.copy(DEFINITION_FILE, tmp_path / "a_first.toml")
    shutil.copy(DEFINITION_FILE, tmp_path / "b_copy.toml")
    app.config["WORKFLOW_DIR"] = str(tmp_path)
    result = runner.invoke(args=["check-workflows"])
    assert result.exit_code == 1, result.output
    assert "b_copy.toml" in result.output
    assert "also defined in a_first.toml" in result.output


def test_check_workflows_accepts_a_good_copy(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    shutil.copy(DEFINITION_FILE, tmp_path / "cd19_car_t_v1.toml")
    app.config["WORKFLOW_DIR"] = str(tmp_path)
    result = runner.invoke(args=["check-workflows"])
    assert result.exit_code == 0, result.output
    assert "cd19-car-t v1" in result.output


# --- seed-demo -------------------------------------------------------------------------------

@pytest.fixture
def seeded(app: Flask, runner: FlaskCliRunner) -> str:
    result = runner.invoke(args=["seed-demo", "--password", DEMO_PASSWORD])
    assert result.exit_code == 0, result.output
    return result.output


def test_seed_demo_users_can_sign_in(app: Flask, seeded: str, client: FlaskClient) -> None:
    assert "Demo lab ready" in seeded
    assert DEMO_PASSWORD in seeded
    with app.app_context():
        accounts = db.session.scalars(select(User)).all()
        assert {u.username: u.role for u in accounts} == DEMO_USERS
        assert all(u.active and u.password_hash != DEMO_PASSWORD for u in accounts)
    for username in DEMO_USERS:
        response = client.post("/login", data={"username": username, "password": DEMO_PASSWORD})
        assert response.status_code == 302, username
        assert client.get("/").status_code == 200
        client.post("/logout")
    wrong = client.post("/login", data={"username": "tech1", "password": "celltrail-demo"})
    assert wrong.status_code == 401


def test_seed_demo_inventory_has_unusable_lots_and_equipment(app: Flask, seeded: str) -> None:
    with app.app_context():
        today = utcnow().date()
        lots = db.session.scalars(select(MaterialLot)).all()
        equipment = db.session.scalars(select(Equipment)).all()
        # built at run time: the expired lot is expired today, recently, not on a fixed date
        assert any(today - timedelta(days=365) < lot.expiry_date < today for lot in lots)
        assert any(lot.status == "quarantined" for lot in lots)
        assert sum(lot.status == "released" and lot.expiry_date > today for lot in lots) >= 5
        assert any(e.calibration_due is not None and e.calibration_due < today for e in equipment)
        assert sum(e.calibration_due is not None and e.calibration_due > today for e in equipment) >= 3


def test_seed_demo_batches_are_at_different_stages(app: Flask, seeded: str) -> None:
    with app.app_context():
        assert (db.session.scalar(select(func.count()).select_from(Patient)) or 0) >= 5
        batches = db.session.scalars(select(Batch)).all()
        assert len(batches) >= 5

        def steps(batch: Batch) -> list[str]:
            return [e.step_key for e in batch.entries]

        def awaiting_verification(batch: Batch) -> bool:
            return any(p.unverified for p in batch_progress(batch, definition_for(batch)).values())

        def out_of_limit_with_deviation(batch: Batch) -> bool:
            flagged = db.session.scalars(select(StepValue).join(StepValue.entry).where(
                StepValue.out_of_limit.is_(True), StepEntry.batch_id == batch.id)).all()
            return bool(flagged) and any(d.status == "open" and d.source == "limit" for d in batch.deviations)

        scheduled = [b for b in batches if b.state == "scheduled" and not b.entries]
        received = [b for b in batches if steps(b) == ["receipt"]]
        deviating = [b for b in batches if out_of_limit_with_deviation(b)]
        expanding = [b for b in batches if b.state == "in_process" and steps(b).count("expansion") >= 2
                     and "harvest" not in steps(b) and b not in deviating]
        awaiting = [b for b in batches if awaiting_verification(b)]
        complete = [b for b in batches if b.state == "qc_testing"]
        for name, found in [("scheduled", scheduled), ("received", received), ("expanding", expanding),
                            ("awaiting", awaiting), ("deviating", deviating), ("complete", complete)]:
            assert found, f"no demo batch is {name}"
        assert len({scheduled[0].id, received[0].id, expanding[0].id, deviating[0].id, complete[0].id}) == 5
        assert any(b not in received for b in awaiting)  # a later step waits too, not only a receipt
        assert {d.status for d in db.session.scalars(select(Deviation))} == {"open", "closed"}
        assert len({b.batch_number for b in batches}) == len(batches)
        for batch in batches:
            assert batch.batch_number in seeded


def test_seed_demo_pages_open(app: Flask, seeded: str, login: Callable[..., FlaskClient]) -> None:
    client = login("supervisor1", DEMO_PASSWORD)
    with app.app_context():
        numbers = db.session.scalars(select(Batch.batch_number)).all()
    for number in numbers:
        page = client.get(f"/batches/{number}")
        assert page.status_code == 200, number
    assert "OUT OF LIMIT" in "".join(client.get(f"/batches/{n}").get_data(as_text=True) for n in numbers)


def test_seed_demo_twice_adds_nothing(app: Flask, runner: FlaskCliRunner, seeded: str) -> None:
    before = row_counts(app)
    assert before["users"] == len(DEMO_USERS)
    again = runner.invoke(args=["seed-demo", "--password", DEMO_PASSWORD])
    assert again.exit_code == 0, again.output
    assert "already here" in again.output
    assert "nothing was added" in again.output
    assert row_counts(app) == before


def test_seed_demo_default_password(app: Flask, runner: FlaskCliRunner, login: Callable[..., FlaskClient]) -> None:
    result = runner.invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    assert "'celltrail-demo'" in result.output
    assert login("qa1", "celltrail-demo").get("/").status_code == 200


def test_seed_demo_refuses_a_database_with_other_users(app: Flask, runner: FlaskCliRunner) -> None:
    created = runner.invoke(args=create_user_args(username="realuser"))
    assert created.exit_code == 0, created.output
    before = row_counts(app)
    result = runner.invoke(args=["seed-demo", "--password", DEMO_PASSWORD])
    assert result.exit_code == 1, result.output
    assert "Refused:" in result.output
    assert "1 user account(s)" in result.output
    assert "nothing was added" in result.output
    assert row_counts(app) == before


def test_seed_demo_refuses_a_database_with_the_test_users(app: Flask, runner: FlaskCliRunner,
                                                          users: dict[str, int]) -> None:
    """The fixture's users include a tech1: seeding neither duplicates nor mixes."""
    before = row_counts(app)
    result = runner.invoke(args=["seed-demo", "--password", DEMO_PASSWORD])
    assert "nothing was added" in result.output
    assert row_counts(app) == before
    with app.app_context():
        assert user("tech1").check_password(PASSWORD)


@pytest.mark.parametrize("password", ["short", "123456789", ""])
def test_seed_demo_refuses_a_short_password(app: Flask, runner: FlaskCliRunner, password: str) -> None:
    result = runner.invoke(args=["seed-demo", "--password", password])
    assert result.exit_code == 1, result.output
    assert "Refused:" in result.output
    assert "Use at least 12 characters." in result.output
    assert all(count == 0 for count in row_counts(app).values())

