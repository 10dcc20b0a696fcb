"""Fixtures of the browser tests: Playwright driving Debian's chromium (never a downloaded
browser) against a live server of the app, per test, on the demo lab.

Without /usr/bin/chromium the tests are skipped, unless CELLTRAIL_REQUIRE_BROWSER=1 (as in
.ci/run), which makes its absence an error. The server runs in a thread of its own, so the
database must be reachable from another connection: a SQLite file in the test's tmp_path, or
the PostgreSQL test database (TEST_DATABASE_URL), emptied before each test by the suite's
``app`` fixture. Screenshots of every page go to ``$CELLTRAIL_ARTIFACTS/screenshots/<test>/``,
by default ``test-artifacts/`` at the top of the repository.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import select

from config import TestingConfig
from lab import create_app
from lab.demo import Recorder, seed
from lab.extensions import db
from lab.models import Batch, User, utcnow
from lab.services.batches import start_batch
from lab.services.patients import PatientInput, register_patient
from tests.browser.bench import Bench, Lab, LiveServer, slug
from tests.conftest import ON_POSTGRES
from tests.factories import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
#: What DEPS.md found to work in this container: no sandbox (root, no user namespaces), no GPU,
#: and nothing that reaches out to the network on its own.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CELLTRAIL_ARTIFACTS") or REPO / "test-artifacts")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Note each phase's report on the test, so the bench knows to photograph a failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "viewport(width, height): the browser window of a test's people (1280 × 800)")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CELLTRAIL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}, and CELLTRAIL_REQUIRE_BROWSER=1 requires them to run", pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        # Playwright turns Chromium's back-forward cache off; people have it on, and the
        # back button after saving a form is one of the tests.
        found = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS,
                                           ignore_default_args=["--disable-back-forward-cache"])
        yield found
        found.close()


class BrowserConfig(TestingConfig):
    WTF_CSRF_ENABLED = True  # as in production: every form the browser sends carries its token


@pytest.fixture
def app(app: Flask, tmp_path: Path) -> Iterator[Flask]:
    """The app the live server runs, with CSRF protection on: on PostgreSQL the suite's test
    database (the suite's ``app`` fixture has just emptied it), on SQLite a file that the
    server's threads and the test share (an in-memory database is one connection's)."""
    uri = app.config["SQLALCHEMY_DATABASE_URI"] if ON_POSTGRES else f"sqlite:///{tmp_path / 'browser.sqlite'}"

    class Config(BrowserConfig):
        SQLALCHEMY_DATABASE_URI = uri

    served = create_app(Config)
    with served.app_context():
        if not ON_POSTGRES:
            db.create_all()
    yield served
    with served.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def lab(app: Flask) -> Lab:
    """The demo lab (eight batches at every stage, people with password PASSWORD) and SLE-10,
    recorded up to its transduction, which is due now."""
    with app.app_context():
        seed(PASSWORD)
        now = utcnow()
        people = {u.username: u for u in db.session.scalars(select(User))}
        start = now - timedelta(days=2, hours=6)  # activation a day and a few hours ago
        patient = register_patient(PatientInput("SLE-10", "EV", date(1985, 4, 2), 62.0,
                                                "Systemic lupus erythematosus, refractory"),
                                   actor=people["supervisor1"], now=start)
        batch = start_batch(patient, actor=people["supervisor1"], now=start, process_key="cd19-car-t")
        Recorder(people["tech1"], people["tech2"], PASSWORD, now).run(batch, start, until="transduction")
        db.session.commit()
        numbers = {b.patient.patient_ref: b.batch_number for b in db.session.scalars(select(Batch))}
    return Lab(app, numbers)


@pytest.fixture
def server(app: Flask, lab: Lab) -> Iterator[LiveServer]:
    live = LiveServer(app)
    yield live
    live.stop()


@pytest.fixture
def bench(browser: Browser, server: LiveServer, lab: Lab, request: pytest.FixtureRequest) -> Iterator[Bench]:
    """People in browser contexts of their own; fails the test on any JavaScript error or
    server error a page met."""
    directory = ARTIFACTS / "screenshots" / slug(request.node.name)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    marker = request.node.get_closest_marker("viewport")  # @pytest.mark.viewport(width, height): the window people use
    people = Bench(browser, server, lab, directory, viewport=marker.args if marker else (1280, 800))
    yield people
    report = getattr(request.node, "report_call", None)
    people.close(failed=report is None or report.failed)
    problems = people.problems + [f"server: {e}" for e in server.exceptions]
    assert not problems, problems
