"""Placeholder: the OpenAPI document, merged from each route module's PATHS."""

from __future__ import annotations

from typing import Any

PATHS: dict[str, Any] = {}
