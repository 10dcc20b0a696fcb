"""The expansion chart: one drawing, as SVG on the batch page and as vector graphics in the
executed batch record, from the batch's current values; out-of-limit values in words."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from flask import Flask
from reportlab.graphics import renderPDF

from lab.services.batch_record import batch_record
from lab.services.expansion import expansion_chart
from labels.chart import (
    ExpansionChart,
    ExpansionPoint,
    ExpansionWindow,
    decade_label,
    expansion_drawing,
    expansion_svg,
    fold_label,
)
from labels.digest import canonical_json, record_digest
from tests.factories import entries, get_batch, page_text, signature, signed_in
from tests.readback import text_of

SVG = "{http://www.w3.org/2000/svg}"
AXIS_TITLES = ("Viable cells", "Fold expansion", "Viability %", "Culture day")
LOW = "Viability 62 % is below the limit ≥ 70 %"
#: Like the demo's SLE-02: counts on days 3, 5 and 6, the last below the viability limit.
DAYS = (
    {"culture_day": "3", "viable_cells": "4.0e8", "viability_pct": "90"},
    {"culture_day": "5", "viable_cells": "1.2e9", "viability_pct": "91"},
    {"culture_day": "6", "viable_cells": "6.1e8", "viability_pct": "62",
     "comment": "Viability below limit after medium exchange; supervisor informed."},
)
WINDOWS = (ExpansionWindow("Lentiviral transduction", 1, 2), ExpansionWindow("Harvest and wash", 12, 13))


def demo_chart(**changes: object) -> ExpansionChart:
    points = (
        ExpansionPoint(1, 1.0e8, None, 1.0, step="Lentiviral transduction"),
        ExpansionPoint(3, 4.0e8, 90, 4.0, viability_limit_min=70),
        ExpansionPoint(5, 1.2e8, 91, 1.2, viability_limit_min=70, corrected=True),
        ExpansionPoint(6, 6.1e8, 62, 6.1, True, viability_limit_min=70),
    )
    chart = ExpansionChart(points, 1.0e8, 70, None, WINDOWS, "expansion", "Activation (day 0)")
    return replace(chart, **changes)  # type: ignore[arg-type]


def svg_tree(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def texts(svg: str) -> list[str]:
    return [node.text or "" for node in svg_tree(svg).iter(f"{SVG}text")]


def points(svg: str, series: str) -> list[str]:
    """The culture days of the point groups of ``series`` (cells, viability, seeded)."""
    return [g.get("data-day", "") for g in svg_tree(svg).iter(f"{SVG}g") if g.get("data-series") == series]


def expansion_section(html: str) -> str:
    match = re.search(r'<section id="expansion".*?</section>', html, re.DOTALL)
    assert match is not None, "no expansion section"
    return match.group(0)


# --- the drawing, pure ----------------------------------------------------------------------------


def test_the_svg_has_a_point_per_count_the_axis_titles_the_limit_and_the_flag_in_words():
    svg = expansion_svg(demo_chart())
    root = svg_tree(svg)
    assert root.get("role") == "img" and root.get("width") == "100%" and root.get("viewBox", "").startswith("0 0 ")
    assert root.get("height") is None  # scales with the page
    assert root.find(f"{SVG}title") is not None and "62 % is below the limit" in (root.findtext(f"{SVG}desc") or "")
    assert root.get("aria-labelledby") == "expansion-chart-title expansion-chart-desc"
    assert points(svg, "cells") == ["1", "3", "5", "6"]  # one per culture day
    assert points(svg, "viability") == ["3", "5", "6"]
    assert points(svg, "seeded") == ["0"]
    words = texts(svg)
    assert set(AXIS_TITLES) <= set(words)
    assert "limit ≥ 70 %" in words
    assert "62 % below limit" in words  # beside the point, not colour alone
    assert {"10⁷", "10⁸", "10⁹"} <= set(words) and {"1×", "10×"} <= set(words)
    assert {"Lentiviral", "transduction", "day 1–2", "Harvest and wash", "day 12–13"} <= set(words)
    tooltip = next(g for g in root.iter(f"{SVG}g") if g.get("data-series") == "viability" and g.get("data-day") == "6")
    assert "OUT OF LIMIT: " + LOW in (tooltip.findtext(f"{SVG}title") or "")
    assert 'style="' not in svg.split(">", 1)[1]  # drawn with presentation attributes only


def test_tick_labels_are_powers_of_ten():
    assert [decade_label(e) for e in (7, 8, 9, 12, -3)] == ["10⁷", "10⁸", "10⁹", "10¹²", "10⁻³"]
    assert [fold_label(e) for e in (-3, -1, 0, 1, 3, 4)] == ["10⁻³×", "0.1×", "1×", "10×", "1000×", "10⁴×"]


def test_without_a_seeded_count_there_is_no_fold_axis():
    chart = demo_chart(seeded_cells=None, points=(ExpansionPoint(6, 1.5e9, 92, None, viability_limit_min=70),))
    svg = expansion_svg(chart)
    assert "Fold expansion" not in texts(svg) and "Viable cells" in texts(svg)
    assert points(svg, "cells") == ["6"] and points(svg, "seeded") == []


def test_extreme_values_and_limits_on_both_sides_are_drawn_and_said():
    chart = ExpansionChart((
        ExpansionPoint(1, 0.0, 45, 0.0, True, viability_limit_min=50, viability_limit_max=95),
        ExpansionPoint(3, 5e3, 99, 1e-3, True, viability_limit_min=50, viability_limit_max=95),
        ExpansionPoint(30, 9e11, 80, 1.8e5, viability_limit_min=50, viability_limit_max=95),
    ), 5e6, 50, 95, WINDOWS, "expansion")
    words = texts(expansion_svg(chart))
    assert {"0 cells", "45 % below limit", "99 % above limit", "limit ≥ 50 %", "limit ≤ 95 %"} <= set(words)
    assert {"10³", "10¹³", "30"} <= set(words)
    assert renderPDF.drawToString(expansion_drawing(chart)).startswith(b"%PDF")


def test_crowded_flags_shorten_to_their_value():
    days = tuple(ExpansionPoint(d, 1e8 * 1.3 ** d, 64, 1.3 ** d, True, viability_limit_min=70) for d in range(1, 31))
    words = texts(expansion_svg(demo_chart(points=days)))
    assert words.count("64 %") == 30 and "Below limit (labelled)" in words


# --- the batch page -------------------------------------------------------------------------------


def test_the_batch_page_shows_the_chart_and_its_data_table(app: Flask, make_batch, login):
    number = make_batch("harvest", expansion=DAYS)
    response = login("tech1").get(f"/batches/{number}")
    assert response.status_code == 200
    section = expansion_section(page_text(response))
    assert "<h2" in section and ">Expansion</h2>" in section
    svg = re.search(r"<svg.*?</svg>", section, re.DOTALL)
    assert svg is not None
    assert points(svg.group(0), "cells") == ["1", "3", "5", "6"]  # transduction's count, then the daily counts
    assert set(AXIS_TITLES) <= set(texts(svg.group(0))) and "62 % below limit" in texts(svg.group(0))
    table = section[section.index("<table"):]
    rows = re.findall(r'<th scope="row">(\d+)</th>', table)
    assert rows == ["0", "1", "3", "5", "6"]
    # Recorded counts with the digits typed (1.0e8, 6.1e8), the computed fold with three significant digits.
    assert "1 × 10⁸" in table and "6.1 × 10⁸</td>" in table and "6.1</td>" in table and "e8" not in table
    assert ">62 %" in table and "62.0" not in table
    # The entry above the chart shows the same count the same way (not the stored "6.1e8", which only the
    # audit trail at the foot of the page quotes, as stored).
    record = page_text(response).split('<section class="audit"')[0]
    assert "6.1 × 10⁸ cells" in record and "6.1e8" not in record
    assert "OUT OF LIMIT" in table and LOW in table
    assert table.count("OUT OF LIMIT") == 1


def chart_svg(text: str) -> str:
    svg = re.search(r"<svg.*?</svg>", expansion_section(text), re.DOTALL)
    assert svg is not None
    return svg.group(0)


def test_the_chart_counts_the_harvest_on_its_culture_day(app: Flask, make_batch):
    number = make_batch()
    with app.app_context():
        chart = expansion_chart(get_batch(number))
    assert chart is not None
    harvest = [p for p in chart.points if p.step == "Harvest and wash"]
    assert [(p.day, p.viable_cells, p.viability_pct, p.fold_expansion) for p in harvest] == [(12, 3.0e9, 91, 30.0)]
    assert (harvest[0].viability_limit_min, chart.viability_limit_min) == (80, 70)
    assert [w.label for w in chart.windows] == ["Lentiviral transduction", "Harvest and wash"]


def test_a_corrected_count_is_drawn_with_its_new_value(app: Flask, make_batch, login):
    number = make_batch("harvest", expansion=DAYS)
    client = login("tech1")
    drawn_before = chart_svg(page_text(client.get(f"/batches/{number}")))  # the drawing kept for this chart
    with app.app_context():
        entry = next(e for e in entries(number, "expansion") if e.occurrence == 2)
        entry_id, version = entry.id, get_batch(number).version
    response = client.post(f"/batches/{number}/entries/{entry_id}/fields/viable_cells/correct", data={
        "value": "1.2e8", "reason": "Transcription error: the counter print-out reads 1.2e8.",
        "batch_version": version, **signature(signed_in(app, client))})
    assert response.status_code == 302, page_text(response)
    section = expansion_section(page_text(client.get(f"/batches/{number}")))
    assert "1.2 × 10⁸" in section and "1.2 × 10⁹" not in section
    assert "(corrected)" in section
    drawn_after = chart_svg(section)  # the page never shows the drawing of the chart before the correction
    assert drawn_after != drawn_before and "1.2 × 10⁸" in drawn_after and "1.2 × 10⁸" not in drawn_before
    with app.app_context():
        chart = expansion_chart(get_batch(number))
    assert chart is not None
    day5 = next(p for p in chart.points if p.day == 5)
    assert (day5.viable_cells, day5.fold_expansion, day5.corrected) == (1.2e8, 1.2, True)


@pytest.mark.parametrize("until", ["receipt", "transduction", "expansion"])
def test_no_chart_before_the_first_daily_count(app: Flask, make_batch, login, until):
    number = make_batch(until)
    html = page_text(login("tech1").get(f"/batches/{number}"))
    assert 'id="expansion"' not in html and "<svg" not in html
    with app.app_context():
        batch = get_batch(number)
        assert expansion_chart(batch) is None
        assert batch_record(batch).expansion is None


# --- the batch record -----------------------------------------------------------------------------


def test_the_record_pdf_draws_the_same_chart_after_the_expansion_step(app: Flask, make_batch, login):
    number = make_batch("harvest", expansion=DAYS)
    response = login("qa1").get(f"/batches/{number}/record.pdf")
    assert response.status_code == 200
    text = text_of(response.data)
    chart = text[text.index("Expansion chart"):]
    for words in (*AXIS_TITLES, "limit ≥ 70 %", "62 % below limit", "10⁸", "Harvest and wash"):
        assert words in chart, words
    assert LOW.lower() in chart  # the caption says it in a sentence too
    assert text.index("Expansion (daily count)") < text.index("Expansion chart") < text.index(
        "Harvest and wash (second-person verification)")


def test_the_chart_stays_out_of_the_records_digest(app: Flask, make_batch):
    number = make_batch("harvest", expansion=DAYS)
    with app.app_context():
        record = batch_record(get_batch(number))
    assert record.expansion is not None
    assert record_digest(record) == record_digest(replace(record, expansion=None))
    assert "expansion" not in json.loads(canonical_json(record))["record"]
