"""Where lab/ gets process definitions: from files for new batches, from the database for
existing ones, so that editing a file never changes a batch that already started."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flask import current_app

from workflows.definition import (
    DEFINITIONS_DIR,
    latest,
    load_definition_text,
    load_directory,
)
from workflows.model import ProcessDefinition

DEFAULT_PROCESS = "cd19-car-t"


def workflow_dir() -> Path:
    configured = current_app.config.get("WORKFLOW_DIR")
    return Path(configured) if configured else DEFINITIONS_DIR


def current_definition(key: str = DEFAULT_PROCESS) -> ProcessDefinition:
    """The newest version of ``key`` on disk: what a batch started now would pin.

    Raises DefinitionError when a file is malformed, KeyError when no file has ``key``.
    """
    return latest(load_directory(workflow_dir()), key)


@lru_cache(maxsize=64)
def pinned_definition(sha256: str, source_text: str, source_name: str) -> ProcessDefinition:
    """Parse a definition text kept in the database (cached by its hash)."""
    return load_definition_text(source_text, source_name)
