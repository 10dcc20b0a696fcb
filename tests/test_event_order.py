"""Event times in order, culture days that match the calendar, and bounded container counts
(issue 11 items 2 and 5): through the engine with definition version 2, and through HTTP."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from lab.demo import local
from lab.extensions import db
from lab.models import Container
from tests.factories import get_batch, page_text, post_step, snapshot
from workflows import ContainerInfo, EntryContext, EquipmentInfo, LotInfo, PriorEntry, validate_entry
from workflows.codes import CodeKind, make_code
from workflows.definition import DEFINITIONS_DIR, load_definition

pytestmark = pytest.mark.requirements("PROC-7", "P11-10f")

V1 = load_definition(DEFINITIONS_DIR / "cd19_car_t_v1.toml")
V2 = load_definition(DEFINITIONS_DIR / "cd19_car_t_v2.toml")
BERLIN = ZoneInfo("Europe/Berlin")  # UTC+1 in November
NOW = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)
COI = str(make_code(CodeKind.COI, "A9999", 2026, 1))
BATCH = "B-A9999-26-00001-5"
CULTURE, BAG_1 = (str(make_code(CodeKind.CONTAINER, "A9999", 2026, n)) for n in (2, 3))
NEXT_YEAR = date(2027, 6, 30)
ACTIVATED = NOW - timedelta(days=12, hours=3)
HARVESTED = NOW - timedelta(hours=3)
FILLED = NOW - timedelta(hours=2, minutes=30)


def context(now: datetime = NOW, **prior: list[PriorEntry]) -> EntryContext:
    lots = {code: LotInfo(code, material, code, NEXT_YEAR, "released")
            for code, material in (("CRYO-3", "cryomedium"), ("BAG-9", "cryobag"))}
    equipment = {code: EquipmentInfo(code, kind, code, NEXT_YEAR)
                 for code, kind in (("BSC-01", "biosafety_cabinet"), ("CRF-1", "controlled_rate_freezer"),
                                    ("INC-01", "incubator"))}
    containers = {CULTURE: ContainerInfo(CULTURE, "culture_bag", "Culture bag", BATCH, COI, "in use"),
                  BAG_1: ContainerInfo(BAG_1, "product_bag", "Final product bag", BATCH, COI, "in use")}
    return EntryContext(now=now, tz=BERLIN, patient={"weight_kg": 58, "coi": COI}, batch_coi=COI,
                        prior={"activation": [PriorEntry({"cells_seeded": 1e8}, ACTIVATED)],
                               "harvest": [PriorEntry({"total_viable_cells": 3e9, "cd3_pct": 95.0,
                                                       "car_pct": 40.0}, HARVESTED)],
                               "formulation": [PriorEntry({"car_t_per_ml": 2e6}, FILLED)], **prior},
                        lots=lots, equipment=equipment, batch_number=BATCH, containers=containers,
                        step_titles={step.key: step.title for step in V2.steps})


def freezer_run(start: datetime, end: datetime) -> dict[str, str]:
    return {"product_bags": BAG_1, "freezer": "CRF-1", "program": "CAR-T v3", "run_start": local(start),
            "run_end": local(end), "profile_ok": "yes"}


FORMULATION = {"culture_bag": CULTURE, "target_dose_per_kg": "1e6", "car_t_per_ml": "2e6", "max_fill_ml": "70",
               "cryomedium_lot": "CRYO-3", "bag_lot": "BAG-9", "biosafety_cabinet": "BSC-01"}


# --- the engine ---------------------------------------------------------------------------


def test_a_freezer_run_after_the_fill_is_accepted():
    result = validate_entry(V2.step("cryopreservation"), freezer_run(FILLED + timedelta(minutes=10), NOW),
                            context())
    assert result.errors == {}


def test_a_freezer_run_that_starts_before_the_fill_names_both_events_and_times():
    start = HARVESTED - timedelta(hours=1)  # 08:00 UTC, 09:00 in Berlin
    result = validate_entry(V2.step("cryopreservation"), freezer_run(start, start + timedelta(hours=1)), context())
    assert result.errors == {"run_start": (
        "Run start 2026-11-25 08:00 +01:00 is before Harvest and wash (recorded) (2026-11-25 09:00 +01:00): it "
        "cannot have happened earlier. Check the date and time.")}
    assert result.derived == {}


def test_a_freezer_run_between_harvest_and_fill_is_refused_for_the_fill():
    start = HARVESTED + timedelta(minutes=10)
    message = validate_entry(V2.step("cryopreservation"), freezer_run(start, NOW), context()).errors["run_start"]
    assert "is before Formulation and fill (recorded) (2026-11-25 09:30 +01:00)" in message


def test_a_run_that_ends_before_it_starts_is_refused():
    start = FILLED + timedelta(minutes=30)
    message = validate_entry(V2.step("cryopreservation"), freezer_run(start, start - timedelta(minutes=5)),
                             context()).errors["run_end"]
    assert message.startswith("Run end 2026-11-25 09:55 +01:00 is before Run start (2026-11-25 10:00 +01:00)")


def test_the_same_minute_as_the_fill_is_not_before_it():
    """Typed times have minutes; the fill's recording time has seconds."""
    filled = FILLED + timedelta(seconds=40)
    ctx = context(formulation=[PriorEntry({"car_t_per_ml": 2e6}, filled)])
    assert validate_entry(V2.step("cryopreservation"), freezer_run(filled, NOW), ctx).errors == {}


@pytest.mark.requirements("ALCOA-CONTEMPORANEOUS")
def test_a_freezer_run_in_the_future_is_refused():
    message = validate_entry(V2.step("cryopreservation"), freezer_run(FILLED, NOW + timedelta(hours=1)),
                             context()).errors["run_end"]
    assert "cannot be in the future" in message


def test_version_1_keeps_its_rules():
    """A batch pinned to version 1 has no order rule: the same entry is accepted."""
    start = HARVESTED - timedelta(hours=1)
    assert validate_entry(V1.step("cryopreservation"), freezer_run(start, start + timedelta(hours=1)),
                          context()).errors == {}


def count(day: str) -> dict[str, str]:
    return {"culture_bag": CULTURE, "culture_day": day, "viable_cells": "1.5e9", "viability_pct": "92",
            "incubator": "INC-01"}


@pytest.mark.parametrize("day", ["11", "12"])
def test_a_count_of_today_or_yesterday_is_accepted(day):
    assert validate_entry(V2.step("expansion"), count(day), context()).errors == {}


def test_a_culture_day_still_to_come_is_refused():
    message = validate_entry(V2.step("expansion"), count("13"), context()).errors["culture_day"]
    assert message == ("Culture day 13 has not come yet: Activation (day 0) was recorded 2026-11-13 09:00 +01:00, "
                       "so this is culture day 12.")


def test_a_count_days_late_is_refused():
    message = validate_entry(V2.step("expansion"), count("9"), context()).errors["culture_day"]
    assert message.startswith("Culture day 9 was 3 days ago")
    assert "a late record needs a deviation" in message


def test_version_1_does_not_check_culture_days():
    assert validate_entry(V1.step("expansion"), count("13"), context()).errors == {}


def test_a_realistic_formulation_makes_a_bounded_number_of_bags():
    result = validate_entry(V2.step("formulation"), FORMULATION, context())
    assert result.errors == {}
    assert result.derived["bags"].value == 1


def test_too_many_bags_are_refused_before_anything_is_made():
    """1 × 10⁸ cells/kg × 58 kg at 1 × 10⁴ cells/mL: 580 L, 8,286 bags of 70 mL."""
    raw = {**FORMULATION, "target_dose_per_kg": "1e8", "car_t_per_ml": "1e4"}
    errors = validate_entry(V2.step("formulation"), raw, context()).errors
    message = "These values make 8286 product bags; at most 10 can be made in one entry."
    assert set(errors) == {"target_dose_per_kg", "car_t_per_ml", "max_fill_ml"}
    assert all(text.startswith(message) for text in errors.values())


def test_an_unrealistic_concentration_is_refused():
    errors = validate_entry(V2.step("formulation"), {**FORMULATION, "car_t_per_ml": "1175"}, context()).errors
    assert errors == {"car_t_per_ml": "CAR+ T cells per mL must be between 10000 and 1.00 × 10⁸ cells/mL."}


def test_version_1_is_bounded_too():
    """1175 cells/mL was a legal value of version 1 and made 1,001 bags in one request."""
    errors = validate_entry(V1.step("formulation"), {**FORMULATION, "car_t_per_ml": "1175"}, context()).errors
    assert errors["car_t_per_ml"].startswith("These values make 706 product bags; at most 50 can be made")


# --- through HTTP -------------------------------------------------------------------------


def containers_of(app, number: str) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Container)
                                 .where(Container.batch_id == get_batch(number).id)) or 0


@pytest.fixture
def tech(login, users, inventory):
    return login("tech1")


def test_a_freezer_run_before_the_fill_is_refused_next_to_its_field(app, make_batch, tech):
    number = make_batch(until="cryopreservation", days_ago=14)
    with app.app_context():
        filled = next(e for e in get_batch(number).entries if e.step_key == "formulation").performed_at
    before = snapshot(app, number)
    start = filled - timedelta(minutes=20)  # after the harvest, before the fill
    response = post_step(app, tech, number, "cryopreservation", run_start=local(start),
                         run_end=local(start + timedelta(hours=1)))
    assert response.status_code == 422
    page = page_text(response)
    assert "Run start" in page and "is before Formulation and fill (recorded)" in page
    assert re.search(r'id="field-run_start-error">⚠ Run start [^<]* is before Formulation and fill', page)
    assert snapshot(app, number) == before
    good = post_step(app, tech, number, "cryopreservation", run_start=local(filled + timedelta(minutes=5)),
                     run_end=local(filled + timedelta(hours=1, minutes=35)))
    assert good.status_code == 302, page_text(good)


def test_a_culture_day_in_the_future_is_refused_over_http(app, make_batch, tech):
    number = make_batch(until="expansion", days_ago=8, expansion=())
    before = snapshot(app, number)
    response = post_step(app, tech, number, "expansion", culture_day="9", viable_cells="1.5e9", viability_pct="92")
    assert response.status_code == 422
    assert "Culture day 9 has not come yet" in page_text(response)
    assert snapshot(app, number) == before


def test_too_many_bags_are_refused_over_http_and_nothing_is_made(app, make_batch, tech):
    number = make_batch(until="formulation", days_ago=14)
    before, made = snapshot(app, number), containers_of(app, number)
    response = post_step(app, tech, number, "formulation", target_dose_per_kg="1e8", car_t_per_ml="1e4")
    assert response.status_code == 422
    assert "at most 10 can be made in one entry" in page_text(response)
    assert snapshot(app, number) == before
    assert containers_of(app, number) == made


def test_a_batch_pinned_to_version_1_cannot_make_a_thousand_bags(app, make_batch, tech, tmp_path):
    shutil.copy(DEFINITIONS_DIR / "cd19_car_t_v1.toml", tmp_path / "cd19_car_t_v1.toml")
    app.config["WORKFLOW_DIR"] = str(tmp_path)
    number = make_batch(until="formulation", days_ago=14)
    with app.app_context():
        assert get_batch(number).definition.version == 1
    made = containers_of(app, number)
    response = post_step(app, tech, number, "formulation", car_t_per_ml="1175")
    assert response.status_code == 422
    assert "at most 50 can be made in one entry" in page_text(response)
    assert containers_of(app, number) == made
