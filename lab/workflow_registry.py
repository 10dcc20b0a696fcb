"""Where lab/ gets process definitions: the shipped files (WORKFLOW_DIR) that installation
approves and ``check-workflows`` checks, and the texts kept in the database that batches pin.
Which version a new batch starts under is decided by change control (lab.services.processes),
never by which file is newest on disk."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flask import current_app

from workflows.definition import DEFINITIONS_DIR, load_definition_text
from workflows.model import ProcessDefinition


def workflow_dir() -> Path:
    configured = current_app.config.get("WORKFLOW_DIR")
    return Path(configured) if configured else DEFINITIONS_DIR


@lru_cache(maxsize=64)
def pinned_definition(sha256: str, source_text: str, source_name: str) -> ProcessDefinition:
    """Parse a definition text kept in the database (cached by its hash)."""
    return load_definition_text(source_text, source_name)
