"""The test run as evidence (issue 16, item 6): with ``CELLTRAIL_ARTIFACTS`` set (CI sets it),
``$CELLTRAIL_ARTIFACTS/test-results.json`` is written at the end of the session: the run's times,
Python, platform, database and its server version (never its URL: it may hold credentials), the
git commit, the versions of the packages CellTrail installs, and per test its outcome, duration
and the requirement IDs of its ``requirements`` markers (the test's own, then its class's and
module's). ``flask --app lab validation-report`` turns the file into the traceability matrix.

The IDs travel in each report's ``user_properties``, so a run split by pytest-xdist reports them
too; the file is written by the controlling process only.
"""

from __future__ import annotations

import configparser
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from config import database_url
from lab.validation.report import RESULTS_FORMAT

ARTIFACTS = "CELLTRAIL_ARTIFACTS"
RESULTS_FILE = "test-results.json"
PROPERTY = "requirements"
#: The outcome a test ends with when its phases disagree: the first of these any phase had.
SEVERITY = ("error", "failed", "skipped", "passed")


def requirement_ids(item: pytest.Item) -> list[str]:
    """The IDs of every ``requirements`` marker of ``item``, closest first, each once."""
    ids: dict[str, None] = {}
    for marker in item.iter_markers(PROPERTY):
        ids.update(dict.fromkeys(str(arg) for arg in marker.args))
    return list(ids)


def _phase_outcome(report: pytest.TestReport) -> str:
    if report.passed:
        return "passed"
    if report.skipped:
        return "skipped"  # a skip, or an expected failure
    return "failed" if report.when == "call" else "error"  # a broken fixture is an error, not a failure


def _commit(root: Path) -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                                check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def _database() -> dict[str, str]:
    url = database_url(os.environ.get("TEST_DATABASE_URL"))
    if not url:
        return {"dialect": "SQLite", "version": sqlite3.sqlite_version}
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            version = str(connection.execute(text("SHOW server_version")).scalar())
    except (SQLAlchemyError, OSError) as error:  # the evidence says why instead of failing the run
        version = f"unknown ({type(error).__name__})"
    finally:
        engine.dispose()
    return {"dialect": "PostgreSQL", "version": version}


def _packages(root: Path) -> dict[str, str]:
    """Version of each package setup.cfg installs (install_requires and the test and postgres extras)."""
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg", encoding="utf-8")
    lines = [setup.get("options", "install_requires", fallback="")]
    lines += [setup.get("options.extras_require", extra, fallback="") for extra in ("test", "postgres")]
    names = [match.group(0) for line in "\n".join(lines).splitlines()
             if (match := re.match(r"[A-Za-z0-9._-]+", line.strip()))]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ResultsWriter:
    """Collects each test's outcome and writes the results file when the session ends."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = root
        self.started = _now()
        self.commit = _commit(root)  # the version the run tests, read before it starts
        self.tests: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self.tests.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed",
                                                     "duration": 0.0, "requirements": []})
        outcome = _phase_outcome(report)
        if SEVERITY.index(outcome) < SEVERITY.index(test["outcome"]):
            test["outcome"] = outcome
        test["duration"] = round(test["duration"] + report.duration, 4)
        for name, value in report.user_properties:
            if name == PROPERTY:
                test["requirements"] = list(value)

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        results = {
            "format": RESULTS_FORMAT,
            "started_at": self.started,
            "finished_at": _now(),
            "exit_status": int(exitstatus),
            "python": platform.python_version(),
            "implementation": sys.implementation.name,
            "platform": platform.platform(),
            "database": _database(),
            "commit": self.commit,
            "packages": _packages(self.root),
            "tests": list(self.tests.values()),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get(ARTIFACTS):  # on xdist workers too: the IDs travel with each report
        for item in items:
            item.user_properties.append((PROPERTY, requirement_ids(item)))


def pytest_configure(config: pytest.Config) -> None:
    folder = os.environ.get(ARTIFACTS)
    if folder and not hasattr(config, "workerinput"):  # an xdist worker reports to its controller
        config.pluginmanager.register(ResultsWriter(Path(folder) / RESULTS_FILE, config.rootpath), "celltrail-results")
