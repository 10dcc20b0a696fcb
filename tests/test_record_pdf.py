"""The executed batch record, printed and read back; its canonical JSON, digest, QR payload and diff.

Pure: a record is built here as plain data, no app or database.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from labels.digest import DigestError, canonical_json, parse_digest, qr_payload, record_digest, scanned_digest
from labels.record import render_record
from labels.record_data import (
    AuditRecord,
    BatchRecordData,
    CustodyRecord,
    DecisionRecord,
    DerivedRecord,
    DeviationRecord,
    EntryRecord,
    FieldRecord,
    Issue,
    ReleaseTestRecord,
    ResultRecord,
    Signed,
    StepRecord,
    ValueVersion,
)
from labels.record_diff import record_changes
from tests.readback import cells_text, decode, page_texts, pages

pytestmark = pytest.mark.requirements("A11-8.1", "A11-8.2", "P11-10a")

T0 = datetime(2026, 11, 20, 9, 0, 5, tzinfo=UTC)
PERFORMED = Signed("Alex Rivera", "performed", T0, valid=False)
CORRECTED = Signed("Alex Rivera", "corrected", T0 + timedelta(hours=2), valid=True)
VERIFIED = Signed("Sam Chen", "verified", T0 + timedelta(hours=3), valid=True)
ORIGINAL = ValueVersion("1.2e9", "cells", False, "", None, "Alex Rivera", T0, None)
CORRECTION = ValueVersion("1.2e8", "cells", False, "", None, "Alex Rivera", T0 + timedelta(hours=2),
                          "Transcription error: the counter print-out reads 1.2e8.")
LOW = ValueVersion("62", "%", True, "Viability 62 % is below the limit of 70 %.", None, "Alex Rivera", T0, None)
SAMPLED = ValueVersion("2026-11-20T08:55Z", None, False, "", None, "Alex Rivera", T0, None)
ENTRY = EntryRecord(
    occurrence=2, performed_by="Alex Rivera", performed_at=T0, comment="Supervisor informed.",
    fields=(FieldRecord("viable_cells", "Viable cells", "value", "", (ORIGINAL, CORRECTION), "number"),
            FieldRecord("viability_pct", "Viability", "value", "≥ 70 %", (LOW,), "number"),
            FieldRecord("sampled_at", "Sampled at", "value", "", (SAMPLED,), "datetime"),
            FieldRecord("incubator", "Incubator", "equipment", "",
                        (ValueVersion("INC-01", None, False, "", "CO2 incubator #1", "Alex Rivera", T0, None),))),
    derived=(DerivedRecord("fold", "Fold expansion", "1.2", None, "", False),),
    signatures=(PERFORMED, CORRECTED, VERIFIED), awaiting_verification=False,
)
RECORD = BatchRecordData(
    batch_number="B-A9999-26-00001-5", coi="CH-A9999-26-000001-*", patient_ref="SLE-01",
    product="Autologous anti-CD19 CAR T cells", process_key="cd19-car-t", process_title="CD19 CAR-T",
    process_version=1, process_sha256="ab" * 32, facility_name="CellTrail GMP Facility", state="In process",
    started_at=T0 - timedelta(days=6), started_by="Priya Nair",
    steps=(StepRecord("expansion", "Expansion (daily count)", False, (ENTRY,)),
           StepRecord("harvest", "Harvest and wash", True, ())),
    containers=(),
    custody=(CustodyRecord(T0, "C-A9999-26-000015-6", "sampled for a count", "Expansion", "C-A9999-26-000015-6",
                           "INC-01", "INC-01", "Alex Rivera", True, ""),),
    deviations=(DeviationRecord(
        "DEV-26-0001", "Viability below limit", "Value out of limit", "closed", "Viability 62 %.", T0, "Alex Rivera",
        "minor", "Medium not pre-warmed.", "None on the product.", "Count repeated.", "SOP updated.", "Priya Nair",
        T0 + timedelta(days=1), "Maria Rossi", T0 + timedelta(days=2),
        (Signed("Maria Rossi", "reviewed", T0 + timedelta(days=2), True),)),),
    release_tests=(ReleaseTestRecord("viability", "Viability", "Flow cytometry", "≥ 80 %", "pass", (
        ResultRecord("91.2 %", "pass", True, "≥ 80 %", None, "Jonas Weber", T0 + timedelta(days=3), False, None, False,
                     (Signed("Jonas Weber", "performed", T0 + timedelta(days=3), True),)),), "number", "%"),
                   ReleaseTestRecord("dose", "Dose", "Formulation", "0.8–1.2 × 10⁶ cells/kg", "pass", (
        ResultRecord("1.05e6 cells/kg", "pass", True, "0.8–1.2 × 10⁶ cells/kg", None, "Jonas Weber",
                     T0 + timedelta(days=3), False, None, False, ()),), "number", "cells/kg"),
                   ReleaseTestRecord("endotoxin", "Endotoxin", "LAL", "< 5 EU/mL", "pass", (
        ResultRecord("< 0.5 EU/mL", "pass", True, "< 5 EU/mL", None, "Jonas Weber",
                     T0 + timedelta(days=3), False, None, False, ()),), "number", "EU/mL")),
    decisions=(DecisionRecord("Release", "In QA review", "Released", None, None, None, None, None, "cd" * 32,
                              "Maria Rossi", T0 + timedelta(days=4),
                              (Signed("Maria Rossi", "approved for release", T0 + timedelta(days=4), True),)),),
    audit=tuple(AuditRecord(n, T0, "tech1", "step.record", "insert", "step_values", str(n), None, None,
                            json.dumps({"id": n, "text": "1.2e9"}), None) for n in range(1, 151)),
)
ISSUE = Issue("Zoë Müller", datetime(2026, 11, 26, 10, 0, 7, tzinfo=UTC))


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return render_record(RECORD, ISSUE)


# --- canonical form and digest ------------------------------------------------------------------


def test_the_canonical_form_is_sorted_compact_utf8_with_utc_times():
    data = canonical_json(RECORD)
    text = data.decode("utf-8")
    document = json.loads(text)
    assert document["format"] == "celltrail/batch-record/1"
    assert json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == text
    assert '"performed_at":"2026-11-20T09:00:05.000000Z"' in text
    assert "Zoë" not in text and "≥ 70 %" in text  # no download in it; non-ASCII as itself
    assert record_digest(RECORD) == hashlib.sha256(data).hexdigest()


def test_a_naive_time_or_a_float_has_no_canonical_form():
    with pytest.raises(ValueError, match="timezone-aware"):
        replace(ORIGINAL, recorded_at=datetime(2026, 11, 20, 9, 0))
    with pytest.raises(TypeError, match="recorded text"):
        canonical_json(replace(ORIGINAL, text=1.5))  # type: ignore[arg-type]


def test_the_same_record_has_the_same_digest_and_any_change_another():
    other_zone = replace(RECORD, started_at=RECORD.started_at.astimezone(timezone(timedelta(hours=2))))
    assert record_digest(other_zone) == record_digest(RECORD)  # the same moment
    assert record_digest(replace(RECORD, state="Released")) != record_digest(RECORD)


def test_the_qr_payload_is_short_upper_case_and_parses_back():
    digest = record_digest(RECORD)
    payload = qr_payload(digest)
    assert payload == "V-" + digest.upper() and len(payload) == 66
    for text in (payload, payload.lower(), digest, digest.upper(), f" {payload} "):
        assert parse_digest(text) == digest
    for scanned in (payload, f"https://celltrail.example/verify/{digest}/", digest):
        assert scanned_digest(scanned) == digest
    assert scanned_digest("B-A9999-26-00001-5") is None
    assert scanned_digest("https://celltrail.example/containers/C-A9999-26-000015-6") is None


@pytest.mark.parametrize("text", ["", "V-", "V-12AB", "a" * 63, "a" * 65, "g" * 64, "V-" + "Z" * 64])
def test_a_malformed_digest_is_refused_with_what_a_digest_looks_like(text):
    with pytest.raises(DigestError, match="64 hexadecimal characters"):
        parse_digest(text)


# --- the PDF, read back --------------------------------------------------------------------------


def test_every_page_says_page_x_of_y_the_digest_and_who_downloaded_it(pdf):
    digest = record_digest(RECORD)
    texts = page_texts(pdf)
    assert len(texts) >= 3  # the 150 audit entries run over pages
    for number, text in enumerate(texts, start=1):
        assert f"Page {number} of {len(texts)}" in text
        assert f"Record digest SHA-256 {digest}" in text
        assert "Downloaded by Zoë Müller at 2026-11-26 10:00 UTC" in text


def test_the_digest_qr_on_the_first_page_decodes_at_150_dpi(pdf):
    [first, *_] = pages(pdf, 150)
    assert [barcode.text for barcode in decode(first)] == [qr_payload(record_digest(RECORD))]


def test_values_corrections_signatures_and_deviations_are_printed(pdf):
    text, cells = " ".join(page_texts(pdf)), cells_text(pdf)
    for expected in ("Batch number B-A9999-26-00001-5", "COI CH-A9999-26-000001-*", "cd19-car-t, version 1",
                     "ab" * 32, "Entry 2: performed by Alex Rivera at 2026-11-20 09:00 UTC",
                     "Signed by Alex Rivera — meaning: performed — 2026-11-20 09:00 UTC — INVALIDATED",
                     "Signed by Sam Chen — meaning: verified — 2026-11-20 12:00 UTC — valid",
                     "Comment: Supervisor informed.", "Deviation DEV-26-0001: Viability below limit",
                     "Signed by Maria Rossi — meaning: approved for release — 2026-11-24 09:00 UTC — valid",
                     "2. Harvest and wash (second-person verification) Not recorded.",
                     "Classification minor", "Root cause Medium not pre-warmed.", "Preventive action SOP updated.",
                     "Investigated Priya Nair at 2026-11-21 09:00 UTC",
                     "Appendix: audit trail of batch B-A9999-26-00001-5 (150 entries)"):
        assert expected in text, expected
    correction = ("1.2 × 10⁸ cells CHANGED SINCE ORIGINAL ENTRY Original entry: 1.2 × 10⁹ cells, recorded by Alex "
                  "Rivera at 2026-11-20 09:00 UTC. Correction 1: changed to 1.2 × 10⁸ cells by Alex Rivera at "
                  "2026-11-20 11:00 UTC. Reason: Transcription error: the counter print-out reads 1.2e8.")
    result = ("91.2 %: PASS (final) — Jonas Weber, 2026-11-23 09:00 UTC Signed by Jonas Weber — meaning: "
              "performed — 2026-11-23 09:00 UTC — valid")
    for expected in (correction, "OUT OF LIMIT Viability 62 % is below the limit of 70 %.", "INC-01 (CO2 incubator #1)",
                     result, "Sampled at | 2026-11-20 08:55 UTC", "1.05 × 10⁶ cells/kg: PASS (final)",
                     "< 0.5 EU/mL: PASS (final)", "new: id=150; text=1.2e9"):
        assert expected in cells, expected
    # Storage forms stay in the digest, not on the page (the audit appendix quotes what was stored).
    assert "2026-11-20T08:55Z" not in cells and "1.05e6" not in cells and "09:00:05" not in cells


def test_who_downloaded_it_changes_the_footer_not_the_digest(pdf):
    other = render_record(RECORD, Issue("Olu Adeyemi", ISSUE.issued_at + timedelta(days=1)))
    assert [b.text for b in decode(pages(other, 150)[0])] == [qr_payload(record_digest(RECORD))]
    text = " ".join(page_texts(other))
    assert "Downloaded by Olu Adeyemi at 2026-11-27 10:00 UTC" in text and "Zoë" not in text


# --- what changed between two versions -------------------------------------------------------------


def _document(record: BatchRecordData) -> dict:
    return json.loads(canonical_json(record))


def test_the_changes_name_the_corrected_value_the_invalidated_signature_and_new_audit_entries():
    before_entry = replace(ENTRY, fields=(FieldRecord("viable_cells", "Viable cells", "value", "", (ORIGINAL,),
                                                      "number"),
                                          *ENTRY.fields[1:]),
                           signatures=(replace(PERFORMED, valid=True), VERIFIED))
    before = replace(RECORD, steps=(replace(RECORD.steps[0], entries=(before_entry,)), RECORD.steps[1]),
                     audit=RECORD.audit[:148], state="QC testing")
    changes = [(c.where, c.what) for c in record_changes(_document(before), _document(RECORD))]
    where = "Steps / Expansion (daily count) / entry 2"
    assert ("Record", "State: QC testing → In process") in changes
    added = ("version 2 added: 1.2 × 10⁸ cells (was 1.2 × 10⁹ cells), by Alex Rivera at 2026-11-20 11:00 UTC. "
             "Reason: Transcription error: the counter print-out reads 1.2e8.")
    assert (f"{where} / Viable cells", added) in changes
    performed = "signature of Alex Rivera (performed, 2026-11-20 09:00 UTC)"
    assert (f"{where} / {performed}", "Valid: yes → no") in changes
    assert (where, "signature of Alex Rivera (corrected, 2026-11-20 11:00 UTC) added") in changes
    assert ("Audit trail", "2 entries added (#149 to #150): step.record") in changes
    assert len(changes) == 5
    assert record_changes(_document(RECORD), _document(RECORD)) == []
