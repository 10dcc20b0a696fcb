"""Every page, as every role reaches it, at 1280 × 800, 1024 × 768 and 390 × 844: the document is
no wider than the window, no identity code is broken across lines, the header is one row from
1024 px up and a compact menu below, and no control is covered by another. Each role follows
the links of the demo lab from its dashboard; every page endpoint of the app must be reached by
someone, so a new page cannot escape the survey. Screenshots of every page at each width stay in
the test artifacts (``<role>-<endpoint>-<width>.png``)."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from lab.demo import OVERDUE_INCUBATOR
from lab.extensions import db
from lab.models import Batch, IssuedRecord, Patient, Shipment, StepEntry, User, utcnow
from lab.services.bedside import BedsideInput, check_at_bedside
from lab.services.results import record_result
from lab.services.signatures import Credentials
from lab.services.site_receipt import ReceiptInput, receive_shipment
from tests.browser.bench import SCAN_BOX, Bench, Lab, LiveServer
from tests.browser.survey import NOT_PAGES, WIDTHS, look, reachable
from tests.factories import PASSWORD

ROLES = ("tech1", "tech2", "supervisor1", "qc1", "qa1", "auditor1", "admin", "nurse1")


def page_endpoints(app: Flask) -> set[str]:
    """Every endpoint of the app that answers a GET with a page."""
    return {rule.endpoint for rule in app.url_map.iter_rules()
            if "GET" in (rule.methods or ()) and rule.endpoint != "static" and not NOT_PAGES.search(rule.rule)}


def in_transit(lab: Lab) -> str:
    """The number of the demo's shipment on its way to the site (SLE-11's)."""
    with lab.app.app_context():
        return db.session.scalars(select(Shipment.number).where(Shipment.status == "in_transit")).one()


def technician_pages(lab: Lab) -> dict[str, str]:
    """The correction of a recorded value (SLE-03's apheresis volume) and the packing of the
    released DLBCL-09 into a shipper."""
    with lab.app.app_context():
        number = lab.batch("SLE-03")
        entry = db.session.scalars(select(StepEntry.id).join(Batch).where(
            Batch.batch_number == number, StepEntry.step_key == "receipt")).first()
    return {"batches.correct": f"/batches/{number}/entries/{entry}/fields/volume_ml/correct",
            "shipments.pack": f"/batches/{lab.batch('DLBCL-09')}/ship"}


def received_and_checked(lab: Lab) -> None:
    with lab.app.app_context():
        now = utcnow()
        nurse = db.session.scalars(select(User).where(User.username == "nurse1")).one()
        shipment = db.session.scalars(select(Shipment).where(Shipment.status == "in_transit")).one()
        codes = [bag.container.code for bag in shipment.bags]
        receive_shipment(shipment, ReceiptInput(shipment.shipper_code, codes, "-181", "-172", True,
                                                now - timedelta(hours=2), "Haematology LN2 dewar 2"),
                         logger_file=None, actor=nurse, credentials=Credentials(PASSWORD, "nurse1"),
                         now=now - timedelta(hours=1))
        check_at_bedside(BedsideInput(codes[0], "wristband", wristband=shipment.batch.patient.coi,
                                      second_username="doctor1", second_password=PASSWORD),
                         actor=nurse, credentials=Credentials(PASSWORD, "nurse1"), now=now - timedelta(minutes=5))
        infused = db.session.scalars(select(Batch).join(Patient).where(Patient.patient_ref == "SLE-12")).one()
        qc = db.session.scalars(select(User).where(User.username == "qc1")).one()
        record_result(infused, "sterility", "growth", comment="Growth on day 9: Staphylococcus epidermidis.",
                      actor=qc, credentials=Credentials(PASSWORD, "qc1"), now=now)
        db.session.commit()


def test_every_page_fits_every_width_for_every_role(bench: Bench, lab: Lab, server: LiveServer, app: Flask) -> None:
    problems: list[str] = []
    seen: dict[str, str] = {}

    def survey(who: str, endpoint: str, url: str) -> None:
        seen[endpoint] = url
        shoot = str(bench.directory / f"{who}-{endpoint}")
        problems.extend(f"{who} {url} {problem}" for problem in look(page, url, WIDTHS, shoot=shoot))

    # Signed out: the sign-in page.
    page = bench.person("tech1").page
    survey("anyone", "main.login", "/login")

    # An instrument out of service (its return page), and a record issued (its verification page).
    qa = bench.person("qa1")
    qa.sign_in()
    page = qa.page
    page.goto(f"/equipment/{lab.equipment(OVERDUE_INCUBATOR)}/out-of-service")
    page.get_by_label("Reason").fill("Door seal torn; service booked")
    qa.submit("Take out of service")
    expect(page.get_by_role("link", name="Return to service")).to_be_visible()
    assert page.request.get(f"/batches/{lab.batch('DLBCL-09')}/record.pdf").ok
    with lab.app.app_context():
        digest = db.session.scalars(select(IssuedRecord.digest).order_by(IssuedRecord.id.desc())).first()
    survey("qa1", "records.verify", f"/verify/{digest}")
    survey("qa1", "inventory.index", "/inventory/")  # where old bookmarks of the lots-and-equipment page land

    # At the site: SLE-11's shipment on its way (the receipt form), then received and its bag checked at
    # the bedside (the infusion form); a release result of SLE-12 failing after infusion (a notice).
    nurse = bench.person("nurse1")
    nurse.sign_in()
    page = nurse.page
    survey("nurse1", "shipments.receive", f"/shipments/{in_transit(lab)}/receive")
    received_and_checked(lab)

    for username in ROLES:
        person = {"qa1": qa, "nurse1": nurse}.get(username) or bench.person(username)
        if person is not qa and person is not nurse:
            person.sign_in()
        page = person.page
        found, errors = reachable(page, app, server.url)
        problems.extend(f"{username}: {error}" for error in errors)
        for endpoint, url in sorted(found.items()):
            if endpoint not in seen or endpoint == "main.dashboard":  # each role's own dashboard and header
                survey(username, endpoint, url)
        if username == "tech1":  # pages behind a batch page the crawl's two batch pages may not be
            for endpoint, url in technician_pages(lab).items():
                if endpoint not in seen:
                    survey(username, endpoint, url)

    assert sorted(page_endpoints(app) - seen.keys()) == []
    assert problems == []
    shots = list(bench.directory.glob("*.png"))
    assert {re.sub(r"-\d+\.png$", "", shot.name).split("-", 1)[1] for shot in shots} >= page_endpoints(app)


def test_the_menu_is_a_list_behind_a_button_on_a_phone_and_a_row_on_a_laptop(bench: Bench) -> None:
    """On a phone the pages are a list behind "Menu" (the scan box stays in view); on a laptop
    they are one row, the account's actions behind the person's name, and a dashboard row is a
    few lines tall."""
    tech = bench.person("tech1")
    page = tech.page
    page.set_viewport_size({"width": 390, "height": 844})
    tech.sign_in()
    materials = page.get_by_role("navigation", name="Main").get_by_role("link", name="Materials")
    expect(materials).to_be_hidden()
    expect(page.get_by_label(SCAN_BOX)).to_be_visible()  # the scan box stays in view on a phone
    page.get_by_text("Menu", exact=True).click()
    expect(materials).to_be_visible()
    tech.shot("menu-open-390")
    page.keyboard.press("Escape")
    expect(materials).to_be_hidden()
    expect(page.locator(".topbar .menu > summary")).to_be_focused()
    tech.menu("Materials")
    expect(page.get_by_role("heading", name="Materials", level=1)).to_be_visible()
    # The lots are blocks of labelled lines on a phone: a lot's status is in view, not off to the right.
    status = page.locator('#lots + .table-scroll td[data-label="Status"]').first
    expect(status).to_be_visible()
    box = status.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390, box
    tech.shot("materials-390")

    page.set_viewport_size({"width": 1280, "height": 800})
    expect(materials).to_be_visible()  # in the header's row
    tech.menu("Dashboard")  # the time-window sentence no longer stacks a word a line
    heights = page.locator("table.dashboard tbody tr").evaluate_all("rows => rows.map(r => r.offsetHeight)")
    # DLBCL-09 (released), SLE-11 and SLE-12 (shipped) are closed
    assert len(heights) == len(bench.lab.batches) - 3 and max(heights) <= 100, heights
    tech.menu("Materials")
    sign_out = page.get_by_role("button", name="Sign out")
    expect(sign_out).to_be_hidden()
    page.locator(".topbar .account > summary").click()
    expect(sign_out).to_be_visible()
    expect(page.get_by_text("Technician", exact=False).first).to_be_visible()
    tech.shot("account-menu-1280")
    page.get_by_role("heading", name="Materials", level=1).click()  # a click elsewhere closes it
    expect(sign_out).to_be_hidden()
    page.locator(".topbar .account > summary").click()
    with page.expect_event("load"):
        sign_out.click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
