"""Label PDFs, read back: rendered at thermal-printer resolutions and decoded, text located with pdfplumber."""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pdfplumber
import pytest
import zxingcpp

from lab.services.progress import definition_for
from lab.services.signatures import current_values
from labels.data import (
    FOR_AUTOLOGOUS_USE_ONLY,
    NOT_EVALUATED_FOR_INFECTIOUS_SUBSTANCES,
    Dose,
    LabelData,
    LabelDate,
    Stock,
)
from labels.layout import MARGIN, MM, QR_STEP, LabelLayout, LabelOverflow, layout_label
from labels.pdf import layout_sheet, render_label, render_label_sheet
from labels.qr import QUIET_ZONE, qr_matrix
from labels.text import UnprintableText
from tests.factories import get_batch
from tests.readback import THERMAL_DPIS, bilevel, decode, pages, text_of, words
from workflows.codes import CodeKind, make_code
from workflows.formatting import decimal, format_datetime, format_number, format_quantity

pytestmark = pytest.mark.requirements("LBL-3")

STORAGE = "Store at ≤ −150 °C (LN2 vapour phase)"
LONG_PRODUCT = (
    "Autologous anti-CD19 chimeric antigen receptor (CAR) T cells, genetically modified ex vivo with a "
    "lentiviral vector encoding an anti-CD19 scFv, 4-1BB costimulatory and CD3-zeta signalling domains, "
    "cryopreserved in infusion medium containing 5 % dimethyl sulfoxide and human serum albumin, "
    "for single intravenous infusion after lymphodepleting chemotherapy under physician supervision"
)
MINIMUM_QR_MM = {Stock.BAG: 15.0, Stock.TUBE: 12.0}


def weight_text(weight_kg: float) -> str:
    """A patient weight as labels, record and certificate print it: every digit recorded (58 kg, 102.5 kg)."""
    return format_quantity(decimal(weight_kg).normalize(), "kg", None)

BAG = LabelData(
    code="C-A9999-26-000001-I",
    kind="Final product bag",
    stock=Stock.BAG,
    coi="CH-A9999-26-000001-*",
    batch_number="B-A9999-26-00001-5",
    description="Anti-CD19 CAR T cells, suspension for infusion",
    printed_at=datetime(2026, 11, 25, 14, 3, tzinfo=UTC),
    patient_ref="PR-000123",
    patient_initials="J.D.",
    patient_dob=date(1970, 1, 2),
    bag_number=1,
    bag_count=2,
    volume_ml=Decimal("68.0"),
    dose=Dose(Decimal("6.8e7"), Decimal(68), Decimal("1.36e8")),
    dates=(LabelDate("collected", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
           LabelDate("filled", datetime(2026, 11, 20, 10, 35, tzinfo=UTC)),
           LabelDate("expires", datetime(2027, 11, 20, 10, 35, tzinfo=UTC))),
    storage=STORAGE,
    facility_name="CellTrail GMP Facility",
    facility_address=("1 Example Way", "Springfield, XY 12345, USA"),
    regulatory_lines=(FOR_AUTOLOGOUS_USE_ONLY, NOT_EVALUATED_FOR_INFECTIOUS_SUBSTANCES),
    warnings=("For intravenous use only.", "Do not irradiate.", "Do NOT use a leukodepleting filter."),
    investigational="CAUTION: New Drug. Limited by Federal (or United States) law to investigational use.",
)
TUBE = replace(
    BAG,
    code="C-A9999-26-000002-G",
    kind="QC sample",
    description="QC release sample of the final product",
    stock=Stock.TUBE,
    bag_number=None,
    bag_count=None,
    volume_ml=None,
    dose=None,
    dates=(LabelDate("sampled", datetime(2026, 11, 20, 10, 35, tzinfo=UTC)),),
    regulatory_lines=(),
    warnings=(),
    investigational=None,
)
LABELS = {
    "bag": BAG,
    "bag-long-product": replace(BAG, description=LONG_PRODUCT),
    "bag-reprint": replace(BAG, reprint=True, copy_note="Reprint 1 of 1, reason: label smudged"),
    "bag-2-of-2": replace(BAG, code="C-A9999-26-000003-E", bag_number=2),
    "apheresis-bag": replace(BAG, kind="Apheresis bag", description="Autologous leukapheresis product", bag_number=None,
                             bag_count=None, dose=None, dates=BAG.dates[:1], warnings=(), investigational=None),
    "short-bag": replace(BAG, kind="Culture bag", description="T cells in culture", bag_number=None, bag_count=None,
                         volume_ml=None, dose=None, dates=BAG.dates[:1], regulatory_lines=(), warnings=(),
                         investigational=None, facility_address=()),
    "tube": TUBE,
    "tube-reprint": replace(TUBE, reprint=True),
    "tube-expiring": replace(TUBE, kind="Retain sample", dates=BAG.dates[1:]),
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
    one_pixel_mm = 25.4 / dpi  # the decoder measures the symbol to a pixel
    assert printed_qr_mm(barcode, dpi) >= MINIMUM_QR_MM[label.stock] - one_pixel_mm


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
    # A tube has room for what the sample is, not for the kind's title as well.
    for expected in (label.code, label.coi, label.batch_number,
                     label.kind if label.stock is Stock.BAG else label.description):
        assert expected in text
    assert ("REPRINT" in text) == label.reprint


@pytest.mark.requirements("LBL-1")
def test_a_product_bag_label_states_everything_21_cfr_1271_370_asks(app, make_batch, login):
    """Read from the label the app prints for a recorded batch: 21 CFR 1271.370(b)/(c), 1271.90(c),
    USP <1046> patient identifiers and lot, and DOMAIN.md §3.5's bag label fields."""
    app.config["FACILITY_ADDRESS"] = ["1 Example Way", "Springfield, XY 12345, USA"]
    number = make_batch()
    with app.app_context():
        batch = get_batch(number)
        [bag] = [c for c in batch.containers if c.kind == "product_bag"]
        definition = definition_for(batch)
        kind = definition.container_kinds[bag.kind]
        fill = bag.created_entry
        receipt = next(e for e in batch.entries if e.step_key == "receipt")
        collected = datetime.fromisoformat(current_values(receipt)["collection_end"].text)
        cells = decimal(current_values(fill)["car_t_per_ml"].text) * decimal(bag.volume_ml)
        patient = batch.patient
        expected = [
            definition.product, bag.code, f"COI {patient.coi}", f"Batch {number}",
            f"Patient {patient.patient_ref}", f"Initials {patient.initials}", f"DOB {patient.date_of_birth.isoformat()}",
            "Bag 1 of 1", f"Volume {format_quantity(bag.volume_ml, 'mL')}",
            f"CAR+ viable T cells {format_number(cells)}",
            (f"Dose {format_quantity(cells / decimal(patient.weight_kg), 'cells/kg')} "
             f"({weight_text(patient.weight_kg)})"),
            f"Collected {format_datetime(collected)}", f"Filled {format_datetime(fill.performed_at)}",
            f"Expires {format_datetime(fill.performed_at + timedelta(days=kind.shelf_life_days or 0))}",
            kind.storage, *kind.regulatory, *kind.warnings, definition.investigational,
            app.config["FACILITY_NAME"], *app.config["FACILITY_ADDRESS"],
        ]
        code = bag.code
    assert {FOR_AUTOLOGOUS_USE_ONLY, NOT_EVALUATED_FOR_INFECTIOUS_SUBSTANCES} <= set(kind.regulatory)
    assert kind.shelf_life_days and kind.warnings and definition.investigational
    response = login("tech1").get(f"/containers/{code}/label.pdf", query_string={"reason": "inspection copy"})
    assert response.status_code == 200
    text = text_of(response.data)
    for fact in expected:
        assert fact in text, fact


@pytest.mark.parametrize("name", ["apheresis-bag", "short-bag"])
def test_the_qr_is_as_large_as_the_text_leaves_room_for(name):
    """One step more QR and some text would have to shrink or wrap further (or not fit at all)."""
    label = LABELS[name]
    chosen = layout_label(label)
    assert chosen.qr.width > MINIMUM_QR_MM[label.stock] * MM + QR_STEP
    try:
        bigger = layout_label(label, qr_size=chosen.qr.width + QR_STEP)
    except LabelOverflow:
        return
    before = {block.text: block for block in chosen.blocks}
    assert any(block.size < before[block.text].size or len(block.lines) > len(before[block.text].lines)
               for block in bigger.blocks)


@pytest.mark.parametrize("name", LABELS)
def test_no_large_band_of_the_label_is_left_empty(name):
    label = LABELS[name]
    layout = layout_label(label)
    lowest = min([layout.qr.y, *(block.box.y for block in layout.blocks)])
    band = lowest - MARGIN[label.stock]
    assert band <= 0.06 * layout.height, f"{band / MM:.1f} mm left empty above the bottom margin"


def test_a_label_with_less_to_say_gets_a_larger_qr():
    assert layout_label(LABELS["short-bag"]).qr.width > layout_label(LABELS["apheresis-bag"]).qr.width * 0.99
    assert layout_label(LABELS["apheresis-bag"]).qr.width >= 2 * layout_label(BAG).qr.width


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
    assert product.size < next(block.size for block in layout_label(BAG).blocks if block.text == BAG.description)
    assert product.size >= 6


def test_text_that_cannot_fit_raises_label_overflow():
    with pytest.raises(LabelOverflow, match="below the QR"):
        render_label(replace(BAG, description=" ".join([LONG_PRODUCT] * 6)))
    with pytest.raises(LabelOverflow, match="wider than the label"):
        render_label(replace(TUBE, description="Cryopreserved-retain-sample-of-the-final-product"))
    with pytest.raises(LabelOverflow):
        render_label_sheet([BAG, replace(BAG, description=" ".join([LONG_PRODUCT] * 6))])


def test_tube_labels_carry_the_essentials_only():
    text = text_of(render_label(TUBE))
    assert TUBE.description in text
    assert "PR-000123" not in text and STORAGE not in text and FOR_AUTOLOGOUS_USE_ONLY not in text
    assert "Sampled 2026-11-20 10:35 UTC" in text
    text = text_of(render_label(LABELS["tube-expiring"]))
    assert "Filled 2026-11-20 10:35 UTC" in text and "Expires 2027-11-20 10:35 UTC" in text


def test_the_same_label_gives_the_same_bytes():
    assert render_label(BAG) == render_label(BAG)
    assert render_label_sheet([BAG, TUBE]) == render_label_sheet([BAG, TUBE])


def test_text_the_font_cannot_print_is_refused():
    with pytest.raises(UnprintableText):
        render_label(replace(BAG, description="CAR T 細胞"))


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
        {"description": ""},
        {"dates": (*BAG.dates, BAG.dates[0])},
    ],
)
def test_label_data_refuses_what_cannot_be_printed_right(changes):
    with pytest.raises(ValueError):
        replace(BAG, **changes)


def test_a_date_needs_its_zone_and_a_known_meaning_and_a_dose_a_weight():
    with pytest.raises(ValueError, match="timezone-aware"):
        LabelDate("filled", datetime(2026, 11, 20, 10, 35))
    with pytest.raises(ValueError, match="not 'thawed'"):
        LabelDate("thawed", datetime(2026, 11, 20, 10, 35, tzinfo=UTC))
    for cells, weight, total in ((Decimal(0), Decimal(68), None), (Decimal("6.8e7"), Decimal(0), None),
                                 (Decimal("6.8e7"), Decimal(68), Decimal("1e7"))):
        with pytest.raises(ValueError, match="is not a dose"):
            Dose(cells, weight, total)


def test_a_qr_below_the_stock_minimum_is_refused():
    with pytest.raises(ValueError, match="at least 12 mm"):
        layout_label(TUBE, qr_size=11 * MM)


def batch_of_labels(count: int = 36) -> list[LabelData]:
    """``count`` labels, one bag after five tubes, each with its own container code."""
    labels = []
    for sequence in range(1, count + 1):
        code = str(make_code(CodeKind.CONTAINER, "A9999", 26, sequence))
        if sequence % 6 == 0:
            labels.append(replace(BAG, code=code, bag_number=sequence // 6, bag_count=count // 6))
        else:
            labels.append(replace(TUBE, code=code))
    return labels


def decoded_label_by_label(labels: list[LabelData], paper: str, dpi: int = 203) -> Counter:
    """Render ``labels`` on a sheet and decode each label's crop, grey and bi-level, checking that
    each holds exactly its own code: the codes found, counted."""
    pdf = render_label_sheet(labels, paper)
    placements = layout_sheet(labels, paper)
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
    return found


@pytest.mark.parametrize("paper", ["A4", "Letter"])
def test_a_sheet_of_36_labels_decodes_label_by_label(paper):
    labels = batch_of_labels()
    assert decoded_label_by_label(labels, paper) == Counter(label.code for label in labels)
    # Stocks are grouped: no page holds both.
    placements = layout_sheet(labels, paper)
    stocks_per_page = Counter((p.page, labels[p.index].stock) for p in placements)
    assert len({page for page, _ in stocks_per_page}) == len(stocks_per_page)


def test_every_qr_of_a_sheet_of_100_distinct_labels_decodes():
    """Every symbol has the one fixed mask pattern (labels.qr.MASK), none chosen by penalty score:
    a hundred different codes, each read back from its own label."""
    labels = batch_of_labels(100)
    assert len({label.code for label in labels}) == 100
    assert decoded_label_by_label(labels, "A4") == Counter(label.code for label in labels)


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
    assert product in text_of(render_label(replace(BAG, description=product)))
