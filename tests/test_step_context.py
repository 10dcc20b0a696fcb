"""A step form shows what the technician needs to decide: each field's value in the last entry
of a repeatable step with its culture day, today's culture day against the step's window, and
the limits (lab/services/step_context.py, templates/batches/record.html)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient

from lab.services.progress import definition_for
from lab.services.step_context import StepContext, step_context
from lab.templating import localtime
from lab.views.batches import get_batch_or_404
from tests.factories import entries, page_text, post_step
from tests.queries import statements
from workflows.timing import Timing

Login = Callable[..., FlaskClient]


def _count(day: int, cells: str, viability: str = "90") -> dict[str, str]:
    return {"culture_day": str(day), "viable_cells": cells, "viability_pct": viability}


# Started 8 days ago: activation ~6.9 days ago, so today is culture day 6.
COUNTS = (_count(3, "2.0e8"), _count(4, "4.0e8", "88"), _count(5, "8.0e8", "65") | {"comment": "Low after feed."})


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _block(page: str, element_id: str) -> str:
    """The visible text of the element with ``element_id`` (a <p> or <div> without nesting of its kind)."""
    match = re.search(rf'<(p|div)[^>]* id="{element_id}"[^>]*>.*?</\1>', page, re.DOTALL)
    assert match, f"no element {element_id}"
    return _text(match.group(0))


def _context(app: Flask, number: str, step_key: str, **kwargs) -> StepContext:
    with app.app_context():
        batch = get_batch_or_404(number)
        definition = definition_for(batch)
        return step_context(batch, definition, definition.step(step_key), **kwargs)


def test_the_expansion_form_shows_each_fields_last_count_with_its_day(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("harvest", days_ago=8, expansion=COUNTS)
    response = login("tech1").get(f"/batches/{number}/steps/expansion")
    assert response.status_code == 200
    page = page_text(response)
    with app.app_context():
        last = entries(number, "expansion")[-1].performed_at
    when = re.escape(_local(app, last))
    assert re.fullmatch(rf"Previous: 8\.0 × 10⁸ cells on day 5 \({when}\)", _block(page, "field-viable_cells-previous"))
    assert re.fullmatch(rf"Previous: 65 % on day 5 \({when}\) OUT OF LIMIT",
                        _block(page, "field-viability_pct-previous"))
    assert re.fullmatch(rf"Previous: day 5 \({when}\)", _block(page, "field-culture_day-previous"))
    # The limit stays beside its field, in the one wording of _macros.html limits_text.
    assert "Limit: ≥ 70 %" in _text(page)
    top = _block(page, "step-when")
    assert top.startswith("Today is culture day 6 (day 0: Activation, ")
    # The engine's fold expansion of that entry: 8.0e8 counted / 1.0e8 seeded.
    assert f"Last entry: day 5, {_local(app, last)} · Fold expansion since seeding: 8" in top
    assert "First entry" not in top


def test_a_refused_count_is_shown_again_with_the_previous_values(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("harvest", days_ago=8, expansion=COUNTS)
    response = post_step(app, login("tech1"), number, "expansion", viability_pct="150")
    assert response.status_code == 422
    page = page_text(response)
    assert _block(page, "field-viable_cells-previous").startswith("Previous: 8.0 × 10⁸ cells on day 5 (")
    assert _block(page, "step-when").startswith("Today is culture day 6 ")


def test_the_service_names_the_last_entry_and_its_values(app: Flask, make_batch) -> None:
    number = make_batch("harvest", days_ago=8, expansion=COUNTS)
    context = _context(app, number, "expansion")
    assert context.last is not None and context.last.occurrence == 3 and context.last.culture_day == 5
    assert {key: p.value.text for key, p in context.previous.items()
            if key in ("culture_day", "viable_cells", "viability_pct")} == {
        "culture_day": "5", "viable_cells": "8.0e8", "viability_pct": "65"}
    assert {p.culture_day for p in context.previous.values()} == {5}
    assert context.previous["viability_pct"].out_of_limit and not context.previous["viable_cells"].out_of_limit
    assert "feed_volume_ml" not in context.previous  # not recorded in that entry: nothing to show
    assert [(d.key, d.value) for d in context.last.derived] == [("fold_expansion", 8.0)]
    assert context.day is not None and context.day.day == 6 and context.day.timing is None  # no window


def test_the_first_count_shows_no_previous_value(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("expansion", days_ago=4)
    context = _context(app, number, "expansion")
    assert context.first_entry and context.previous == {} and context.last is None
    page = page_text(login("tech1").get(f"/batches/{number}/steps/expansion"))
    assert "Previous:" not in page
    top = _block(page, "step-when")
    assert "First entry of this step" in top and top.startswith("Today is culture day 2 ")


def test_a_step_is_not_linked_to_fields_of_earlier_steps(app: Flask, make_batch, login: Login) -> None:
    """Transduction counts viable cells as enrichment and activation did, but the definition links
    none of them to it: no previous value is made up."""
    number = make_batch("transduction", days_ago=4)
    context = _context(app, number, "transduction")
    assert context.previous == {} and context.last is None and not context.first_entry
    page = page_text(login("tech1").get(f"/batches/{number}/steps/transduction"))
    assert "Previous:" not in page and "First entry" not in page
    # Its derived MOI has a limit: said before anything is typed, in the limits_text wording.
    assert "Computed when saved: MOI (TU per cell), limit 5–10" in _block(page, "step-when")


def test_the_day_line_judges_the_window_at_now(app: Flask, make_batch) -> None:
    number = make_batch("harvest", days_ago=8, expansion=COUNTS)
    with app.app_context():
        activated = entries(number, "activation")[0].performed_at
    expected = {11: Timing.EARLY, 12: Timing.DUE, 13: Timing.DUE, 14: Timing.OVERDUE}
    for day, timing in expected.items():
        line = _context(app, number, "harvest", now=activated + timedelta(days=day, hours=1)).day
        assert line is not None and (line.day, line.timing) == (day, timing)
        assert line.today.startswith(f"Today is culture day {day} (day 0: Activation, ")
        assert line.due == "Harvest and wash is due on culture day 12–13 after Activation."


def test_the_harvest_form_says_not_yet_due(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("harvest", days_ago=8, expansion=COUNTS)
    top = _block(page_text(login("tech1").get(f"/batches/{number}/steps/harvest")), "step-when")
    assert "Today is culture day 6" in top
    assert "Harvest and wash is due on culture day 12–13 after Activation. Not yet due" in top
    assert "Outside its time window: say why in the comment." in top
    late = make_batch("harvest", ref="SLE-02", days_ago=20, expansion=COUNTS[:1])
    top = _block(page_text(login("tech1").get(f"/batches/{late}/steps/harvest")), "step-when")
    assert "Today is culture day 18" in top and "⚠ OVERDUE" in top
    on_time = make_batch("harvest", ref="SLE-03", days_ago=14, expansion=COUNTS[:1])
    top = _block(page_text(login("tech1").get(f"/batches/{on_time}/steps/harvest")), "step-when")
    assert "● Due now" in top and "Outside" not in top


def test_before_day_zero_the_form_says_so(app: Flask, make_batch, login: Login) -> None:
    number = make_batch("activation", days_ago=1)
    context = _context(app, number, "transduction")
    assert context.day is not None and context.day.day is None and context.day.timing is None
    assert context.day.today == "Activation is not recorded yet: culture day 0 is not set."


def test_the_form_costs_the_same_whatever_the_number_of_counts(app: Flask, make_batch, login: Login) -> None:
    few = make_batch("harvest", ref="SLE-01", days_ago=8, expansion=COUNTS[:1])
    many = make_batch("harvest", ref="SLE-02", days_ago=12,
                      expansion=tuple(_count(day, f"{day}.0e8") for day in range(1, 10)))
    client = login("tech1")
    counted = []
    for number in (few, many):
        with statements(app) as found:
            response = client.get(f"/batches/{number}/steps/expansion")
        assert response.status_code == 200 and "Previous:" in page_text(response)
        counted.append(len(found))
        with app.app_context():  # the service itself reads what the view loaded: no query of its own
            batch = get_batch_or_404(number)
            definition = definition_for(batch)
            with statements(app) as own:
                step_context(batch, definition, definition.step("expansion"))
            assert own == []
    assert counted[0] == counted[1], counted


def _local(app: Flask, moment: datetime) -> str:
    with app.app_context():
        return localtime(moment)
