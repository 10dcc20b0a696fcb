"""Counters behind COIs, batch and deviation numbers; incremented under a row lock."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from lab.extensions import Model


class CodeSequence(Model):
    __tablename__ = "code_sequences"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_value: Mapped[int] = mapped_column(default=0)
