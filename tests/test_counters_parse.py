"""Reading a cell counter's export (workflows.counters): the NucleoCounter NC-200 and Vi-CELL BLU
layouts, their times in UTC, and a clear refusal for anything else."""

from __future__ import annotations

import codecs
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from workflows.counters import MAX_BYTES, MAX_LINES, NC200, VICELL_BLU, CounterFileError, parse_counter_file

pytestmark = pytest.mark.requirements("CNT-1")

DATA = Path(__file__).parent / "data" / "counters"
BERLIN = ZoneInfo("Europe/Berlin")
SAMPLE = "B-A9999-26-00001-5 D6"


def data(name: str) -> bytes:
    return (DATA / name).read_bytes()


def refusal(content: bytes) -> str:
    with pytest.raises(CounterFileError) as caught:
        parse_counter_file(content, BERLIN)
    return str(caught.value)


def test_a_nucleocounter_nc200_export_with_its_own_utc_offset():
    reading = parse_counter_file(data("nc200_count.csv"), BERLIN)
    assert reading.instrument == NC200
    assert reading.sample_id == SAMPLE  # the image name after its date, sequence and letter
    assert reading.viable_per_ml == 1.82e6 and reading.total_per_ml == 1.94e6
    assert reading.viability_pct == 93.8 and reading.viability_text == "93.8"
    # "20261125 093012" at offset +1 h
    assert reading.measured_at == datetime(2026, 11, 25, 8, 30, 12, tzinfo=UTC)
    assert reading.raw["Instrument s/n"] == "s/n 9000201012345678"


def test_a_nucleocounter_time_without_offset_is_read_in_the_labs_zone():
    content = data("nc200_count.csv").replace(b"Time zone offset;1\r\n", b"")
    reading = parse_counter_file(content, ZoneInfo("America/New_York"))
    assert reading.measured_at == datetime(2026, 11, 25, 14, 30, 12, tzinfo=UTC)


def test_a_vicell_blu_results_export_in_the_labs_zone():
    reading = parse_counter_file(data("vicell_blu_count.csv"), BERLIN)
    assert reading.instrument == VICELL_BLU
    assert reading.sample_id == SAMPLE
    assert reading.viable_per_ml == 2.03e6 and reading.total_per_ml == 2.15e6  # x10^6 cells/mL, exactly
    assert reading.viability_text == "94.42"
    assert reading.measured_at == datetime(2026, 11, 25, 8, 41, 7, tzinfo=UTC)  # 9:41:07 AM in Berlin
    assert reading.raw["Cell type"] == "T cells"


def test_a_vicell_blu_export_in_utf16_unquoted_with_a_24_hour_time():
    text = data("vicell_blu_count.csv").decode("utf-8").replace('"', "").replace("11/25/2026 9:41:07 AM",
                                                                                 "11/25/2026 16:56")
    reading = parse_counter_file(codecs.BOM_UTF16_LE + text.encode("utf-16-le"), UTC)
    assert reading.measured_at == datetime(2026, 11, 25, 16, 56, tzinfo=UTC)
    assert reading.viable_per_ml == 2.03e6


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "empty"),
    (b"%PDF-1.7\n\x00\x01\x02binary", "binary"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"x" * (MAX_BYTES + 1), "larger than"),
    (b"a\n" * (MAX_LINES + 1), "lines"),
    (None, "not an export of a ChemoMetec NucleoCounter NC-200"),  # another instrument's CSV
    (b"\xff\xfe\x00\xd8", "not readable text"),  # a UTF-16 BOM and a lone surrogate
])
def test_what_is_no_counter_export_is_refused_with_its_reason(content, reason):
    assert reason in refusal(data("plate_reader.csv") if content is None else content)


def test_more_than_one_sample_is_ambiguous():
    assert "holds 2 samples" in refusal(data("vicell_blu_two_samples.csv"))
    second = data("nc200_count.csv").replace(b"Operator;", b"Image;20261125-0008-c-OTHER;\r\nOperator;")
    assert "holds 2 samples" in refusal(second)


def test_an_export_without_the_time_of_the_count_is_refused():
    assert "lacks “Date time”" in refusal(data("nc200_without_run_data.csv"))


@pytest.mark.parametrize(("old", "new", "reason"), [
    (b'"Viable (x10^6) cells/mL"', b'"Viable cells/mL"', "lacks “Viable (x10^6) cells/mL”"),
    (b'"2.03"', b'"NaN"', "not a number"),
    (b'"2.03"', b'"inf"', "not a number"),
    (b'"2.03"', b'"-2.03"', "not a number"),
    (b'"2.03"', b'"1e999"', "too large"),
    (b'"2.03"', b'"3.5"', "more viable cells"),
    (b'"94.42"', b'"194.42"', "more than 100"),
    (b'"94.42"', b'""', "has no value for “Viability (%)”"),
    (b'"11/25/2026 9:41:07 AM"', b'"25.11.2026 09:41"', "not a date and time"),
    (b'"B-A9999-26-00001-5 D6"', b'"  "', "has no value for “Sample ID”"),
])
def test_a_vicell_blu_file_with_a_missing_or_unreadable_value_is_refused(old, new, reason):
    content = data("vicell_blu_count.csv")
    assert old in content
    assert reason in refusal(content.replace(old, new, 1))


@pytest.mark.parametrize(("old", "new", "reason"), [
    (b"Live (cells/ml);1.82E6;", b"Live (cells/ml);n/a;", "not a number"),
    (b"Date time;20261125 093012", b"Date time;2026-11-25 09:30", "YYYYMMDD HHMMSS"),
    (b"Time zone offset;1", b"Time zone offset;CET", "not a number of hours"),
    (b"Time zone offset;1", b"Time zone offset;99", "not an offset"),
])
def test_a_nucleocounter_file_with_an_unreadable_value_is_refused(old, new, reason):
    content = data("nc200_count.csv")
    assert old in content
    assert reason in refusal(content.replace(old, new))
