"""``flask --app lab validation-report``: a test run turned into the evidence an inspector reads."""

from __future__ import annotations

from pathlib import Path

import click

from lab.validation.report import CSV_FILE, PDF_FILE, InvalidResults, write_report


@click.command("validation-report")
@click.option("--results", "results_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The test-results.json a test run wrote (CELLTRAIL_ARTIFACTS set).")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The folder to write traceability.csv and validation-report.pdf into.")
@click.option("--complete", is_flag=True,
              help="Also exit 1 when a requirement failed or is a gap, or a test names an unknown requirement "
                   "(CI: a green run must demonstrate every requirement).")
def validation_report_command(results_path: Path, out: Path, complete: bool) -> None:
    """Write the traceability matrix of a test run as CSV and PDF; exit 1 if the results are unreadable.

    Gaps (requirements without a passing test) are listed on the report's first page; they change
    the exit status only with ``--complete``, which otherwise says whether the report was written.
    """
    try:
        data = write_report(results_path, out)
    except InvalidResults as error:
        click.echo(f"{results_path}: {error}", err=True)
        raise click.exceptions.Exit(1) from None
    for status in ("failed", "gap"):
        for row in data.with_status(status):
            click.echo(f"{status.upper()}: {row.id} — {row.text}")
    for rid, nodeids in data.unknown:
        click.echo(f"ERROR: unknown requirement {rid} used by {', '.join(nodeids)}", err=True)
    click.echo(f"Wrote {out / CSV_FILE} and {out / PDF_FILE}: {len(data.rows)} requirements, "
               f"{len(data.with_status('passed'))} passed, {len(data.with_status('failed'))} failed, "
               f"{len(data.with_status('gap'))} gaps, {len(data.with_status('procedural'))} procedural; "
               f"{len(data.unknown)} unknown IDs.")
    if complete and (data.with_status("failed") or data.with_status("gap") or data.unknown):
        click.echo("Incomplete: not every requirement is demonstrated by a passing test (see above).", err=True)
        raise click.exceptions.Exit(1)
