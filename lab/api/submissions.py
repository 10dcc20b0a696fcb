"""Placeholder: filled by the helper that owns it."""

from __future__ import annotations

from typing import Any

#: OpenAPI path items of this module's routes (merged by lab.api.openapi).
PATHS: dict[str, Any] = {}
