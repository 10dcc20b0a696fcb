"""What the commands share: refusing with the reason (exit 1, nothing written) and finding a user."""

from __future__ import annotations

from typing import NoReturn

import click
from sqlalchemy import select

from lab.extensions import db
from lab.models import User


def refuse(message: str) -> NoReturn:
    """Roll back, say why on stderr, and exit 1."""
    db.session.rollback()
    click.echo(f"Refused: {message} Nothing was written.", err=True)
    raise click.exceptions.Exit(1)


def user_named(username: str) -> User:
    """The user ``username`` (as typed, any case), or refuse."""
    user = db.session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        refuse(f"No user {username!r}.")
    return user
