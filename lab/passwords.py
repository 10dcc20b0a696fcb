"""The password policy: what a new password must not be (21 CFR 11.300(b), Annex 11 §12).

Settings (config.Config): PASSWORD_MIN_LENGTH, PASSWORD_MAX_LENGTH, PASSWORD_HISTORY (how many
earlier passwords may not come back) and PASSWORD_MAX_AGE_DAYS (0: passwords never expire).
The list of common passwords ships with the package (lab/data/common-passwords.txt).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from flask import current_app
from werkzeug.security import check_password_hash

COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent / "data" / "common-passwords.txt"


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list, lower case (read once per process)."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def malformed(password: str) -> str | None:
    """Why ``password`` cannot be checked at all (too long, control characters), else None.

    Checked before any hashing, so a megabyte or a NUL byte is refused at once."""
    maximum = int(current_app.config["PASSWORD_MAX_LENGTH"])
    if len(password) > maximum:
        return f"Use at most {maximum} characters."
    if any(ord(char) < 32 or ord(char) == 127 for char in password):
        return "A password cannot contain control characters (tabs, line breaks, NUL)."
    return None


def policy_error(password: str, *, username: str, previous_hashes: Iterable[str] = ()) -> str | None:
    """What is wrong with ``password`` as ``username``'s new password, or None when it may be used.

    ``previous_hashes``: the current and earlier hashes it may not repeat (the newest first)."""
    problem = malformed(password)
    if problem:
        return problem
    minimum = int(current_app.config["PASSWORD_MIN_LENGTH"])
    if len(password) < minimum:
        return f"Use at least {minimum} characters."
    lowered = password.lower()
    if username and username.lower() in lowered:
        return "A password must not contain the username."
    if lowered in common_passwords():
        return "This password is on the list of common passwords that are guessed first: choose another."
    if any(check_password_hash(stored, password) for stored in previous_hashes):
        return (f"This password was used recently: choose one that is not among your last "
                f"{history_length()} passwords.")
    return None


def history_length() -> int:
    """How many of the last passwords (the current one included) a new one may not repeat."""
    return max(1, int(current_app.config["PASSWORD_HISTORY"]))


def expired(changed_at: datetime | None, now: datetime) -> bool:
    """True when a password set at ``changed_at`` is older than PASSWORD_MAX_AGE_DAYS (if set)."""
    days = int(current_app.config["PASSWORD_MAX_AGE_DAYS"] or 0)
    return days > 0 and changed_at is not None and now - changed_at > timedelta(days=days)
