"""Reading the export file of a cell counter: one sample's viable concentration, viability,
sample ID and measurement time. Pure: bytes in, a ``CounterReading`` or a ``CounterFileError`` out.

Two layouts are read, told apart by their first lines (never by the file's name):

* ChemoMetec NucleoCounter NC-200 (NucleoView NC-200 software, "csv file version" 2): one
  ``key;value;`` line per result (``Image``, ``Viability (%)``, ``Live (cells/ml)``, ``Total
  (cells/ml)``…), then the run's metadata (``Instrument type``, ``Date time`` as
  ``YYYYMMDD HHMMSS``, ``Time zone offset`` in hours) and a ``//[checksum]`` line. The sample ID
  is what follows the image name's date, sequence and letter (``20261125-0012-c-<sample ID>``).
* Beckman Coulter Vi-CELL BLU, the results export: a comma-separated header line starting
  with ``Sample ID`` (``Total (x10^6) cells/mL``, ``Viable (x10^6) cells/mL``, ``Viability
  (%)``, ``Analysis date/time`` as ``M/D/YYYY H:MM`` or ``M/D/YYYY h:MM:SS AM``…), then one row
  per sample; UTF-8 or UTF-16, fields quoted or not, µ written either way.

ChemoMetec and Beckman publish no specification of these files that we could find. The layouts
above are built from real exports kept as test data by an open-source instrument-data converter
(Benchling's allotropy: its ``chemometec_nucleoview`` and ``beckman_vi_cell_blu`` readers); the
NC-200's trailing checksum is kept but not checked (its algorithm is not published). A lab whose
software writes another layout gets a refusal naming what was missing, never a guess.

Times: the Vi-CELL BLU writes the instrument's local time without a zone, read in the lab's
time zone (given by the caller); the NC-200 writes its offset from UTC beside the time, used when
present (else the lab's zone). ``measured_at`` is always an aware UTC datetime.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from types import MappingProxyType

NC200 = "ChemoMetec NucleoCounter NC-200"
VICELL_BLU = "Beckman Coulter Vi-CELL BLU"
#: The largest file read: an export of one sample is 1-3 KiB.
MAX_BYTES = 256 * 1024
#: The most lines read: an NC-200 export has about 50, a Vi-CELL BLU results export one per sample.
MAX_LINES = 500
#: A sample ID longer than this is not one a counter's keypad makes.
MAX_SAMPLE_ID = 128

_NUMBER = re.compile(r"[+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_NC200_IMAGE = re.compile(r"\d{8}-\d{4}-[A-Za-z]-(.+)")
_NC200_REQUIRED = ("Image", "Viability (%)", "Live (cells/ml)", "Date time")
_VICELL_REQUIRED = ("Sample ID", "Viable (x10^6) cells/mL", "Viability (%)", "Analysis date/time")
_VICELL_TIMES = ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p")
_KNOWN = f"an export of a {NC200} (NucleoView “Viability and Cell Count” result) or a {VICELL_BLU} (results export)"


class CounterFileError(ValueError):
    """The file is not a counter export CellTrail reads, or not one it can trust: the message says
    what is wrong and what to export instead."""


@dataclass(frozen=True)
class CounterReading:
    """One sample's count as the counter's file gives it."""

    instrument: str
    sample_id: str
    measured_at: datetime  # aware, UTC
    viable_per_ml: float
    total_per_ml: float | None
    viability_pct: float
    #: Every named value of the file's sample, as written (the original record stays the file itself).
    raw: Mapping[str, str] = field(compare=False)

    @property
    def viability_text(self) -> str:
        """The viability as the file wrote it (``"96.9"``), for a form field."""
        return _plain(self.viability_pct)


def parse_counter_file(content: bytes, zone: tzinfo) -> CounterReading:
    """The reading of ``content``, a counter's export; ``zone`` is the lab's time zone, in which a
    time the file gives without an offset is read. Raises CounterFileError."""
    text = _decode(content)
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise CounterFileError(f"The file has {len(lines)} lines, more than the {MAX_LINES} a counter export of "
                               "one sample has: export this sample alone.")
    first = next((line for line in lines if line.strip()), "")
    if first.lstrip('"').startswith("Sample ID"):
        return _vicell(text, zone)
    if any(line.startswith("Image;") for line in lines):
        return _nc200(lines, zone)
    raise CounterFileError(f"The file is not {_KNOWN}: its first line is “{_clip(first)}”.")


def _decode(content: bytes) -> str:
    if not content:
        raise CounterFileError("The file is empty: export the count again.")
    if len(content) > MAX_BYTES:
        raise CounterFileError(f"The file is larger than {MAX_BYTES // 1024} KiB: a counter export of one sample "
                               "is a few KiB. Export this sample alone.")
    utf16 = content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if not utf16 and b"\x00" in content:
        raise CounterFileError(f"The file is binary, not a CSV text: it is not {_KNOWN}.")
    # NucleoView on Windows writes its code page where UTF-8 does not fit
    for encoding in ("utf-16",) if utf16 else ("utf-8-sig", "cp1252"):
        try:
            text = content.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise CounterFileError(f"The file is not readable text: it is not {_KNOWN}.")
    if "\x00" in text or any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        raise CounterFileError(f"The file is binary, not a CSV text: it is not {_KNOWN}.")
    return text


def _nc200(lines: list[str], zone: tzinfo) -> CounterReading:
    values: dict[str, str] = {}
    images = 0
    for line in lines:
        if line.startswith("//"):  # the checksum line
            values["Checksum"] = line.removeprefix("//").strip()
            continue
        key, _, rest = line.partition(";")
        key = key.strip()
        if not key:
            continue
        images += key == "Image"
        values.setdefault(key, rest.split(";")[0].strip())
    if images > 1:
        raise CounterFileError(f"The file holds {images} samples: export each {NC200} result on its own.")
    _require(values.keys(), _NC200_REQUIRED, NC200)
    image = values["Image"]
    match = _NC200_IMAGE.fullmatch(image)
    sample_id = _sample_id(match.group(1) if match else image)
    viable = _number(values, "Live (cells/ml)")
    total = _number(values, "Total (cells/ml)") if "Total (cells/ml)" in values else None
    viability = _percent(values, "Viability (%)")
    measured = _nc200_time(values["Date time"], values.get("Time zone offset", ""), zone)
    return _reading(NC200, sample_id, measured, viable, total, viability, values)


def _nc200_time(text: str, offset: str, zone: tzinfo) -> datetime:
    try:
        local = datetime.strptime(text.strip(), "%Y%m%d %H%M%S")
    except ValueError:
        raise CounterFileError(f"“Date time” {_clip(text)!r} is not a date and time of the form "
                               "YYYYMMDD HHMMSS.") from None
    if not offset.strip():
        return local.replace(tzinfo=zone).astimezone(UTC)
    if not _NUMBER.fullmatch(offset.strip().lstrip("-")):
        raise CounterFileError(f"“Time zone offset” {_clip(offset)!r} is not a number of hours.")
    hours = float(offset.strip())
    if not -14 <= hours <= 14:
        raise CounterFileError(f"“Time zone offset” {_clip(offset)!r} is not an offset from UTC in hours.")
    return local.replace(tzinfo=timezone(timedelta(hours=hours))).astimezone(UTC)


def _vicell(text: str, zone: tzinfo) -> CounterReading:
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if any(cell.strip() for cell in row)]
    except csv.Error as error:
        raise CounterFileError(f"The file is not a readable CSV: {error}.") from None
    header = [_column(name) for name in rows[0]]
    _require(header, _VICELL_REQUIRED, VICELL_BLU)
    samples = rows[1:]
    if not samples:
        raise CounterFileError(f"The {VICELL_BLU} file has its header but no sample: export the count again.")
    if len(samples) > 1:
        raise CounterFileError(f"The file holds {len(samples)} samples: export only this sample's result from the "
                               f"{VICELL_BLU} (select the one sample, then export).")
    row = samples[0]
    if len(row) > len(header):
        raise CounterFileError(f"The sample's row has {len(row)} values for {len(header)} columns.")
    values = {name: cell.strip() for name, cell in zip(header, row, strict=False) if name}
    _require([k for k, v in values.items() if v], _VICELL_REQUIRED, VICELL_BLU, "has no value for")
    viable = _number(values, "Viable (x10^6) cells/mL", scale=6)
    total = _number(values, "Total (x10^6) cells/mL", scale=6) if values.get("Total (x10^6) cells/mL") else None
    viability = _percent(values, "Viability (%)")
    measured = _vicell_time(values["Analysis date/time"], zone)
    return _reading(VICELL_BLU, _sample_id(values["Sample ID"]), measured, viable, total, viability, values)


def _column(name: str) -> str:
    """A header as the Vi-CELL BLU writes it, with its micro sign in one form (µ, U+00B5)."""
    return name.strip().replace("\u03bc", "\u00b5")


def _vicell_time(text: str, zone: tzinfo) -> datetime:
    for shape in _VICELL_TIMES:
        try:
            local = datetime.strptime(text.strip(), shape)
        except ValueError:
            continue
        return local.replace(tzinfo=zone).astimezone(UTC)
    raise CounterFileError(f"“Analysis date/time” {_clip(text)!r} is not a date and time of the form "
                           "M/D/YYYY H:MM (the Vi-CELL BLU's US format).")


def _reading(instrument: str, sample_id: str, measured_at: datetime, viable: float, total: float | None,
             viability: float, values: dict[str, str]) -> CounterReading:
    if total is not None and viable > total * 1.0001:
        raise CounterFileError(f"The file gives more viable cells ({viable:.3g}/mL) than cells in all "
                               f"({total:.3g}/mL): it is not a consistent count.")
    return CounterReading(instrument, sample_id, measured_at, viable, total, viability, MappingProxyType(values))


def _require(present: Iterable[str], required: tuple[str, ...], instrument: str, verb: str = "lacks") -> None:
    have = set(present)
    missing = [name for name in required if name not in have]
    if missing:
        names = ", ".join(f"“{name}”" for name in missing)
        raise CounterFileError(f"The {instrument} file {verb} {names}: export the full result "
                               f"(CellTrail reads {_KNOWN}).")


def _sample_id(text: str) -> str:
    sample = text.strip()
    if not sample:
        raise CounterFileError("The file gives no sample ID: type the sample ID on the counter before the count.")
    if len(sample) > MAX_SAMPLE_ID:
        raise CounterFileError(f"The sample ID is longer than {MAX_SAMPLE_ID} characters.")
    return sample


def _number(values: Mapping[str, str], key: str, *, scale: int = 0) -> float:
    """The number ``values[key]`` × 10^``scale`` (scaled exactly: 2.03 × 10⁶ is 2030000.0)."""
    text = values.get(key, "").strip()
    if not _NUMBER.fullmatch(text):
        raise CounterFileError(f"“{key}” is {_clip(text)!r}, not a number: the count did not give a result.")
    number = float(Decimal(text).scaleb(scale))
    if not math.isfinite(number):
        raise CounterFileError(f"“{key}” is {_clip(text)!r}, too large to be a count.")
    return number


def _percent(values: Mapping[str, str], key: str) -> float:
    number = _number(values, key)
    if number > 100:
        raise CounterFileError(f"“{key}” is {_clip(values[key])}, more than 100 %.")
    return number


def _plain(number: float) -> str:
    return f"{number:.15g}"


def _clip(text: str, length: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= length else text[: length - 1] + "…"
