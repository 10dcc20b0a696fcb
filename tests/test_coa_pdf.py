"""The certificate of analysis, read back: every result row, the disposition and its signature, the QR."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pdfplumber
import pypdf
import pytest

from labels.coa import render_coa
from labels.data import CoaBag, CoaData, CoaDeviation, CoaResult, ResultStatus, SignatureData
from labels.text import UnprintableText
from tests.readback import THERMAL_DPIS, decode, pages

pytestmark = pytest.mark.requirements("P11-10b")

# (test, method, specification, result), after DOMAIN.md §2.
RELEASE_TESTS = [
    ("Appearance", "Visual inspection", "Colourless to slightly yellow suspension", "Slightly yellow suspension"),
    ("Viability", "Flow cytometry (7-AAD)", "≥ 80 % viable cells", "91.2 %"),
    ("Identity CD3+", "Flow cytometry", "≥ 80 % CD3+ of viable cells", "97.5 %"),
    ("CAR expression", "Flow cytometry (anti-idiotype)", "≥ 15 % CAR+ of viable CD3+", "38.4 %"),
    ("Dose", "Calculation", "0.6 to 6.0 × 10^8 CAR+ viable T cells", "2.1 × 10^8"),
    ("Vector copy number", "ddPCR", "≤ 5 copies per transduced cell", "1.8 copies/cell"),
    ("Sterility", "BacT/ALERT, 14 days", "No growth", "No growth"),
    ("Mycoplasma", "qPCR", "Not detected", "Not detected"),
    ("Endotoxin", "LAL kinetic chromogenic", "≤ 5.0 EU/kg", "< 0.5 EU/kg"),
    ("Potency", "IFN-γ release on CD19+ targets", "≥ 2-fold over control", "6.3-fold"),
    ("Replication-competent lentivirus", "qPCR (VSV-G)", "Not detected", "Not detected"),
    ("Residual beads", "Microscopy count", "≤ 100 beads per 3 × 10^6 cells", "12 beads"),
]
SIGNED_AT = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
SIGNATURE = SignatureData("Quinn A. Officer", "approved for release", SIGNED_AT)


def results(rounds: int = 1, status: ResultStatus = ResultStatus.PASS) -> tuple[CoaResult, ...]:
    return tuple(
        CoaResult(
            test=f"{test} (sample {n})" if rounds > 1 else test,
            method=method,
            specification=spec,
            status=status,
            result=result,
            analyst=f"Ana Lyst {n}",
            tested_on=date(2026, 11, 20) + timedelta(days=n),
        )
        for n in range(1, rounds + 1)
        for test, method, spec, result in RELEASE_TESTS
    )


COA = CoaData(
    batch_number="B-A9999-26-00001-5",
    coi="CH-A9999-26-000001-*",
    product="Anti-CD19 CAR T cells, suspension for infusion",
    patient_ref="PR-000123",
    process_key="cd19-car-t",
    process_version=3,
    facility_name="CellTrail GMP Facility",
    facility_address=("1 Example Way", "Springfield, XY 12345, USA"),
    results=results(),
    generated_at=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
    disposition="Released",
    disposition_signature=SIGNATURE,
    downloaded_by="Zoë Müller",
)
LONG = replace(COA, results=results(rounds=4))


def normalized(text: str) -> str:
    return " ".join(text.split())


def page_texts(pdf: bytes) -> list[str]:
    return [normalized(page.extract_text()) for page in pypdf.PdfReader(io.BytesIO(pdf)).pages]


def table_rows(pdf: bytes) -> list[list[str]]:
    """Every table row of every page, each cell's lines joined (a line that ends in "-" was split at it)."""
    with pdfplumber.open(io.BytesIO(pdf)) as document:
        return [
            [normalized((cell or "").replace("-\n", "-")) for cell in row]
            for page in document.pages
            for table in page.extract_tables(
                {"vertical_strategy": "lines_strict", "horizontal_strategy": "lines_strict"}
            )
            for row in table
        ]


def row_of(result: CoaResult) -> list[str]:
    return [
        result.test,
        result.method,
        result.specification,
        result.result or "—",
        result.status.value.upper(),
        result.analyst or "—",
        result.tested_on.isoformat() if result.tested_on else "—",
    ]


def test_every_result_is_a_row_with_its_verdict_in_words():
    pdf = render_coa(LONG)
    rows = table_rows(pdf)
    for result in LONG.results:
        assert row_of(result) in rows
    headers = [row for row in rows if row[0] == "Test"]
    assert len(headers) == len(page_texts(pdf))  # the header row repeats on every page


def test_identity_disposition_and_signature_are_printed():
    text = " ".join(page_texts(render_coa(COA)))
    for expected in (
        "Certificate of Analysis",
        "CellTrail GMP Facility",
        "Springfield, XY 12345, USA",
        COA.batch_number,
        COA.coi,
        COA.product,
        COA.patient_ref,
        "cd19-car-t, version 3",
        "Disposition: Released",
        "Signed by Quinn A. Officer",
        "Meaning: approved for release",
        "Signed at 2026-11-26 09:30 UTC",
    ):
        assert expected in text


def test_every_page_says_page_x_of_y_and_who_downloaded_it():
    texts = page_texts(render_coa(LONG))
    assert len(texts) >= 2
    for number, text in enumerate(texts, start=1):
        assert f"Page {number} of {len(texts)}" in text
        assert "Downloaded by Zoë Müller at 2026-11-26 10:00 UTC" in text


def test_no_download_line_when_nobody_is_named():
    assert "Downloaded by" not in " ".join(page_texts(render_coa(replace(COA, downloaded_by=None))))


@pytest.mark.parametrize("dpi", THERMAL_DPIS)
def test_the_first_page_qr_decodes_to_the_batch_number(dpi):
    first, *later = pages(render_coa(LONG), dpi)
    [barcode] = decode(first)
    assert barcode.text == COA.batch_number
    assert [decode(image) for image in later] == [[] for _ in later]


def test_pending_results_and_no_disposition_are_said_plainly():
    pending = CoaResult("Sterility", "BacT/ALERT, 14 days", "No growth", ResultStatus.PENDING)
    coa = replace(COA, results=(*results()[:6], pending), disposition=None, disposition_signature=None)
    pdf = render_coa(coa)
    text = " ".join(page_texts(pdf))
    assert "Disposition: not yet decided. This batch has not been released." in text
    assert "1 of 7 results pending: Sterility." in text
    assert "not final" in text
    assert ["Sterility", "BacT/ALERT, 14 days", "No growth", "—", "PENDING", "—", "—"] in table_rows(pdf)
    assert "Signed by" not in text


def test_a_failed_result_and_an_exceptional_release_are_recorded():
    failed = replace(results()[1], result="71.0 %", status=ResultStatus.FAIL)
    coa = replace(
        COA,
        results=(failed,),
        disposition="Released (exceptional, out of specification)",
        exceptional_release_notes="Treating physician's request of 2026-11-25 on file.\nRisk assessment RA-2026-014.",
    )
    pdf = render_coa(coa)
    text = " ".join(page_texts(pdf))
    assert row_of(failed) in table_rows(pdf)
    assert "Disposition: Released (exceptional, out of specification)" in text
    assert "Treating physician's request of 2026-11-25 on file. Risk assessment RA-2026-014." in text


def test_a_disposition_without_a_signature_says_not_signed():
    text = " ".join(page_texts(render_coa(replace(COA, disposition="On hold", disposition_signature=None))))
    assert "Disposition: On hold Not signed." in text


def test_user_text_is_printed_as_written_not_parsed_as_markup():
    coa = replace(COA, product="CAR T <b>bold</b> & <font size=40>big</font>", patient_ref="<para>")
    text = " ".join(page_texts(render_coa(coa)))
    assert "CAR T <b>bold</b> & <font size=40>big</font>" in text
    assert "<para>" in text


def test_signature_time_is_printed_in_utc():
    paris = timezone(timedelta(hours=1))
    coa = replace(COA, disposition_signature=replace(SIGNATURE, signed_at=SIGNED_AT.astimezone(paris)))
    assert "Signed at 2026-11-26 09:30 UTC" in " ".join(page_texts(render_coa(coa)))


def test_the_same_certificate_gives_the_same_bytes():
    assert render_coa(LONG) == render_coa(LONG)


def test_an_empty_result_list_is_stated():
    assert "No release test results have been recorded." in " ".join(page_texts(render_coa(replace(COA, results=()))))


@pytest.mark.parametrize(
    "changes",
    [
        {"generated_at": datetime(2026, 11, 26, 10, 0)},
        {"disposition": None},  # a signature with nothing to sign
        {"batch_number": "B-A9999-26-00001-4"},
        {"coi": "not a coi"},
    ],
)
def test_certificate_data_refuses_what_cannot_be_printed_right(changes):
    with pytest.raises(ValueError):
        replace(COA, **changes)


def test_a_naive_signature_time_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        SignatureData("Quinn A. Officer", "approved for release", datetime(2026, 11, 26, 9, 30))


def test_text_the_font_cannot_print_is_refused():
    with pytest.raises(UnprintableText):
        render_coa(replace(COA, product="CAR-T 細胞"))


def test_page_count_matches_the_footer():
    texts = page_texts(render_coa(LONG))
    totals = {int(match) for text in texts for match in re.findall(r"Page \d+ of (\d+)", text)}
    assert totals == {len(texts)}


# --- the product, deviations, QC and the interim release (issue 11, item 8) ----------------------

FILLED = datetime(2026, 11, 13, 0, 5, tzinfo=UTC)
PRODUCT = replace(
    COA,
    results=(*results()[:6], CoaResult("Sterility", "BacT/ALERT", "No growth", ResultStatus.PENDING,
                                       "no growth to date (interim)", "Ana Lyst", date(2026, 11, 20), interim=True)),
    filled_at=FILLED,
    expires_at=FILLED + timedelta(days=365),
    bags=(CoaBag("C-A9999-26-000003-E", 1, 2, Decimal("32.25"), Decimal("6.45e7")),
          CoaBag("C-A9999-26-000004-C", 2, 2, Decimal("32.25"), Decimal("6.45e7"))),
    dose_per_kg=Decimal("1.29e8") / Decimal("72.25"),
    weight_kg=Decimal("72.25"),
    deviations=(CoaDeviation("DEV-26-0001", "Counter mis-set", "closed", "minor", "Maria Rossi", FILLED),
                CoaDeviation("DEV-26-0002", "Label smudged", "open")),
    qc_analysts=("Ana Lyst", "Jonas Weber"),
    released_on_interim=True,
)


def test_the_product_its_bags_and_dose_are_written_as_the_labels_write_them():
    pdf = render_coa(PRODUCT)
    text, rows = " ".join(page_texts(pdf)), table_rows(pdf)
    for expected in ("Filled 2026-11-13 00:05 UTC", "Expires 2027-11-13 00:05 UTC", "Number of bags 2",
                     # 1.29 × 10⁸ / 72.25 = 1.7855… × 10⁶, three digits half up; the weight as recorded
                     "Dose 1.79 × 10⁶ cells/kg (CAR+ viable T cells per kg of a patient weight of 72.25 kg)"):
        assert expected in text, expected
    assert ["1 of 2", "C-A9999-26-000003-E", "32.3 mL", "6.45 × 10⁷"] in rows  # 32.25 half up, not 32.2
    assert ["2 of 2", "C-A9999-26-000004-C", "32.3 mL", "6.45 × 10⁷"] in rows


def test_deviations_qc_analysts_and_the_interim_release_are_stated():
    pdf = render_coa(PRODUCT)
    text, rows = " ".join(page_texts(pdf)), table_rows(pdf)
    assert ["DEV-26-0001", "Counter mis-set", "minor", "Closed by Maria Rossi at 2026-11-13 00:05 UTC"] in rows
    assert ["DEV-26-0002", "Label smudged", "not classified", "Not closed (open)"] in rows
    assert "Recorded and signed (meaning: performed) by Ana Lyst, Jonas Weber." in text
    assert ("This batch was released on an interim result (Sterility: no growth to date (interim)). The final "
            "result follows") in text


def test_a_certificate_without_product_deviations_or_interim_release_says_so():
    text = " ".join(page_texts(render_coa(COA)))
    assert "No product bag has been filled yet." in text
    assert "No deviation was opened for this batch." in text
    assert "released on an interim result" not in text


def test_an_expiry_the_process_does_not_define_is_said():
    text = " ".join(page_texts(render_coa(replace(PRODUCT, expires_at=None))))
    assert "Expires not set: version 3 of the process defines no shelf life" in text


@pytest.mark.parametrize(
    "changes",
    [
        {"dose_per_kg": None},  # a weight without its dose
        {"released_on_interim": True, "results": results()},  # no interim result to rely on
        {"filled_at": datetime(2026, 11, 13, 0, 5)},
    ],
)
def test_product_data_refuses_what_cannot_be_printed_right(changes):
    with pytest.raises(ValueError):
        replace(PRODUCT, **changes)


def test_bags_deviations_and_interim_results_refuse_what_cannot_be_true():
    with pytest.raises(ValueError):
        CoaBag("C-A9999-26-000003-E", 3, 2, Decimal("32.25"))
    with pytest.raises(ValueError):
        CoaBag("C-A9999-26-000003-X", 1, 1, Decimal("32.25"))
    with pytest.raises(ValueError):
        CoaDeviation("DEV-26-0001", "Counter mis-set", "closed", "minor", "Maria Rossi", None)
    with pytest.raises(ValueError):
        CoaResult("Sterility", "BacT/ALERT", "No growth", ResultStatus.PENDING, interim=True)
