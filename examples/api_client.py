#!/usr/bin/env python3
"""A minimal CellTrail API client, with nothing but the standard library.

Lists every batch the token's user may read (following ``next_cursor`` page by page) and,
with ``--post-count``, submits an expansion count for a batch. A submitted count is not a
record: it waits, with its values and flags, until a technician opens it in the browser,
checks it, completes the entry and signs (the script prints where).

    export CELLTRAIL_TOKEN=ct_...        # a personal token (Account > API tokens); write scope to post
    python examples/api_client.py --url https://celltrail.example.org
    python examples/api_client.py --url http://localhost:5000 \\
        --post-count B-A9999-26-00008-S viable_cells=1.2e9 viability_pct=93
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

API = "/api/v1"
TIMEOUT = 30


class ApiError(Exception):
    """A problem answer (RFC 9457) from the server: its status, detail and field errors."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        errors = problem.get("errors") or {}
        details = "".join(f"\n  {field}: {reason}" for field, reason in errors.items())
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}{details}")
        self.status = status
        self.problem = problem


def call(base: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request to the API; the JSON answer, or ApiError."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base.rstrip("/") + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json",
        **({"Content-Type": "application/json"} if data is not None else {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        try:
            problem = json.load(error)
        except ValueError:
            problem = {"detail": error.reason}
        raise ApiError(error.code, problem) from None


def batches(base: str, token: str, page_size: int = 200) -> Iterator[dict[str, Any]]:
    """Every batch, newest change first, following the cursor from page to page."""
    cursor: str | None = None
    while True:
        query = urllib.parse.urlencode({"limit": page_size, **({"cursor": cursor} if cursor else {})})
        page = call(base, token, "GET", f"{API}/batches?{query}")
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def parse_values(pairs: list[str]) -> dict[str, float | int | str]:
    """``viable_cells=1.2e9 viability_pct=93`` as JSON values: numbers as numbers, anything else as text."""
    values: dict[str, float | int | str] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"Give each value as field=value, not {pair!r}.")
        try:
            values[key] = int(text)
        except ValueError:
            try:
                values[key] = float(text)
            except ValueError:
                values[key] = text
    return values


def post_count(base: str, token: str, batch_number: str, pairs: list[str]) -> dict[str, Any]:
    """Submit an expansion count of ``batch_number``; the Submission it became."""
    path = f"{API}/batches/{urllib.parse.quote(batch_number, safe='')}/steps/expansion/submissions"
    submission: dict[str, Any] = call(base, token, "POST", path, {"values": parse_values(pairs)})
    return submission


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="CellTrail's address, e.g. https://celltrail.example.org")
    parser.add_argument("--post-count", nargs="+", metavar=("BATCH", "FIELD=VALUE"),
                        help="submit an expansion count: the batch number, then its values")
    parser.add_argument("--page-size", type=int, default=200, choices=range(1, 201), metavar="1..200",
                        help="batches per request (default 200)")
    args = parser.parse_args(argv)
    token = os.environ.get("CELLTRAIL_TOKEN", "")
    if not token:
        parser.error("set CELLTRAIL_TOKEN to your API token")
    try:
        found = list(batches(args.url, token, args.page_size))
        print(f"{len(found)} batches:")
        for batch in found:
            print(f"  {batch['batch_number']}  {batch['state']:<11} {batch['product']}  updated {batch['updated_at']}")
        if args.post_count:
            if len(args.post_count) < 2:
                parser.error("--post-count takes the batch number and at least one FIELD=VALUE")
            submission = post_count(args.url, token, args.post_count[0], args.post_count[1:])
            values = ", ".join(f"{key}={value}" for key, value in submission["values"].items())
            print(f"Submission {submission['id']} {submission['status']}: {values}")
            for flag in submission["flags"]:
                print(f"  flagged {flag['field']}: {flag['message']}")
            if submission["deviations"]:
                print(f"  deviations opened: {', '.join(submission['deviations'])}")
            print(f"Check and sign it at {submission['sign_url']}")
    except ApiError as error:
        print(f"Refused: {error}", file=sys.stderr)
        return 1
    except urllib.error.URLError as error:
        print(f"Cannot reach {args.url}: {error.reason}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
