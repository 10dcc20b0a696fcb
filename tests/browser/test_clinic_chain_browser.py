"""Journey 6 in a browser, from the released bag to the patient: a technician packs the
product into a dry shipper (another patient's bag is refused), a second technician verifies
the packing, a nurse at the treatment site receives it, two clinicians check the patient
against the bag at the bedside (a wrong wristband is refused: DO NOT INFUSE), the nurse
records the thaw and the infusion, and QA sees the chain closed and reads back the patient's
chain-of-identity report."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect
from reportlab.pdfgen import canvas
from sqlalchemy import select

from lab.demo import SITE
from lab.extensions import db
from lab.models import Batch, Container, CustodyEvent, Shipment
from lab.models.clinic import BedsideCheck
from tests.browser.bench import Bench, Lab, Person, message
from tests.factories import PASSWORD
from tests.readback import cells_text, qr_digest, qr_texts, text_of

#: A tablet held sideways, at the bedside as at the packing bench.
pytestmark = pytest.mark.viewport(1024, 768)

SHIPPER, LOGGER = "DS-NUH-07", "TL-6012"
COURIER = "Cryoport courier, waybill 8842"
STORAGE = "Haematology LN2 dewar 2, rack C"


def product_bags(lab: Lab, ref: str) -> list[str]:
    """The codes of the product bags of ``ref``'s batch, in order."""
    with lab.app.app_context():
        batch = db.session.execute(select(Batch).filter_by(batch_number=lab.batch(ref))).scalar_one()
        return list(db.session.scalars(select(Container.code).where(
            Container.batch_id == batch.id, Container.kind == "product_bag").order_by(Container.id)))


def shipments_of(lab: Lab, ref: str) -> list[tuple[str, str]]:
    """Each shipment of ``ref``'s batch: its number and status."""
    with lab.app.app_context():
        batch = db.session.execute(select(Batch).filter_by(batch_number=lab.batch(ref))).scalar_one()
        return [(s.number, s.status) for s in db.session.scalars(
            select(Shipment).where(Shipment.batch_id == batch.id).order_by(Shipment.id))]


def bag_states(lab: Lab, codes: list[str]) -> dict[str, str]:
    with lab.app.app_context():
        return dict(db.session.execute(select(Container.code, Container.status).where(Container.code.in_(codes))).all())


def refused_scans(lab: Lab, ref: str) -> list[tuple[str, str]]:
    """The scanned code and the hand-off of each refused scan kept for ``ref``'s batch."""
    with lab.app.app_context():
        batch = db.session.execute(select(Batch).filter_by(batch_number=lab.batch(ref))).scalar_one()
        return [(e.scanned_code, e.event) for e in db.session.scalars(
            select(CustodyEvent).where(CustodyEvent.batch_id == batch.id, CustodyEvent.matched.is_(False))
            .order_by(CustodyEvent.id))]


def checked_at(lab: Lab, bag: str) -> datetime:
    """When the bag's latest bedside check was signed, to the minute."""
    with lab.app.app_context():
        moment = db.session.scalars(select(BedsideCheck.checked_at).join(Container, Container.id == BedsideCheck.container_id)
                                    .where(Container.code == bag).order_by(BedsideCheck.id.desc())).first()
    assert moment is not None, f"no bedside check of {bag}"
    return moment.replace(second=0, microsecond=0, tzinfo=moment.tzinfo or UTC)


def local(moment: datetime, lab: Lab) -> str:
    """``moment`` as a datetime-local field takes it: in the lab's time zone, to the minute."""
    return f"{moment.astimezone(ZoneInfo(lab.app.config['TIMEZONE'])):%Y-%m-%dT%H:%M}"


def scan_lines(page: Page, label: str, codes: list[str]) -> None:
    """Scan each code into the multi-line scan box ``label``: the scanner types it and Enter."""
    box = page.get_by_label(label)
    box.click()
    for code in codes:
        box.press_sequentially(code)
        box.press("Enter")


def logger_printout() -> bytes:
    """A small PDF: the temperature logger's print-out."""
    out = io.BytesIO()
    pdf = canvas.Canvas(out)
    pdf.drawString(72, 760, f"Temperature logger {LOGGER}: minimum -178.0 C, maximum -165.0 C, no alarm")
    pdf.save()
    return out.getvalue()


def bedside_attempt(nurse: Person, bag: str, wristband: str) -> None:
    """nurse1 and doctor1 at the bed: the bag and the wristband scanned, both sign on one screen."""
    page = nurse.page
    page.get_by_label("Scan the bag").fill("")
    page.get_by_label("Scan the bag").press_sequentially(bag)
    expect(page.get_by_label("How the patient is identified")).to_have_value("wristband")
    page.get_by_label("Scan the patient's wristband (COI)").fill("")
    # Typed without its Enter: the field is not a scan field, so a wedge's Enter would send the form.
    page.get_by_label("Scan the patient's wristband (COI)").press_sequentially(wristband)
    nurse.sign()
    page.get_by_label("Second clinician: username").fill("doctor1")
    page.get_by_label("Second clinician: password").fill(PASSWORD)
    nurse.submit("Both sign: the patient is the bag's patient")


def test_a_released_bag_travels_to_its_patient_and_the_coi_report_reads_back_the_chain(
        bench: Bench, lab: Lab) -> None:
    number, coi = lab.batch("DLBCL-09"), lab.coi("DLBCL-09")
    bags = product_bags(lab, "DLBCL-09")
    assert bags and lab.state("DLBCL-09") == "released" and shipments_of(lab, "DLBCL-09") == []
    other_bag, other_coi = product_bags(lab, "SLE-11")[0], lab.coi("SLE-11")  # another patient's, in transit
    consignee = f"{SITE.name} ({SITE.code})"

    # 1. tech1 packs the batch; another patient's bag scanned in is refused on the page.
    tech1 = bench.person("tech1")
    page = tech1.page
    tech1.sign_in()
    tech1.scan(number, "scanned-batch-number")
    tech1.follow(page.get_by_role("link", name="Pack for shipment"), "pack-form")
    expect(page.get_by_role("heading", name=re.compile(r"^Pack for shipment"))).to_be_visible()
    expect(page.get_by_text(coi, exact=True).first).to_be_visible()
    for bag in bags:
        expect(page.get_by_text(bag, exact=True)).to_be_visible()  # the bags to pack, listed
    now = datetime.now(UTC)
    scan_lines(page, "Product bags (scan each bag, one per line)", [other_bag])
    tech1.wedge("Dry shipper (scan its label)", SHIPPER)
    tech1.wedge("Temperature logger (scan its label)", LOGGER)
    page.get_by_label("Consignee (treatment site)").select_option(label=consignee)
    page.get_by_label("Departure (lab time)").fill(local(now - timedelta(hours=3), lab))
    page.get_by_label("Courier").fill(COURIER)
    tech1.submit("Pack")
    refusal = f"MISMATCH: you scanned {other_bag} of batch {lab.batch('SLE-11')} (patient {other_coi})"
    expect(page.get_by_text(refusal)).to_be_visible()
    tech1.shot("another-patients-bag-refused")
    assert shipments_of(lab, "DLBCL-09") == []
    assert (other_bag, "packed into shipper") in refused_scans(lab, "DLBCL-09")
    assert ("custody", f"Custody mismatch at packed into shipper: {other_bag}", "open") in lab.deviations("DLBCL-09")

    # ... takes that bag out and scans the batch's own; the rest of the form is as typed.
    page.get_by_label("Product bags (scan each bag, one per line)").fill("")
    scan_lines(page, "Product bags (scan each bag, one per line)", bags)
    expect(page.get_by_label("Dry shipper (scan its label)")).to_have_value(SHIPPER)
    expect(page.get_by_label("Courier")).to_have_value(COURIER)
    tech1.shot("pack-filled-in")
    tech1.submit("Pack")
    [(shipment, status)] = shipments_of(lab, "DLBCL-09")
    assert status == "packed"
    expect(message(page, f"Shipment {shipment} packed: a second person must verify the packing")).to_be_visible()
    tech1.shot("packed")

    # The shipper label, read back: COI, "FOR AUTOLOGOUS USE ONLY", and a QR of the shipment number.
    label, _ = tech1.download(page.get_by_role("link", name="Print the shipper label (PDF)"), "shipper-label")
    text = text_of(label)
    assert coi in text and number in text and SITE.code in text
    assert "FOR AUTOLOGOUS USE ONLY" in text
    assert shipment in qr_texts(label, 300)

    # 2. tech2 scans the label's QR into the scan box and verifies the packing with a signature.
    tech2 = bench.person("tech2")
    page = tech2.page
    tech2.sign_in()
    tech2.scan(shipment, "scanned-shipper-label")
    expect(page.get_by_role("heading", name=re.compile(f"^Shipment {shipment}"))).to_be_visible()
    tech2.sign()
    tech2.submit("Sign: packing verified")
    expect(message(page, f"Packing of {shipment} verified: the shipment is IN TRANSIT and batch {number} "
                         "is shipped.")).to_be_visible()
    tech2.shot("packing-verified")
    assert shipments_of(lab, "DLBCL-09") == [(shipment, "in_transit")]
    assert lab.state("DLBCL-09") == "shipped"

    # 3. nurse1 at NUH-HEM finds the shipment on the way on her dashboard and receives it.
    nurse = bench.person("nurse1")
    page = nurse.page
    nurse.sign_in()
    nurse.follow(page.get_by_role("link", name=shipment, exact=True).first, "shipment-on-its-way")
    nurse.follow(page.get_by_role("link", name="Receive this shipment"), "receive-form")
    expect(page.get_by_text(coi, exact=True).first).to_be_visible()
    nurse.wedge("Dry shipper (scan its label)", SHIPPER)
    scan_lines(page, "Bags (scan each bag, one per line)", bags)
    page.get_by_label("Lowest temperature on the logger (°C)").fill("-178")
    page.get_by_label("Highest temperature on the logger (°C)").fill("-165")
    page.get_by_label(re.compile(r"^The logger's file")).set_input_files(
        {"name": f"{LOGGER}.pdf", "mimeType": "application/pdf", "buffer": logger_printout()})
    page.get_by_role("group", name=re.compile(r"^Shipper intact")).get_by_label("Yes").check()
    page.get_by_label("Arrival (lab time)").fill(local(datetime.now(UTC) - timedelta(minutes=40), lab))
    page.get_by_label("Storage at the site (tank, rack, position)").fill(STORAGE)
    nurse.sign()
    nurse.shot("receipt-filled-in")
    nurse.submit("Sign: received")
    expect(message(page, f"Shipment {shipment} received: the bags are in site storage.")).to_be_visible()
    expect(page.get_by_role("link", name=f"{LOGGER}.pdf")).to_be_visible()
    nurse.shot("received")
    assert shipments_of(lab, "DLBCL-09") == [(shipment, "received")]
    assert set(bag_states(lab, bags).values()) == {"at site"}

    # 4. and 5. At the bedside, nurse1 with doctor1: a wrong wristband first, refused unmistakably ...
    for index, bag in enumerate(bags):
        nurse.follow(page.get_by_role("row").filter(has_text=bag).get_by_role("link", name="bedside check"),
                     f"bedside-check-{index + 1}")
        expect(page.get_by_role("heading", name="Bedside check", exact=True)).to_be_visible()
        if index == 0:
            bedside_attempt(nurse, bag, other_coi)
            refused = page.get_by_role("alert").filter(has_text="DO NOT INFUSE")
            expect(refused.first).to_be_visible()
            expect(refused.first).to_contain_text(f"Bag {bag} (batch {number}) is for patient {coi}")
            expect(refused.first).to_contain_text(f"the wristband reads {other_coi}")
            nurse.shot("wrong-wristband-do-not-infuse")
            assert (bag, "bedside check") in refused_scans(lab, "DLBCL-09")
            assert ("custody", f"Custody mismatch at bedside check: {bag}", "open") in lab.deviations("DLBCL-09")
            assert bag_states(lab, [bag]) == {bag: "at site"}
            expect(page.get_by_role("button", name="Both sign: the patient is the bag's patient")).to_be_visible()

        # ... then the patient's own wristband: both sign on the same screen.
        bedside_attempt(nurse, bag, coi)
        expect(message(page, f"Bedside check of {bag} signed by both clinicians: the patient is the bag's "
                             "patient.")).to_be_visible()
        nurse.shot(f"bedside-check-signed-{index + 1}")

        # The thaw and the infusion, well within the 30 minutes. The thaw cannot start before the
        # bedside check (to the minute) nor any time lie ahead of now: the check's minute to this one.
        nurse.follow(page.get_by_role("link", name="Record thaw and infusion"), f"thaw-and-infusion-{index + 1}")
        expect(page.get_by_text("30 minutes")).to_be_visible()
        checked = checked_at(lab, bag)
        ended = max(datetime.now(UTC).replace(second=0, microsecond=0), checked)
        for field, moment in (("Thaw started", checked), ("Thaw ended", checked), ("Infusion started", checked),
                              ("Infusion ended", ended)):
            page.get_by_label(field).fill(local(moment, lab))
        page.get_by_label(re.compile(r"^Reactions observed")).fill("None observed; vital signs stable.")
        nurse.sign()
        nurse.submit("Sign: administered")
        expect(message(page, f"Infusion of {bag} recorded and signed.")).to_be_visible()
        expect(page.get_by_text("LIMIT EXCEEDED")).to_have_count(0)
        nurse.shot(f"infused-{index + 1}")
        assert bag_states(lab, [bag]) == {bag: "infused"}
        if index + 1 < len(bags):
            page.goto(f"/shipments/{shipment}")
    assert set(bag_states(lab, bags).values()) == {"infused"}
    assert not [title for _, title, _ in lab.deviations("DLBCL-09") if "Thaw-to-infusion" in title]

    # 6. qa1 sees the patient's chain closed, with its vein-to-vein time.
    qa1 = bench.person("qa1")
    page = qa1.page
    qa1.sign_in()
    qa1.follow(page.get_by_role("link", name="Patient positions"), "patient-positions")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="DLBCL-09", exact=True))
    expect(row).to_have_count(1)
    expect(row).to_contain_text(coi)
    expect(row.locator(".stage")).to_have_text("closed")
    expect(row.get_by_role("cell").last).to_have_text(re.compile(r"^\d+\.\d$"))  # vein-to-vein, in days
    expect(row).to_contain_text(SITE.code)

    # ... and downloads the chain-of-identity report from the patient's page.
    qa1.follow(row.get_by_role("link", name="DLBCL-09", exact=True), "patient-page")
    report, how = qa1.download(page.get_by_role("link", name="Download the chain-of-identity report (PDF)"),
                               "coi-report")
    assert how == "download" and report.startswith(b"%PDF")
    text, cells = text_of(report), cells_text(report)
    assert coi in text and number in text and shipment in text
    assert "Where the product is Chain closed" in text and "Vein to vein" in text
    handed = re.compile(r"(?P<bag>C-[0-9A-Z-]+) (?P<batch>B-[0-9A-Z-]+) \| (?P<event>[^|]+) \| (?P<scanned>[^|]+) \| "
                        r"[^|]+ \| (?P<by>[^|]+) \| (?P<result>MATCH|MISMATCH)(?: \| (?P<message>[^|]+))?")
    rows = [(m["scanned"], m["event"], m["by"], m["result"], m["message"] or "") for m in handed.finditer(cells)]
    # In time order; an infusion's hand-off is dated by its typed end (to the minute), so it is looked for apart.
    chain = [row for row in rows if row[1] in ("packed into shipper", "received at site", "bedside check")]
    assert [row[:4] for row in chain] == [
        (other_bag, "packed into shipper", tech1.full_name, "MISMATCH"),
        *[(bag, "packed into shipper", tech1.full_name, "MATCH") for bag in bags],
        *[(bag, "received at site", nurse.full_name, "MATCH") for bag in bags],
        (bags[0], "bedside check", nurse.full_name, "MISMATCH"),
        *[(bag, "bedside check", nurse.full_name, "MATCH") for bag in bags],
    ], chain
    assert chain[0][4].startswith(f"MISMATCH: you scanned {other_bag}")
    refused_at_bed, *confirmed = chain[1 + 2 * len(bags):]
    assert refused_at_bed[4].startswith("DO NOT INFUSE: COI MISMATCH.")
    assert f"the wristband reads {other_coi}" in refused_at_bed[4]
    assert all(f"Patient {coi} confirmed by {nurse.full_name} and Daniel Lee (wristband)" in row[4] for row in confirmed)
    assert [row[:4] for row in rows if row[1] == "infused"] == [(bag, "infused", nurse.full_name, "MATCH")
                                                                for bag in bags]
    assert f"Receipt of {shipment}" in text and STORAGE in text and "minimum -178 °C, maximum -165 °C" in text
    assert f"Packing verified by {tech2.full_name}" in text
    assert "Clinicians Grace Okafor and Daniel Lee Result MATCH" in text
    assert "limit 30 min: within the limit" in text

    # Its QR verifies, in CellTrail, as the current report of the patient.
    page.goto(f"/verify/{qr_digest(report)}")
    expect(page.get_by_role("heading", name=re.compile(r"^Chain-of-identity report: current"))).to_be_visible()
    expect(page.get_by_text(coi, exact=True).first).to_be_visible()
    qa1.shot("coi-report-verified-current")
