"""Label PDFs, read back: rendered at thermal-printer resolutions and decoded, text located with pdfplumber."""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pdfplumber
import pytest
import zxingcpp

from labels.data import (
    FOR_AUTOLOGOUS_USE_ONLY,
    NOT_EVALUATED_FOR_INFECTIOUS_SUBSTANCES,
    LabelData,
    Stock,
)
from labels.layout import MM, LabelLayout, LabelOverflow, layout_label
from labels.pdf import layout_sheet, render_label, render_label_sheet
from labels.qr import QUIET_ZONE, qr_matrix
from labels.text import UnprintableText
from tests.readback import THERMAL_DPIS, bilevel, decode, pages, text_of, words
from workflows.codes import CodeKind, make_code

STORAGE = "Store at ≤ −150 °C (LN2 vapour phase)"
LONG_PRODUCT = (
    "Autologous anti-CD19 chimeric antigen receptor (CAR) T cells, genetically modified ex vivo with a "
    "lentiviral vector encoding an anti-CD19 scFv, 4-1BB costimulatory and CD3-zeta signalling domains, "
    "cryopreserved in infusion medium containing 5 % dimethyl sulfoxide and human serum albumin, "
    "for single intravenous infusion after lymphodepleting chemotherapy under physician supervision"
)
MINIMUM_QR_MM = {Stock.BAG: 15.0, Stock.TUBE: 12.0}

BAG = LabelData(
    code="C-A9999-26-000001-I",
    kind="Final product bag",
    stock=Stock.BAG,
    coi="CH-A9999-26-000001-*",
    batch_number="B-A9999-26-00001-5",
    product="Anti-CD19 CAR T cells, suspension for infusion",
    printed_at=datetime(2026, 11, 25, 14, 3, tzinfo=UTC),
    patient_ref="PR-000123",
    patient_initials="J.D.",
    patient_dob=date(1970, 1, 2),
    bag_number=1,
    bag_count=2,
    volume_ml=Decimal("68.0"),
    collected_on=date(2026, 11, 1),
    filled_on=date(2026, 11, 20),
    expires_on=date(2027, 11, 20),
    storage=STORAGE,
    facility_name="CellTrail GMP Facility",
    facility_address=("1 Example Way", "Springfield, XY 12345, USA"),
    regulatory_lines=(FOR_AUTOLOGOUS_USE_ONLY, NOT_EVALUATED_FOR_INFECTIOUS_SUBSTANCES),
)
TUBE = replace(
    BAG,
    code="C-A9999-26-000002-G",
    kind="QC sample",
    stock=Stock.TUBE,
    bag_number=None,
    bag_count=None,
    volume_ml=None,
    regulatory_lines=(),
)
LABELS = {
    "bag": BAG,
    "bag-long-product": replace(BAG, product=LONG_PRODUCT),
    "bag-reprint": replace(BAG, reprint=True, copy_note="Reprint 1 of 1, reason: label smudged"),
    "bag-2-of-2": replace(BAG, code="C-A9999-26-000003-E", bag_number=2),
    "apheresis-bag": replace(BAG, kind="Apheresis bag", bag_number=None, bag_count=None, regulatory_lines=()),
    "tube": TUBE,
    "tube-reprint": replace(TUBE, reprint=True),
    "tube-collected": replace(TUBE, kind="Retain sample", filled_on=None, expires_on=None),
}


def printed_qr_mm(barcode: zxingcpp.Barcode, dpi: int) -> float:
    """The decoded symbol's side, scaled up to include its quiet zone, in millimetres."""
    position = barcode.position
    side_px = max(
        math.dist((position.top_left.x, position.top_left.y), (position.top_right.x, position.top_right.y)),
        math.dist((position.top_left.x, position.top_left.y), (position.bottom_left.x, position.bottom_left.y)),
    )
    modules = 17 + 4 * int(barcode.extra["Version"])
    return side_px / dpi * 25.4 * (modules + 2 * QUIET_ZONE) / modules


def qr_box_top_down(layout: LabelLayout) -> tuple[float, float, float, float]:
    """The QR box as pdfplumber measures it: x0, top, x1, bottom from the page's top-left corner."""
    return layout.qr.x, layout.height - layout.qr.y1, layout.qr.x1, layout.height - layout.qr.y


@pytest.mark.parametrize("name", LABELS)
def test_the_page_is_exactly_the_stock(name):
    label = LABELS[name]
    with pdfplumber.open(io.BytesIO(render_label(label))) as document:
        assert len(document.pages) == 1
        page = document.pages[0]
        width_mm, height_mm = label.stock.size_mm
        assert page.width == pytest.approx(width_mm * MM, abs=0.01)
        assert page.height == pytest.approx(height_mm * MM, abs=0.01)


@pytest.mark.parametrize("dpi", THERMAL_DPIS)
@pytest.mark.parametrize("thermal", [False, True], ids=["grey", "bilevel"])
@pytest.mark.parametrize("name", LABELS)
def test_the_qr_decodes_to_the_code_alone_at_printer_resolutions(name, dpi, thermal):
    label = LABELS[name]
    [image] = pages(render_label(label), dpi)
    [barcode] = decode(bilevel(image) if thermal else image)
    assert barcode.text == label.code
    assert printed_qr_mm(barcode, dpi) >= MINIMUM_QR_MM[label.stock]


@pytest.mark.parametrize("name", LABELS)
def test_the_layout_reports_the_qr_where_it_is_drawn(name):
    """Every filled rectangle outside the REPRINT box is a QR module inside the reported box."""
    label = LABELS[name]
    layout = layout_label(label)
    x0, top, x1, bottom = qr_box_top_down(layout)
    module = layout.qr.width / len(qr_matrix(label.code))
    with pdfplumber.open(io.BytesIO(render_label(label))) as document:
        rects = document.pages[0].rects
    inverse = [block.box for block in layout.blocks if block.inverse]

    def in_inverse_box(rect: dict) -> bool:
        return any(
            rect["x0"] >= b.x - 0.01
            and rect["x1"] <= b.x1 + 0.01
            and rect["top"] >= layout.height - b.y1 - 0.01
            and rect["bottom"] <= layout.height - b.y + 0.01
            for b in inverse
        )

    modules = [rect for rect in rects if not in_inverse_box(rect)]
    assert len(rects) - len(modules) == len(inverse)
    assert min(r["x0"] for r in modules) == pytest.approx(x0 + QUIET_ZONE * module, abs=0.01)
    assert max(r["x1"] for r in modules) == pytest.approx(x1 - QUIET_ZONE * module, abs=0.01)
    assert min(r["top"] for r in modules) == pytest.approx(top + QUIET_ZONE * module, abs=0.01)
    assert max(r["bottom"] for r in modules) == pytest.approx(bottom - QUIET_ZONE * module, abs=0.01)
    assert layout.qr.width >= MINIMUM_QR_MM[label.stock] * MM


@pytest.mark.parametrize("name", LABELS)
def test_every_word_is_on_the_label_and_clear_of_the_qr(name):
    label = LABELS[name]
    pdf = render_label(label)
    layout = layout_label(label)
    qr_x0, qr_top, qr_x1, qr_bottom = qr_box_top_down(layout)
    found = words(pdf)
    assert found
    for word in found:
        assert 0 <= word["x0"] and word["x1"] <= layout.width, word
        assert 0 <= word["top"] and word["bottom"] <= layout.height, word
        clear = word["x1"] <= qr_x0 or word["x0"] >= qr_x1 or word["bottom"] <= qr_top or word["top"] >= qr_bottom
        assert clear, f"{word['text']!r} overlaps the QR"


@pytest.mark.parametrize("name", LABELS)
def test_the_essentials_are_printed(name):
    label = LABELS[name]
    text = text_of(render_label(label))
    for expected in (label.code, label.coi, label.batch_number, label.kind):
        assert expected in text
    assert ("REPRINT" in text) == label.reprint


def test_a_product_bag_label_states_everything_21_cfr_1271_370_asks():
    text = text_of(render_label(BAG))
    for expected in (
        BAG.product,
        "Bag 1 of 2",
        "Volume 68 mL",
        "PR-000123",
        "J.D.",
        "DOB 1970-01-02",
        "Collected 2026-11-01",
        "Filled 2026-11-20",
        "Expires 2027-11-20",
        STORAGE,
        FOR_AUTOLOGOUS_USE_ONLY,
        NOT_EVALUATED_FOR_INFECTIOUS_SUBSTANCES,
        "CellTrail GMP Facility",
        "Springfield, XY 12345, USA",
        "Printed 2026-11-25 14:03 UTC",
    ):
        assert expected in text


def test_the_regulatory_lines_are_bold():
    with pdfplumber.open(io.BytesIO(render_label(BAG))) as document:
        fonts = {word["text"]: word["fontname"] for word in document.pages[0].extract_words(extra_attrs=["fontname"])}
    assert "Bold" in fonts["AUTOLOGOUS"]


def test_bag_n_of_m_is_printed():
    assert "Bag 2 of 2" in text_of(render_label(LABELS["bag-2-of-2"]))


@pytest.mark.parametrize("name", ["bag-reprint", "tube-reprint"])
def test_reprint_is_white_on_a_black_box(name):
    label = LABELS[name]
    with pdfplumber.open(io.BytesIO(render_label(label))) as document:
        page = document.pages[0]
        chars = [char for char in page.chars if char["text"] in "REPRINT"]
        word = next(w for w in page.extract_words(extra_attrs=["non_stroking_color"]) if w["text"] == "REPRINT")
        box = next(
            r
            for r in page.rects
            if r["x0"] <= word["x0"]
            and word["x1"] <= r["x1"]
            and r["top"] <= word["top"]
            and word["bottom"] <= r["bottom"]
        )
    assert chars
    assert tuple(word["non_stroking_color"]) in {(1,), (1, 1, 1)}
    assert tuple(box["non_stroking_color"]) in {(0,), (0, 0, 0)}
    if label.copy_note:
        assert label.copy_note in text_of(render_label(label))


def test_a_long_product_name_shrinks_and_wraps_but_keeps_every_word():
    label = LABELS["bag-long-product"]
    layout = layout_label(label)
    [product] = [block for block in layout.blocks if block.text == LONG_PRODUCT]
    assert len(product.lines) > 1
    assert " ".join(word["text"] for word in words(render_label(label))).count(LONG_PRODUCT) == 1
    assert product.size < next(block.size for block in layout_label(BAG).blocks if block.text == BAG.product)
    assert product.size >= 6


def test_text_that_cannot_fit_raises_label_overflow():
    with pytest.raises(LabelOverflow, match="below the QR"):
        render_label(replace(BAG, product=" ".join([LONG_PRODUCT] * 6)))
    with pytest.raises(LabelOverflow, match="wider than the label"):
        render_label(replace(TUBE, kind="Cryopreserved-retain-sample-of-the-final-product"))
    with pytest.raises(LabelOverflow):
        render_label_sheet([BAG, replace(BAG, product=" ".join([LONG_PRODUCT] * 6))])


def test_tube_labels_carry_the_essentials_only():
    text = text_of(render_label(TUBE))
    assert TUBE.product not in text
    assert "PR-000123" not in text
    assert "Filled 2026-11-20" in text
    assert "Exp 2027-11-20" in text
    assert "Collected 2026-11-01" in text_of(render_label(LABELS["tube-collected"]))


def test_the_same_label_gives_the_same_bytes():
    assert render_label(BAG) == render_label(BAG)
    assert render_label_sheet([BAG, TUBE]) == render_label_sheet([BAG, TUBE])


def test_text_the_font_cannot_print_is_refused():
    with pytest.raises(UnprintableText):
        render_label(replace(BAG, product="CAR T 細胞"))


@pytest.mark.parametrize(
    "changes",
    [
        {"code": "c-a9999-26-000001-i"},
        {"code": "CA999926000001I"},
        {"code": "C-A9999-26-000001-J"},
        {"code": "C|A9999"},
        {"coi": "CH-A9999-26-000001-A"},
        {"batch_number": "B-A9999-26-00001-6"},
        {"printed_at": datetime(2026, 11, 25, 14, 3)},
        {"bag_number": 3},
        {"bag_count": None},
        {"volume_ml": Decimal(0)},
        {"kind": " "},
        {"product": ""},
    ],
)
def test_label_data_refuses_what_cannot_be_printed_right(changes):
    with pytest.raises(ValueError):
        replace(BAG, **changes)


def test_a_qr_below_the_stock_minimum_is_refused():
    with pytest.raises(ValueError, match="at least 12 mm"):
        layout_label(TUBE, qr_size=11 * MM)


def batch_of_labels() -> list[LabelData]:
    """30 tube and 6 bag labels, interleaved, each with its own container code."""
    labels = []
    for sequence in range(1, 37):
        code = str(make_code(CodeKind.CONTAINER, "A9999", 26, sequence))
        if sequence % 6 == 0:
            labels.append(replace(BAG, code=code, bag_number=sequence // 6, bag_count=6))
        else:
            labels.append(replace(TUBE, code=code))
    return labels


@pytest.mark.parametrize("paper", ["A4", "Letter"])
def test_a_sheet_of_36_labels_decodes_label_by_label(paper):
    labels = batch_of_labels()
    pdf = render_label_sheet(labels, paper)
    placements = layout_sheet(labels, paper)
    dpi = 203
    images = pages(pdf, dpi)
    page_width, page_height = {"A4": (595.28, 841.89), "Letter": (612, 792)}[paper]
    with pdfplumber.open(io.BytesIO(pdf)) as document:
        assert {(round(p.width), round(p.height)) for p in document.pages} == {(round(page_width), round(page_height))}
    assert len(images) == placements[-1].page + 1
    assert sorted(p.index for p in placements) == list(range(len(labels)))
    found = Counter()
    for placement in placements:
        label, box = labels[placement.index], placement.box
        assert (box.width, box.height) == pytest.approx(tuple(side * MM for side in label.stock.size_mm))
        assert 0 <= box.x and box.x1 <= page_width and 0 <= box.y and box.y1 <= page_height
        px = dpi / 72
        crop = images[placement.page].crop(
            (
                round(box.x * px),
                round((page_height - box.y1) * px),
                round(box.x1 * px),
                round((page_height - box.y) * px),
            )
        )
        for image in (crop, bilevel(crop)):
            [barcode] = decode(image)
            assert barcode.text == label.code
        found[barcode.text] += 1
    assert found == Counter(label.code for label in labels)
    # Stocks are grouped: no page holds both.
    stocks_per_page = Counter((p.page, labels[p.index].stock) for p in placements)
    assert len({page for page, _ in stocks_per_page}) == len(stocks_per_page)


def test_sheet_labels_do_not_overlap_one_another():
    placements = layout_sheet(batch_of_labels(), "A4")
    for first in placements:
        for second in placements:
            if first is not second and first.page == second.page:
                assert not first.box.intersects(second.box)


def test_a_sheet_refuses_no_labels_and_unknown_paper():
    with pytest.raises(ValueError, match="at least one label"):
        render_label_sheet([])
    with pytest.raises(ValueError, match="Unknown paper"):
        render_label_sheet([BAG], "A3")


def test_greek_and_laboratory_symbols_print():
    """DejaVu (fonts-dejavu-core) is needed here: Vera, the fallback, has no Greek."""
    product = "CAR T cells, IFN-γ ≥ 2-fold, 5 × 10⁸ cells in 68 µL ± 5 %"
    assert product in text_of(render_label(replace(BAG, product=product)))
