"""How people use CellTrail, end to end in a browser, as far as CellTrail has it: a
technician scans a container and records the step that needs it, a second technician
verifies it; QC enters a release result, QA reviews the exceptions and releases; the
auditor downloads the executed batch record and exports the batch's audit trail."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from lab.demo import CABINET
from tests.browser.bench import SIGNED_AT, Bench, Lab, message
from tests.readback import page_texts

#: A tablet held sideways: the journeys must be done at this width without scrolling sideways.
pytestmark = pytest.mark.viewport(1024, 768)


def test_a_technician_scans_a_container_records_its_step_and_another_verifies_it(bench: Bench, lab: Lab) -> None:
    number, coi, bag = lab.batch("SLE-10"), lab.coi("SLE-10"), lab.container("SLE-10", "culture_bag")
    tech1 = bench.person("tech1")
    page = tech1.page
    tech1.sign_in()

    # The culture bag's label, scanned into the scan box, opens the step that needs it.
    tech1.scan(bag, "scanned-culture-bag")
    expect(page.get_by_role("heading", name=re.compile(r"^Lentiviral transduction"))).to_be_visible()
    expect(page.get_by_text(coi, exact=True).first).to_be_visible()  # the patient's COI, to compare by eye
    expect(page.get_by_label("Culture bag")).to_have_value(bag)

    # A wedge scanner's Enter in a lot or equipment field moves on; it does not send the form.
    vector = lab.lot("LV-CD19-0042")
    tech1.wedge("Vector lot", vector)
    expect(page.get_by_label("Vector titer")).not_to_be_editable()  # taken from the lot's certificate
    page.get_by_label("Vector volume added").fill("7.5")
    page.get_by_label("Viable cells at transduction").fill("1.0e8")
    tech1.wedge("Biosafety cabinet", lab.equipment(CABINET))
    expect(page.get_by_label("Biosafety cabinet")).not_to_be_focused()
    assert lab.entries("SLE-10", "transduction") == []
    tech1.sign()
    tech1.shot("transduction-filled-in")
    tech1.submit("Save Lentiviral transduction")
    expect(message(page, f"Lentiviral transduction recorded for {number} and signed by {tech1.full_name}.")) \
        .to_be_visible()
    tech1.shot("transduction-recorded")
    [entry] = lab.entries("SLE-10", "transduction")
    assert entry.performed_by == "tech1"
    assert entry.values["culture_bag"] == bag
    assert entry.values["vector_lot"] == vector
    assert float(entry.values["titer_tu_per_ml"]) == 1.0e8
    assert [(who, meaning) for who, meaning, _ in entry.signatures] == [("tech1", "performed")]

    # tech1 is not offered the verification of their own entry, and is refused it at its address.
    expect(page.get_by_role("link", name="Verify", exact=True)).to_have_count(0)
    page.goto(f"/batches/{number}/entries/{entry.id}/verify")  # refused before any password is typed
    expect(message(page, "You recorded or corrected this entry: a different person must verify it")).to_be_visible()
    expect(page.get_by_label("Password (electronic signature)")).to_have_count(0)
    tech1.shot("own-verification-refused")
    assert [meaning for _, meaning, _ in lab.entries("SLE-10", "transduction")[0].signatures] == ["performed"]

    # tech2 finds the batch by its number in the scan box and verifies, re-entering the password.
    tech2 = bench.person("tech2")
    page = tech2.page
    tech2.sign_in()
    tech2.scan(number, "scanned-batch-number")
    expect(page.get_by_role("heading", name=re.compile(f"^Batch {re.escape(number)}"))).to_be_visible()
    tech2.follow(page.get_by_role("link", name="Verify", exact=True), "verify-page")
    expect(page.get_by_role("heading", name="Verify Lentiviral transduction")).to_be_visible()
    expect(page.get_by_text(coi, exact=True).first).to_be_visible()
    tech2.sign()
    tech2.submit("Sign: verified")
    expect(message(page, f"Lentiviral transduction verified and signed by {tech2.full_name}.")).to_be_visible()
    [entry] = lab.entries("SLE-10", "transduction")
    assert [(who, meaning) for who, meaning, _ in entry.signatures] == [("tech1", "performed"), ("tech2", "verified")]
    verified_at = entry.signatures[1][2]
    expect(page.get_by_text(f"{tech2.full_name} — verified — {verified_at:{SIGNED_AT}}")).to_be_visible()
    tech2.shot("verified")


def test_qc_enters_a_result_qa_reviews_and_releases_and_the_auditor_downloads_the_record(
        bench: Bench, lab: Lab) -> None:
    number = lab.batch("SLE-08")  # manufactured, results in but the vector copy number, waiting for QA review

    # qc1 enters the vector copy number; it is judged against its specification on entry.
    qc1 = bench.person("qc1")
    page = qc1.page
    qc1.sign_in()
    qc1.scan(number, "scanned-batch-number")
    qc1.follow(page.get_by_role("link", name="Release results").first, "release-results")
    expect(page.get_by_role("heading", name=re.compile(r"^Release testing"))).to_be_visible()
    record_vcn = page.get_by_role("link", name=re.compile(r"^Record")).and_(page.locator('[href$="/results/vcn"]'))
    qc1.follow(record_vcn, "vector-copy-number-form")
    expect(page.get_by_role("heading", name=re.compile(r"^Vector copy number"))).to_be_visible()
    page.get_by_label("Result", exact=True).fill("2.1")
    qc1.sign()
    qc1.submit("Save and sign the result")
    expect(message(page, "Vector copy number: 2.1 copies/cell meets the specification (< 5 copies/cell).")) \
        .to_be_visible()
    qc1.shot("result-recorded")
    assert [(text, verdict, [(who, meaning) for who, meaning, _ in sigs])
            for text, verdict, sigs in lab.results("SLE-08", "vcn")] == [("2.1", "pass", [("qc1", "performed")])]

    # qa1 reviews by exception: the out-of-limit count and its closed deviation.
    qa1 = bench.person("qa1")
    page = qa1.page
    qa1.sign_in()
    qa1.scan(number, "scanned-batch-number")
    qa1.follow(page.get_by_role("link", name="QA review").first, "review")
    expect(page.get_by_role("heading", name=re.compile(r"^QA review"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"\d+ items? needs? a QA eye"))).to_be_visible()
    expect(page.get_by_role("link", name="Viability 68 % is below the limit of 70 %.", exact=True)).to_be_visible()
    deviation = page.get_by_role("row").filter(has=page.get_by_role("link", name=re.compile(r"^DEV-\d{4}-\d+:")))
    expect(deviation).to_have_count(1)
    expect(deviation).to_contain_text("Viability 68 % is below the limit of 70 %")
    expect(deviation).to_contain_text("closed")

    # ... and releases, signing with the password: printed name, meaning and UTC time shown.
    qa1.follow(page.get_by_role("link", name="Decide the disposition"), "disposition")
    expect(page.get_by_text("Release: possible.")).to_be_visible()
    page.get_by_role("radio", name=re.compile(r"^Release\b")).check()
    qa1.sign()
    qa1.shot("release-filled-in")
    qa1.submit("Sign the decision")
    expect(message(page, f"Release: batch {number} is now released, signed by {qa1.full_name}.")).to_be_visible()
    assert lab.state("SLE-08") == "released"
    [(who, meaning, signed_at)] = lab.disposition_signatures("SLE-08")
    assert (who, meaning) == ("qa1", "approved for release")
    assert abs(datetime.now(UTC) - signed_at) < timedelta(minutes=5)
    expect(page.get_by_text(f"{qa1.full_name} — approved for release — {signed_at:{SIGNED_AT}}")).to_be_visible()
    qa1.shot("released")

    # auditor1 reads everything and is offered nothing to change ...
    auditor = bench.person("auditor1")
    page = auditor.page
    auditor.sign_in()
    auditor.scan(number, "scanned-batch-number")
    expect(page.get_by_role("heading", name=re.compile(f"^Batch {re.escape(number)}"))).to_be_visible()
    expect(page.get_by_role("link", name=re.compile(r"^(Record|Add entry|Verify|Correct|Decide)\b"))).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile(r"^(Save|Sign(?! out))\b"))).to_have_count(0)

    # ... downloads the executed batch record: a PDF naming the batch, its release and the downloader.
    record_link = page.get_by_role("link").and_(page.locator('[href$="/record.pdf"]')).first
    pdf, how = auditor.download(record_link, "batch-record")
    assert how == "download" and pdf.startswith(b"%PDF")  # saved as a file, the page stays
    texts = page_texts(pdf)
    assert number in texts[0]
    assert lab.coi("SLE-08") in texts[0]
    assert all(f"Downloaded by {auditor.full_name}" in text for text in texts)
    assert any(f"{qa1.full_name}" in text and "approved for release" in text for text in texts)

    # ... and exports what QA did to the batch from the audit trail as CSV (an attachment: a real download).
    auditor.follow(page.get_by_role("link", name="Audit trail", exact=True), "audit-trail")
    expect(page.get_by_role("heading", name=re.compile(r"^Audit trail"))).to_be_visible()
    page.get_by_label("Batch", exact=True).fill(number)
    page.get_by_label(re.compile(r"^User\b")).select_option("qa1")
    auditor.submit("Filter")
    expect(page.get_by_role("heading", name=f"Audit trail of batch {number}")).to_be_visible()
    auditor.shot("audit-trail-of-the-batch-by-qa1")
    with page.expect_download() as downloading:
        page.get_by_role("link", name="Export as CSV").click()
    exported = downloading.value.path().read_text(encoding="utf-8")
    bench.keep(downloading.value.suggested_filename, exported.encode("utf-8"))
    [stated], header, *rows = list(csv.reader(io.StringIO(exported)))
    assert f"batch={number}" in stated
    assert "user=qa1" in stated
    assert f"by {auditor.full_name} ({auditor.username})" in stated
    entries = [dict(zip(header, row, strict=True)) for row in rows]
    assert {entry["user"] for entry in entries} == {"qa1"}
    assert "batch.release" in {entry["action"] for entry in entries}
