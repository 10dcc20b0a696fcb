"""A lab installed from nothing runs its first batch, all through the browser (issue 13, "done
when"): after ``init-db`` and ``create-user`` (an administrator with a temporary password), the
administrator adds the lab's people; QA approves the process; a technician receives a lot, QC
checks it and QA releases it; an instrument is registered and calibrated; then a batch is
scheduled and recorded with that lot and that instrument. Nothing comes from the demo. All of it
at a tablet's width (1024 × 768), where no page may be wider than the window."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from urllib.parse import unquote

import pytest
from flask import Flask
from playwright.sync_api import Browser, expect
from sqlalchemy import select

from lab.extensions import db
from lab.models import Batch, Patient
from tests.browser.bench import Bench, Lab, LiveServer, Person, message, slug
from tests.browser.conftest import ARTIFACTS
from tests.factories import PASSWORD
from tests.readback import qr_texts, text_of
from workflows.definition import latest, load_directory

#: The lab's people: username -> (role as the form offers it, printed name).
STAFF = {
    "t.okafor": ("Lab technician", "Tunde Okafor"),
    "l.moreau": ("Lab technician", "Lea Moreau"),
    "k.sato": ("QC analyst", "Kenji Sato"),
    "a.berg": ("QA officer", "Anna Berg"),
    "r.iyer": ("Supervisor", "Ravi Iyer"),
}
TEMPORARY = "first-day-temporary-7"
PROCESS, PROCESS_TITLE = "cd19-car-t", "Autologous CD19 CAR-T"
PROCESS_VERSION = latest(load_directory(), PROCESS).version  # the newest shipped version
#: A supplier's certificate as a scanner makes it: a PDF (CellTrail checks the first bytes).
CERTIFICATE = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def empty_lab(app: Flask) -> Iterator[LiveServer]:
    """The app on a database with its schema and one administrator, as the README installs it."""
    result = app.test_cli_runner().invoke(args=["create-user", "--username", "admin", "--full-name",
                                                "Dana Whitfield", "--role", "admin", "--password", TEMPORARY])
    assert result.exit_code == 0, result.output
    live = LiveServer(app)
    yield live
    live.stop()


@pytest.fixture
def bench(browser: Browser, empty_lab: LiveServer, app: Flask, request: pytest.FixtureRequest) -> Iterator[Bench]:
    directory = ARTIFACTS / "screenshots" / slug(request.node.name)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    people = Bench(browser, empty_lab, Lab(app, {}), directory, viewport=(1024, 768))
    yield people
    report = getattr(request.node, "report_call", None)
    people.close(failed=report is None or report.failed)
    problems = people.problems + [f"server: {e}" for e in empty_lab.exceptions]
    assert not problems, problems


def first_sign_in(person: Person) -> None:
    """Sign in with the temporary password and choose one's own (PASSWORD), as the app requires."""
    page = person.page
    page.goto("/login")
    page.get_by_label("Username").fill(person.username)
    page.get_by_label("Password").fill(TEMPORARY)
    person.submit("Sign in")
    expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
    page.get_by_label("Current password").fill(TEMPORARY)
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_label("New password again").fill(PASSWORD)
    person.submit("Change password")
    expect(message(page, "Your password is changed")).to_be_visible()
    person.shot("own-password-chosen")


def add_staff(admin: Person) -> None:
    page = admin.page
    for username, (role, full_name) in STAFF.items():
        page.goto("/admin/users")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Full name").fill(full_name)
        page.get_by_label("Role").select_option(label=role)
        page.get_by_label(re.compile("password", re.IGNORECASE)).fill(TEMPORARY)
        admin.submit("Add user")
        expect(message(page, f"Account {username}")).to_be_visible()
    admin.shot("staff-added")


def person(bench: Bench, username: str) -> Person:
    someone = bench.person(username, full_name=STAFF[username][1])
    first_sign_in(someone)
    return someone


def approve_the_shipped_processes(admin: Person, qa: Person) -> None:
    """The administrator stores the definitions CellTrail ships as drafts; QA, another person,
    reads the newest cd19-car-t version and approves it with a signature, effective today."""
    admin.page.goto("/processes")
    admin.submit("Store them as drafts")
    admin.shot("shipped-processes-stored-as-drafts")
    page = qa.page
    page.goto("/")
    expect(page.get_by_role("heading", name=re.compile("Process versions waiting for approval"))).to_be_visible()
    qa.shot("dashboard-drafts-waiting")
    page.goto(f"/processes/{PROCESS}/{PROCESS_VERSION}")
    expect(page.get_by_role("heading", name=re.compile(re.escape(PROCESS_TITLE)))).to_be_visible()
    qa.sign()
    qa.submit("Approve and sign")
    expect(message(page, re.compile("approved", re.IGNORECASE))).to_be_visible()
    qa.shot("process-approved")
    page.goto("/processes")
    expect(page.get_by_text("effective").first).to_be_visible()


def add_item(supervisor: Person, name: str, kind: str, unit: str, *, needs_qc: bool) -> None:
    page = supervisor.page
    page.goto("/materials/items/new")
    page.get_by_label("Item name").fill(name)
    page.get_by_label(re.compile("^Material kind")).fill(kind)
    page.get_by_label("Supplier").fill("Miltenyi Biotec")
    page.get_by_label("Catalogue number").fill(f"CAT-{kind[:8]}")
    page.get_by_label("Storage condition").fill("2-8 °C")
    page.get_by_label(re.compile("^Unit lots are counted in")).fill(unit)
    page.get_by_role("checkbox", name=re.compile("Incoming QC check needed")).set_checked(needs_qc)
    supervisor.submit("Add")
    expect(message(page, re.compile(re.escape(name)))).to_be_visible()


def receive_lot(tech: Person, item: str, unit: str, lot_number: str, quantity: str) -> str:
    """Receive a lot with its certificate; returns the code the lot was given."""
    page = tech.page
    page.goto("/materials/lots/new")
    page.get_by_label("Item", exact=True).select_option(label=f"{item} (Miltenyi Biotec, {unit})")
    page.get_by_label("Supplier's lot number").fill(lot_number)
    page.get_by_label(re.compile("^Supplier's expiry date")).fill((date.today() + timedelta(days=300)).isoformat())
    page.get_by_label(re.compile("^Quantity received")).fill(quantity)
    page.get_by_label("Number of containers").fill(quantity)
    page.get_by_label(re.compile("^Date received")).fill(date.today().isoformat())
    page.get_by_label(re.compile("^Certificate of analysis")).set_input_files(
        files=[{"name": f"CoA {lot_number}.pdf", "mimeType": "application/pdf", "buffer": CERTIFICATE}])
    tech.submit("Receive into quarantine")
    expect(page.get_by_text("QUARANTINE", exact=False).first).to_be_visible()
    code = unquote(page.url.rstrip("/").rsplit("/", 1)[-1])
    assert re.fullmatch(r"L-A9999-\d\d-\d{6}-[0-9A-Z*]", code), code
    return code


def scheduled_batch(app: Flask, ref: str) -> tuple[str, str]:
    """The batch number and COI of the one batch of patient ``ref``."""
    with app.app_context():
        batch = db.session.scalars(select(Batch).join(Patient).where(Patient.patient_ref == ref)).one()
        return batch.batch_number, batch.patient.coi


def test_an_empty_lab_receives_a_lot_calibrates_an_instrument_approves_its_process_and_runs_a_batch(
        bench: Bench, app: Flask) -> None:
    admin = bench.person("admin", full_name="Dana Whitfield")
    first_sign_in(admin)
    add_staff(admin)
    qa, qc, tech, tech2, supervisor = (person(bench, name)
                                       for name in ("a.berg", "k.sato", "t.okafor", "l.moreau", "r.iyer"))
    approve_the_shipped_processes(admin, qa)

    # The supervisor keeps the catalogue; the technician receives three lots with certificates.
    add_item(supervisor, "CliniMACS CD4 MicroBeads", "cd4_microbeads", "vials", needs_qc=True)
    add_item(supervisor, "CliniMACS CD8 MicroBeads", "cd8_microbeads", "vials", needs_qc=False)
    add_item(supervisor, "CliniMACS Prodigy tubing set TS520", "tubing_set", "sets", needs_qc=False)
    supervisor.shot("catalogue")
    cd4 = receive_lot(tech, "CliniMACS CD4 MicroBeads", "vials", "CD4-7001", "5")
    tech.shot("cd4-lot-received")
    body, _ = tech.download(tech.page.get_by_role("link", name=re.compile("label", re.IGNORECASE)).first, "cd4-label")
    assert cd4 in qr_texts(body, 300)
    assert cd4 in text_of(body)
    cd8 = receive_lot(tech, "CliniMACS CD8 MicroBeads", "vials", "CD8-7002", "5")
    tubing = receive_lot(tech, "CliniMACS Prodigy tubing set TS520", "sets", "TS-7003", "3")

    # A quarantined lot is refused by a step; QC checks the CD4 lot; QA releases all three.
    page = qc.page
    page.goto(f"/materials/lots/{cd4}")
    page.get_by_role("checkbox", name=re.compile("Identity confirmed")).check()
    page.get_by_role("checkbox", name=re.compile("Containers intact")).check()
    page.get_by_role("checkbox", name=re.compile("Certificate results conform")).check()
    qc.submit("Record the check")
    expect(message(page, re.compile("check", re.IGNORECASE))).to_be_visible()
    qc.shot("incoming-check-recorded")
    for code in (cd4, cd8, tubing):
        page = qa.page
        page.goto(f"/materials/lots/{code}")
        page.get_by_label("Decision").select_option("released")
        qa.sign()
        qa.submit("Sign the decision")
        expect(message(page, re.compile("released", re.IGNORECASE))).to_be_visible()
    qa.shot("lot-released")

    # The supervisor registers the cell processor; the technician records its calibration.
    page = supervisor.page
    page.goto("/equipment/new")
    page.get_by_label("Name", exact=True).fill("CliniMACS Prodigy #7")
    page.get_by_label("Type", exact=True).select_option("cell_processor")
    page.get_by_label("Serial number").fill("PRD-77001")
    page.get_by_label("Location").fill("Clean room 1")
    page.get_by_label("Qualification status").select_option("qualified")
    supervisor.submit("Register")
    processor = unquote(page.url.rstrip("/").rsplit("/", 1)[-1])
    assert re.fullmatch(r"E-A9999-\d\d-\d{5}-[0-9A-Z*]", processor), processor
    page = tech.page
    page.goto(f"/equipment/{processor}/log")
    page.get_by_label("Entry").select_option("calibration")
    page.get_by_label("Done on").fill((date.today() - timedelta(days=1)).isoformat())
    page.get_by_label("Done by").fill("Miltenyi field service, K. Lang")
    page.get_by_label("What was done").fill("Centrifuge speed and temperature against reference")
    page.get_by_label("Result").select_option("pass")
    page.get_by_label(re.compile("^Next due")).fill((date.today() + timedelta(days=365)).isoformat())
    page.get_by_label(re.compile("^Certificate")).set_input_files(
        files=[{"name": "calibration.pdf", "mimeType": "application/pdf", "buffer": CERTIFICATE}])
    tech.submit("Record")
    expect(message(page, re.compile("Calibration recorded"))).to_be_visible()
    tech.shot("instrument-calibrated")

    # A patient, a batch under the approved process, its receipt verified, its enrichment with the lots.
    page.goto("/patients/new")
    page.get_by_label("Patient ID (pseudonymous)").fill("LUP-001")
    page.get_by_label("Initials").fill("MK")
    page.get_by_label("Date of birth").fill("1990-03-14")
    page.get_by_label("Weight (kg)").fill("61.5")
    page.get_by_label("Indication").fill("Systemic lupus erythematosus, refractory")
    tech.submit("Register and assign COI")
    page.get_by_label("Product").select_option(index=0)
    tech.submit("Schedule the batch")
    number, coi = scheduled_batch(app, "LUP-001")
    lab = Lab(app, {"LUP-001": number})
    page.goto(f"/batches/{number}/steps/receipt")
    now = datetime.now(UTC)
    page.get_by_label("COI on the bag label").fill(coi)
    page.get_by_label("End of collection").fill(f"{now - timedelta(hours=6):%Y-%m-%dT%H:%M}")
    page.get_by_label(re.compile("^Lowest shipping temperature")).fill("4")
    page.get_by_label(re.compile("^Highest shipping temperature")).fill("6")
    page.get_by_label(re.compile("^Volume")).fill("180")
    for group in ("Bag intact", "Documents complete"):
        page.get_by_role("group", name=re.compile(f"^{group}")).get_by_label("yes").check()
    page.get_by_role("group", name=re.compile("^Decision")).get_by_label("accept").check()
    tech.sign()
    tech.submit(re.compile("^Save "))
    expect(message(page, re.compile(f"recorded for {re.escape(number)}"))).to_be_visible()
    tech.shot("receipt-recorded")
    [entry] = lab.entries("LUP-001", "receipt")
    tech2.page.goto(f"/batches/{number}/entries/{entry.id}/verify")
    tech2.sign()
    tech2.submit("Sign: verified")
    expect(message(tech2.page, re.compile("verified and signed"))).to_be_visible()

    bag = lab.container("LUP-001", "apheresis_bag")
    page.goto(f"/batches/{number}/steps/enrichment")
    tech.wedge("Apheresis bag", bag)
    page.get_by_label(re.compile("^Total nucleated cells before enrichment")).fill("8.0e9")
    page.get_by_label(re.compile("^Viable cells after enrichment")).fill("2.4e9")
    page.get_by_label(re.compile("^Viability after enrichment")).fill("95")
    page.get_by_label(re.compile("^CD3\\+ purity")).fill("97.5")
    tech.wedge("CD4 MicroBeads lot", cd4)
    tech.wedge("CD8 MicroBeads lot", cd8)
    tech.wedge("Tubing set lot", tubing)
    tech.wedge("Cell processor", processor)
    tech.sign()
    tech.shot("enrichment-filled-in")
    tech.submit(re.compile("^Save "))
    expect(message(page, re.compile(f"recorded for {re.escape(number)}"))).to_be_visible()
    tech.shot("enrichment-recorded")
    [entry] = lab.entries("LUP-001", "enrichment")
    assert (entry.values["cd4_microbeads_lot"], entry.values["processor"]) == (cd4, processor)

    # The lot's balance went down and it knows where it was used; the instrument knows its batch.
    page.goto(f"/materials/lots/{cd4}")
    expect(page.get_by_text(number).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"\b4 vials\b")).first).to_be_visible()
    tech.shot("lot-where-used")
    page.goto(f"/equipment/{processor}")
    expect(page.get_by_text(number).first).to_be_visible()
    tech.shot("instrument-where-used")
