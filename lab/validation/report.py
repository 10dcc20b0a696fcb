"""The traceability of CellTrail's requirements (requirements.toml) to a test run's results
(``test-results.json``, written by the tests' results plugin when ``CELLTRAIL_ARTIFACTS`` is set),
written as ``traceability.csv`` and ``validation-report.pdf``.

A requirement is *passed* when at least one of its tests ran and passed and none failed, *failed*
when any of its tests failed or errored, a *gap* when no test of it passed (none marked, or all
skipped), and *procedural* when it is the lab's own procedure (``procedural`` in the list says
why). A skipped test neither demonstrates nor contradicts: a run on SQLite skips the PostgreSQL-only
cases. A requirement ID that a test uses but the list lacks is reported as an error.
"""

from __future__ import annotations

import csv
import json
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from labels.validation_report import (
    OUTCOMES,
    TracedTest,
    TraceRow,
    ValidationReportData,
    render_validation_report,
)

REQUIREMENTS_FILE = Path(__file__).with_name("requirements.toml")
RESULTS_FORMAT = "celltrail-test-results/1"
CSV_FILE = "traceability.csv"
PDF_FILE = "validation-report.pdf"
CSV_HEADER = ("requirement", "source", "text", "status", "tests", "outcomes")


class InvalidResults(ValueError):
    """The results file cannot be read, or is not a results file of this format."""


@dataclass(frozen=True)
class Requirement:
    id: str
    source: str
    text: str
    procedural: str = ""


def load_requirements(path: Path = REQUIREMENTS_FILE) -> tuple[Requirement, ...]:
    """The requirements in file order. Raises ValueError naming the first malformed one."""
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("requirement", [])
    requirements: list[Requirement] = []
    for number, entry in enumerate(entries, start=1):
        fields = {key: entry.get(key) for key in ("id", "source", "text")}
        if not all(isinstance(value, str) and value.strip() for value in fields.values()) \
                or set(entry) - {"id", "source", "text", "procedural"} \
                or not isinstance(entry.get("procedural", ""), str):
            raise ValueError(f"{path.name}: requirement {number} needs id, source and text (and at most procedural).")
        requirements.append(Requirement(**entry))
    ids = [r.id for r in requirements]
    if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
        raise ValueError(f"{path.name}: the IDs {', '.join(duplicates)} appear more than once.")
    return tuple(requirements)


def _time(results: dict[str, Any], key: str) -> datetime:
    try:
        moment = datetime.fromisoformat(results[key])
    except (KeyError, TypeError, ValueError):
        raise InvalidResults(f"{key} is not an ISO 8601 time.") from None
    if moment.tzinfo is None:
        raise InvalidResults(f"{key} does not say its time zone.")
    return moment


def _test(test: Any, number: int) -> tuple[TracedTest, tuple[str, ...]]:
    if not isinstance(test, dict) or not isinstance(test.get("nodeid"), str) \
            or test.get("outcome") not in OUTCOMES \
            or not isinstance(test.get("requirements"), list) \
            or not all(isinstance(rid, str) for rid in test["requirements"]):
        raise InvalidResults(f"test {number} needs a nodeid, an outcome ({', '.join(OUTCOMES)}) and a list of "
                             "requirement IDs.")
    return TracedTest(test["nodeid"], test["outcome"]), tuple(test["requirements"])


def read_results(path: Path) -> dict[str, Any]:
    """The results file, checked. Raises InvalidResults with the reason."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidResults(f"cannot be read: {error.strerror or error}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidResults(f"is not JSON: {error}.") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise InvalidResults(f"is not a test results file (format {RESULTS_FORMAT!r}).")
    if not isinstance(results.get("tests"), list):
        raise InvalidResults("has no list of tests.")
    database = results.get("database")
    if not isinstance(database, dict) or not all(isinstance(database.get(k), str) for k in ("dialect", "version")):
        raise InvalidResults("does not name its database and version.")
    packages = results.get("packages")
    if not isinstance(packages, dict) or not all(isinstance(v, str) for v in packages.values()):
        raise InvalidResults("does not list its package versions.")
    if not all(isinstance(results.get(k), str) for k in ("commit", "python", "platform")):
        raise InvalidResults("does not name its commit, Python and platform.")
    return results


def _status(requirement: Requirement, tests: list[TracedTest]) -> str:
    outcomes = {test.outcome for test in tests}
    if requirement.procedural:
        return "procedural"
    if outcomes & {"failed", "error"}:
        return "failed"
    return "passed" if "passed" in outcomes else "gap"


def trace(requirements: tuple[Requirement, ...], results: dict[str, Any]) -> ValidationReportData:
    """The traceability of ``requirements`` to the tests of ``results``."""
    tests = [_test(test, number) for number, test in enumerate(results["tests"], start=1)]
    known = {r.id for r in requirements}
    claimed: dict[str, list[TracedTest]] = {r.id: [] for r in requirements}
    unknown: dict[str, list[str]] = {}
    for test, ids in tests:
        for rid in ids:
            if rid in known:
                claimed[rid].append(test)
            else:
                unknown.setdefault(rid, []).append(test.nodeid)
    return ValidationReportData(
        started_at=_time(results, "started_at"),
        finished_at=_time(results, "finished_at"),
        commit=results["commit"],
        python=results["python"],
        platform=results["platform"],
        database=f"{results['database']['dialect']} {results['database']['version']}",
        packages=tuple(sorted(results["packages"].items())),
        test_outcomes=tuple(test.outcome for test, _ in tests),
        rows=tuple(TraceRow(r.id, r.source, r.text, _status(r, claimed[r.id]), tuple(claimed[r.id]), r.procedural)
                   for r in requirements),
        unknown=tuple((rid, tuple(nodeids)) for rid, nodeids in sorted(unknown.items())),
    )


def write_csv(data: ValidationReportData, path: Path) -> None:
    """One row per requirement; its tests and their outcomes one per line, in the same order."""
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_HEADER)
        for row in data.rows:
            writer.writerow((row.id, row.source, row.text, row.status, "\n".join(t.nodeid for t in row.tests),
                             "\n".join(t.outcome for t in row.tests)))


def write_report(results_path: Path, out: Path, requirements_path: Path = REQUIREMENTS_FILE) -> ValidationReportData:
    """Write ``out/traceability.csv`` and ``out/validation-report.pdf``. Raises InvalidResults."""
    results = read_results(results_path)
    data = trace(load_requirements(requirements_path), results)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(data, out / CSV_FILE)
    (out / PDF_FILE).write_bytes(render_validation_report(data))
    return data
