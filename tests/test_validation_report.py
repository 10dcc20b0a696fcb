"""``flask --app lab validation-report`` (issue 16, item 6): a test run's results become the
traceability matrix, as CSV and PDF, with gaps, failures and unknown requirement IDs on its first
page; and the requirements list and the tests' markers agree (read from the sources with ``ast``)."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskCliRunner

from lab.validation.report import CSV_FILE, CSV_HEADER, PDF_FILE, RESULTS_FORMAT, load_requirements
from tests.readback import page_texts

pytestmark = pytest.mark.requirements("VAL-1", "A11-4")

TESTS_DIR = Path(__file__).parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def results(tests: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    return {
        "format": RESULTS_FORMAT,
        "started_at": "2026-11-30T22:05:00Z",
        "finished_at": "2026-11-30T22:20:31Z",
        "exit_status": 1,
        "python": "3.11.7",
        "implementation": "cpython",
        "platform": "Linux-6.1-x86_64",
        "database": {"dialect": "PostgreSQL", "version": "15.8"},
        "commit": COMMIT,
        "packages": {"flask": "3.1.3", "reportlab": "4.2.5"},
        "tests": tests,
        **changes,
    }


def case(nodeid: str, outcome: str, *ids: str) -> dict[str, Any]:
    return {"nodeid": nodeid, "outcome": outcome, "duration": 0.25, "requirements": list(ids)}


SPECIAL = {"P11-10e", "P11-50", "P11-70", "P11-10d", "P11-300"}
#: Every other requirement passes; those above pass, fail, are only skipped, error or have no test.
RUN = [case(f"tests/test_all.py::test_{r.id}", "passed", r.id) for r in load_requirements()
       if not r.procedural and r.id not in SPECIAL] + [
    case("tests/test_audit.py::test_writes", "passed", "P11-10e", "A11-9"),
    case("tests/test_audit.py::test_chain[sqlite]", "passed", "P11-10e"),
    case("tests/test_part11.py::test_11_50", "failed", "P11-50"),
    case("tests/test_part11.py::test_11_70", "skipped", "P11-70"),
    case("tests/test_sessions.py::test_fixture_breaks", "error", "P11-10d"),
    case("tests/test_misc.py::test_typo", "passed", "P11-99", "P11-10e"),
    case("tests/test_misc.py::test_unmarked", "passed"),
]


def run_report(runner: FlaskCliRunner, tmp_path: Path, data: Any, *options: str) -> tuple[Any, Path]:
    path = tmp_path / "test-results.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    out = tmp_path / "validation"
    return runner.invoke(args=["validation-report", "--results", str(path), "--out", str(out), *options]), out


def test_the_matrix_traces_each_requirement_to_its_tests_in_csv(runner: FlaskCliRunner, tmp_path: Path) -> None:
    result, out = run_report(runner, tmp_path, results(RUN))
    assert result.exit_code == 0, result.output
    with (out / CSV_FILE).open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    assert tuple(rows[0]) == CSV_HEADER
    by_id = {row[0]: dict(zip(CSV_HEADER, row, strict=True)) for row in rows[1:]}
    assert list(by_id) == [r.id for r in load_requirements()]
    audit = by_id["P11-10e"]
    assert audit["source"].startswith("21 CFR 11.10(e)") and "audit trail" in audit["text"]
    assert audit["status"] == "passed"
    assert audit["tests"].splitlines() == ["tests/test_audit.py::test_writes", "tests/test_audit.py::test_chain[sqlite]",
                                           "tests/test_misc.py::test_typo"]
    assert audit["outcomes"].splitlines() == ["passed", "passed", "passed"]
    assert (by_id["P11-50"]["status"], by_id["P11-50"]["outcomes"]) == ("failed", "failed")
    assert by_id["P11-10d"]["status"] == "failed"  # an error in a fixture fails its requirement too
    assert (by_id["P11-70"]["status"], by_id["P11-70"]["outcomes"]) == ("gap", "skipped")  # a skip shows nothing
    assert (by_id["P11-300"]["status"], by_id["P11-300"]["tests"]) == ("gap", "")
    assert by_id["P11-10i"]["status"] == "procedural"
    assert [row[0] for row in rows[1:] if row[3] == "gap"] == ["P11-70", "P11-300"]
    assert "2 gaps" in result.output and "2 failed" in result.output
    assert "unknown requirement P11-99 used by tests/test_misc.py::test_typo" in result.output


def test_the_first_page_names_the_run_its_environment_and_its_gaps(runner: FlaskCliRunner, tmp_path: Path) -> None:
    result, out = run_report(runner, tmp_path, results(RUN))
    assert result.exit_code == 0, result.output
    pages = page_texts((out / PDF_FILE).read_bytes())
    first = pages[0]
    for fact in ("Validation report", "2026-11-30 22:05 UTC", COMMIT, "3.11.7", "PostgreSQL 15.8", "flask 3.1.3",
                 "reportlab 4.2.5", f"Tests {len(RUN)}: {len(RUN) - 3} passed, 1 failed, 1 skipped, 1 error"):
        assert fact in first, fact
    assert "P11-70 — Signatures are linked to their records" in first  # a gap, by ID and text
    assert "P11-300 — Identification codes and passwords" in first
    assert "P11-50 — A signed record shows the signer's printed name" in first  # a failure
    assert "P11-10d — Access is limited" in first
    assert "P11-99: tests/test_misc.py::test_typo" in first  # an unknown ID, with the test using it
    assert "No gaps" not in first
    matrix = " ".join(pages[1:])
    assert "Traceability matrix" in matrix
    assert "tests/test_audit.py::test_chain: 1 passed" in matrix
    assert f"Page 1 of {len(pages)}" in first


def test_a_run_without_gaps_says_so(runner: FlaskCliRunner, tmp_path: Path) -> None:
    every = [case(f"tests/test_all.py::test_{r.id}", "passed", r.id) for r in load_requirements() if not r.procedural]
    result, out = run_report(runner, tmp_path, results(every))
    assert result.exit_code == 0, result.output
    assert "0 gaps" in result.output and "0 failed" in result.output
    assert "No gaps." in page_texts((out / PDF_FILE).read_bytes())[0]
    complete, _ = run_report(runner, tmp_path, results(every), "--complete")
    assert complete.exit_code == 0, complete.output


def test_complete_fails_a_run_with_a_gap_a_failure_or_an_unknown_id(runner: FlaskCliRunner, tmp_path: Path) -> None:
    """What CI asks for: a report is written, and the run fails unless every requirement is demonstrated."""
    result, out = run_report(runner, tmp_path, results(RUN), "--complete")
    assert result.exit_code == 1 and "Incomplete" in result.output
    assert (out / PDF_FILE).exists() and (out / CSV_FILE).exists()


@pytest.mark.parametrize(("content", "reason"), [
    (None, "cannot be read"),
    ("{not json", "is not JSON"),
    ([], "is not a test results file"),
    ({"format": "junit"}, "is not a test results file"),
    (results([case("tests/t.py::t", "crashed")]), "test 1 needs a nodeid, an outcome"),
    (results([case("tests/t.py::t", "passed", 7)]), "test 1 needs a nodeid"),
    ({**results([]), "tests": {}}, "has no list of tests"),
    (results([], database="sqlite"), "does not name its database"),
    (results([], started_at="yesterday"), "started_at is not an ISO 8601 time"),
    (results([], finished_at="2026-11-30T22:20:31"), "finished_at does not say its time zone"),
    (results([], commit=None), "does not name its commit"),
])
def test_an_unreadable_or_invalid_results_file_exits_1_with_the_reason(runner: FlaskCliRunner, tmp_path: Path,
                                                                        content: Any, reason: str) -> None:
    if content is None:
        out = tmp_path / "validation"
        result = runner.invoke(args=["validation-report", "--results", str(tmp_path / "missing.json"),
                                     "--out", str(out)])
    else:
        result, out = run_report(runner, tmp_path, content)
    assert result.exit_code == 1
    assert reason in result.output
    assert not out.exists()


def marked_ids() -> dict[str, set[str]]:
    """Each requirement ID any ``requirements`` marker in the test sources names, with the files naming it."""
    used: dict[str, set[str]] = {}
    for path in sorted(TESTS_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "requirements" and isinstance(node.func.value, ast.Attribute) \
                    and node.func.value.attr == "mark":
                for arg in node.args:
                    assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), f"{path}: {ast.dump(arg)}"
                    used.setdefault(arg.value, set()).add(path.relative_to(TESTS_DIR).as_posix())
    return used


def test_every_marked_id_is_a_requirement_and_every_requirement_has_a_test() -> None:
    requirements = load_requirements()
    used = marked_ids()
    unknown = {rid: files for rid, files in used.items() if rid not in {r.id for r in requirements}}
    assert unknown == {}
    untested = [r.id for r in requirements if not r.procedural and r.id not in used]
    assert untested == []
    assert all(r.id not in used for r in requirements if r.procedural)  # a test cannot show the lab's SOP
