"""ZPL II for Zebra printers: one program per label, QR payload the code alone, user text escaped."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import pytest

from labels.data import FOR_AUTOLOGOUS_USE_ONLY, Stock
from labels.layout import LabelOverflow
from labels.zpl import render_zpl, zpl_escape
from tests.test_labels_pdf import BAG, STORAGE, TUBE

pytestmark = pytest.mark.requirements("LBL-3")

QR_FIELD = re.compile(r"\^FO(\d+),(\d+)\^BQN,2,(\d+)\^FD(..),([^\^~]*)\^FS")
TEXT_FIELD = re.compile(r"\^FO(\d+),(\d+)(\^FR)?\^A0N,(\d+),(\d+)\^FB(\d+),(\d+),(-?\d+),L,0\^FH\^FD([^\^~]*)\^FS")
QR_MODULES = 29  # version 1 with its quiet zone: every container code fits it


@dataclass(frozen=True)
class TextField:
    x: int
    y: int
    height: int
    width: int
    lines: int
    line_spacing: int
    text: str
    reversed: bool

    @property
    def bottom(self) -> int:
        return self.y + self.lines * (self.height + self.line_spacing)


def unescape(data: str) -> str:
    """Undo ^FH: ``_XX`` is one byte in hex; the bytes are UTF-8 (^CI28)."""
    raw = re.sub(rb"_([0-9A-Fa-f]{2})", lambda match: bytes([int(match[1], 16)]), data.encode("ascii"))
    return raw.decode("utf-8")


def text_fields(zpl: str) -> list[TextField]:
    return [
        TextField(int(x), int(y), int(h), int(w), int(lines), int(spacing), unescape(data), bool(reverse))
        for x, y, reverse, h, _, w, lines, spacing, data in TEXT_FIELD.findall(zpl)
    ]


def command(zpl: str, name: str) -> str:
    [value] = re.findall(rf"\^{name}([^\^\n]*)", zpl)
    return value


@pytest.mark.parametrize(("label", "width", "height"), [(BAG, 812, 812), (TUBE, 304, 152)])
def test_one_program_sized_to_the_stock_at_203_dpi(label, width, height):
    zpl = render_zpl(label)
    assert zpl.startswith("^XA")
    assert zpl.rstrip().endswith("^XZ")
    assert zpl.count("^XA") == zpl.count("^XZ") == 1
    assert command(zpl, "PW") == str(width)  # 4 in or 38 mm at 8 dots/mm
    assert command(zpl, "LL") == str(height)
    assert command(zpl, "CI") == "28"
    assert zpl.isascii()


@pytest.mark.parametrize("dpi", [203, 300])
@pytest.mark.parametrize("label", [BAG, TUBE], ids=["bag", "tube"])
def test_the_qr_carries_exactly_the_code_at_its_minimum_size_or_more(label, dpi):
    zpl = render_zpl(label, dpi)
    [(_, _, magnification, mode, payload)] = QR_FIELD.findall(zpl)
    assert zpl.count("^BQ") == 1
    assert (mode, payload) == ("MA", label.code)
    size_mm = QR_MODULES * int(magnification) / dpi * 25.4
    assert size_mm >= {Stock.BAG: 15, Stock.TUBE: 12}[label.stock]
    assert command(zpl, "PW") == str(round(label.stock.size_mm[0] / 25.4 * dpi))


@pytest.mark.parametrize("label", [BAG, TUBE, replace(BAG, reprint=True), replace(TUBE, reprint=True)])
def test_text_stays_on_the_label_and_off_the_qr(label):
    zpl = render_zpl(label)
    [(qr_x, qr_y, magnification, _, _)] = QR_FIELD.findall(zpl)
    quiet = 4 * int(magnification)
    qr = (
        int(qr_x) - quiet,
        int(qr_y) - quiet,
        int(qr_x) + 25 * int(magnification),
        int(qr_y) + 25 * int(magnification),
    )
    width, height = int(command(zpl, "PW")), int(command(zpl, "LL"))
    fields = text_fields(zpl)
    assert len(fields) == zpl.count("^FH")
    for field in fields:
        assert 0 <= field.x and field.x + field.width <= width, field
        assert 0 <= field.y and field.bottom <= height, field
        clear = field.x + field.width <= qr[0] or field.x >= qr[2] or field.bottom <= qr[1] or field.y >= qr[3]
        assert clear, field


def test_the_bag_texts_are_all_there_and_non_ascii_goes_through_fh():
    zpl = render_zpl(BAG)
    texts = [field.text for field in text_fields(zpl)]
    for expected in (
        BAG.code,
        f"COI {BAG.coi}",
        f"Batch {BAG.batch_number}",
        "Bag 1 of 2",
        BAG.description,
        FOR_AUTOLOGOUS_USE_ONLY,
        STORAGE,
        "Volume 68 mL",
        "CAR+ viable T cells 6.80 × 10⁷",
        "Dose 1.00 × 10⁶ cells/kg (68 kg)",
        "All 2 bags 1.36 × 10⁸ cells, 2.00 × 10⁶ cells/kg",
        "Collected 2026-11-01 08:30 UTC",
        "Filled 2026-11-20 10:35 UTC",
        "Expires 2027-11-20 10:35 UTC",
        *BAG.warnings,
        BAG.investigational,
    ):
        assert expected in texts
    assert "_E2_89_A4" in zpl  # ≤
    assert "_E2_88_92" in zpl  # − (minus sign)
    assert "_C2_B0" in zpl  # °
    assert "REPRINT" not in zpl


def test_the_tube_texts_are_all_there():
    texts = [field.text for field in text_fields(render_zpl(TUBE))]
    for expected in (TUBE.code, TUBE.coi, TUBE.batch_number, TUBE.description, "Sampled 2026-11-20 10:35 UTC"):
        assert expected in texts


@pytest.mark.parametrize("label", [BAG, TUBE], ids=["bag", "tube"])
def test_a_reprint_says_so_white_on_black(label):
    zpl = render_zpl(replace(label, reprint=True))
    [reprint] = [field for field in text_fields(zpl) if field.text == "REPRINT"]
    assert reprint.reversed
    assert re.search(r"\^GB(\d+),(\d+),\2\^FS", zpl), "a filled black box behind REPRINT"


@pytest.mark.parametrize("hostile", ["^XZ^XA^FO0,0^FDFAKE^FS", "~JA~DGR:X.GRF", "a_5E b \\& c", "^FH^FD"])
def test_user_text_cannot_inject_commands(hostile):
    label = replace(BAG, description=f"CAR T {hostile}", facility_name=hostile, patient_initials=hostile)
    zpl = render_zpl(label)
    assert "~" not in zpl
    assert zpl.count("^XA") == zpl.count("^XZ") == 1
    assert zpl.count("^FD") == len(text_fields(zpl)) + 1  # the QR's ^FD and one per text field
    texts = [field.text for field in text_fields(zpl)]
    assert f"CAR T {hostile}" in texts
    assert hostile in texts


def test_escaping_round_trips():
    for text in ("plain", "≤ −150 °C", "^~_\\", "Zoë"):
        assert unescape(zpl_escape(text)) == text
        assert not set(zpl_escape(text)) & set("^~\\")


def test_overflow_and_impossible_resolutions_are_refused():
    with pytest.raises(LabelOverflow):
        render_zpl(replace(BAG, description="word " * 400))
    with pytest.raises(ValueError, match="ZPL allows 10"):
        render_zpl(BAG, dpi=600)
    [(_, _, magnification, _, _)] = QR_FIELD.findall(render_zpl(TUBE, dpi=600))
    assert magnification == "10"
    with pytest.raises(ValueError):
        render_zpl(BAG, dpi=0)
