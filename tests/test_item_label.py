"""Item labels (material lots, equipment), read back: the text printed and the QR decoded at thermal resolutions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from labels.item_label import ItemLabel, ItemLine, layout_item_label, render_item_label
from labels.layout import MM, LabelOverflow
from labels.text import UnprintableText
from tests.readback import THERMAL_DPIS, bilevel, decode, pages, text_of

pytestmark = pytest.mark.requirements("LBL-3")

PRINTED = datetime(2026, 11, 30, 9, 5, tzinfo=UTC)
EQUIPMENT = ItemLabel(
    title="Equipment", code="E-A9999-26-00001-Y", name="CliniMACS Prodigy", printed_at=PRINTED,
    lines=(ItemLine("Serial no.", "PRD-4471"), ItemLine("Location", "Clean room 2, bench B"),
           ItemLine("Calibration due", "2027-05-30", bold=True), ItemLine("Status", "In service, qualified", bold=True)),
)
LOT = ItemLabel(
    title="Material lot", code="L-A9999-26-000012-7", name="TexMACS medium, 500 mL", printed_at=PRINTED,
    lines=(ItemLine("Supplier lot", "6230812345"), ItemLine("Expires", "2027-03-31", bold=True),
           ItemLine("Status", "QUARANTINE", bold=True)),
)


@pytest.mark.parametrize("label", [EQUIPMENT, LOT], ids=["equipment", "lot"])
def test_the_label_prints_its_title_code_and_lines(label: ItemLabel) -> None:
    text = text_of(render_item_label(label))
    for expected in (label.title.upper(), label.code, label.name, *(line.text for line in label.lines),
                     "Printed 2026-11-30 09:05 UTC"):
        assert expected in text


@pytest.mark.parametrize("dpi", THERMAL_DPIS)
@pytest.mark.parametrize("label", [EQUIPMENT, LOT], ids=["equipment", "lot"])
def test_the_qr_decodes_to_the_code_at_thermal_resolutions(label: ItemLabel, dpi: int) -> None:
    [image] = pages(render_item_label(label), dpi)
    assert [barcode.text for barcode in decode(bilevel(image))] == [label.code]


def test_the_page_is_the_4_by_2_inch_stock_and_the_qr_at_least_15_mm() -> None:
    layout = layout_item_label(EQUIPMENT)
    assert (round(layout.width / MM, 1), round(layout.height / MM, 1)) == (101.6, 50.8)
    assert layout.qr.width >= 15 * MM - 1e-6
    for block in layout.blocks:
        assert not block.box.intersects(layout.qr)
        assert 0 <= block.box.x and block.box.x1 <= layout.width + 1e-6 and block.box.y >= 0


def test_output_is_reproducible() -> None:
    assert render_item_label(EQUIPMENT) == render_item_label(EQUIPMENT)


def test_long_text_wraps_and_shrinks_without_losing_a_word() -> None:
    long = ItemLabel(title="Equipment", code="E-A9999-26-00001-Y", printed_at=PRINTED,
                     name="Biological safety cabinet class II type A2 with UV lamp and HEPA filters",
                     lines=tuple(ItemLine(f"Line {n}", "some value that is rather long") for n in range(6)))
    text = text_of(render_item_label(long))
    assert "Biological safety cabinet class II type A2 with UV lamp and HEPA filters" in text
    assert "Line 5: some value that is rather long" in text


@pytest.mark.parametrize("change, error", [
    ({"code": "e-lower"}, ValueError),
    ({"code": ""}, ValueError),
    ({"printed_at": datetime(2026, 11, 30, 9, 5)}, ValueError),
    ({"name": " "}, ValueError),
    ({"name": "x" * 201}, ValueError),
    ({"lines": tuple(ItemLine("L", str(n)) for n in range(9))}, ValueError),
])
def test_bad_label_data_is_refused(change: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        ItemLabel(**{"title": "Equipment", "code": "E-A9999-26-00001-Y", "name": "Prodigy", "printed_at": PRINTED,
                     **change})


def test_unprintable_characters_and_overflow_are_refused() -> None:
    with pytest.raises(UnprintableText):
        render_item_label(ItemLabel(title="Equipment", code="E1", name="Incubator \u2603\ufffe", printed_at=PRINTED))
    crowded = ItemLabel(title="Equipment", code="E1", name="Prodigy", printed_at=PRINTED,
                        lines=tuple(ItemLine("Note", "word " * 38) for _ in range(8)))
    with pytest.raises(LabelOverflow):
        render_item_label(crowded)
