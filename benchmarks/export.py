"""Time ``flask --app lab export-records`` for the month with the most batches started.

    python benchmarks/export.py sqlite:////tmp/copy-of-facility.sqlite

The export writes to the database (each record's issue and download is logged): give it a copy.
The ZIP goes to a temporary folder, removed afterwards. Prints the batches exported, the seconds
a batch and the peak resident memory of the command (which must not grow with the batches).
"""

from __future__ import annotations

import argparse
import calendar
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select

from lab import create_app
from lab.extensions import db
from lab.models import Batch

ROOT = Path(__file__).resolve().parents[1]
SECRET = "benchmark-only-secret-key-000000"


def busiest_month(url: str) -> tuple[date, date]:
    """The first and last day of the month in which the most batches were started."""
    os.environ.update(DATABASE_URL=url, SECRET_KEY=SECRET)
    app = create_app()
    with app.app_context():
        months = Counter((moment.year, moment.month) for moment in db.session.scalars(select(Batch.created_at)))
        db.engine.dispose()
    (year, month), _ = months.most_common(1)[0]
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url", help="a copy of the facility database: the export writes to it")
    url = parser.parse_args().database_url
    since, until = busiest_month(url)
    environment = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": SECRET, "LAB_SESSION_COOKIE_SECURE": "false"}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "lab", "export-records",
                                 "--since", since.isoformat(), "--until", until.isoformat(),
                                 "--out", str(Path(folder) / "records.zip")],
                                cwd=ROOT, env=environment, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        how = f"died of {signal.Signals(-result.returncode).name}" if result.returncode < 0 else "failed"
        sys.exit(f"export-records {how} (exit status {result.returncode}):\n{result.stderr}{result.stdout}")
    batches = int(result.stdout.split("Exported the records of ")[1].split()[0])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    print(f"export-records {since} to {until}: {batches} batches in {seconds:.1f} s, "
          f"{seconds / batches:.3f} s a batch, peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
