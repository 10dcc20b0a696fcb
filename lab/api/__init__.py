"""/api/v1: CellTrail's JSON API for instruments, a LIMS and other systems (lab.api.core)."""

from __future__ import annotations

from lab.api import batches, counters, openapi, patients, submissions, trail
from lab.api.core import bp

__all__ = ["batches", "bp", "counters", "openapi", "patients", "submissions", "trail"]
