"""What changed between two versions of a batch record, in words, from their canonical JSON.

Lists are matched item by item on what identifies an item (a step's key, an entry's
occurrence, a deviation's number, a signature's signer, meaning and time; otherwise its
position, since records only grow), so a correction reads as "a version added to Viable
cells of entry 2 of Expansion", not as a shifted list. New audit trail entries are
summed up in one line. Times and values are written for people as the printed record
writes them (``workflows.formatting``), not in their canonical form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workflows.formatting import format_recorded, format_utc

IDENTITY_KEYS = ("key", "number", "code", "id", "occurrence")
NAME_KEYS = ("number", "code", "title", "label")
SINGULAR = {"versions": "version", "results": "result", "custody": "hand-off", "reprints": "reprint"}
MAX_SHOWN = 160
#: A time in the canonical form (``2026-11-25T14:03:00.000000Z``) or a date-time value as stored (``...T14:03Z``).
_CANONICAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z")


@dataclass(frozen=True)
class Change:
    where: str  # "Steps / Expansion / entry 2 / Viable cells"
    what: str  # "version 2 added: 1.2e8 cells by Alex Rivera at ... Reason: ..."


def record_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """The changes from document ``old`` to ``new`` (both ``{"format": ..., "record": ...}``)."""
    if old.get("format") != new.get("format"):
        return [Change("Record format", f"{_shown(old.get('format'))} → {_shown(new.get('format'))}")]
    return _diff(old.get("record"), new.get("record"), ())


def _diff(old: Any, new: Any, path: tuple[str, ...]) -> list[Change]:
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in [*old, *(k for k in new if k not in old)]:
            if key != "audit" or path:
                changes += _diff(old.get(key), new.get(key), (*path, _words(key)))
        if not path:  # the record itself: its audit trail last, summed up
            changes += _audit(old.get("audit") or [], new.get("audit") or [])
        return changes
    if isinstance(old, list) and isinstance(new, list):
        return _list(old, new, path)
    if old == new:
        return []
    *where, field = path or ("Record",)
    return [Change(_where(tuple(where)), f"{field}: {_shown(old)} → {_shown(new)}")]


def _list(old: list[Any], new: list[Any], path: tuple[str, ...]) -> list[Change]:
    """Items matched by identity. A section's name (Steps, Deviations...) stays in the path;
    nested lists (entries, fields, signatures...) are named by their items alone."""
    base = path if len(path) == 1 else path[:-1]
    singular = SINGULAR.get(path[-1].lower(), "item") if path else "item"
    before = {_identity(item, i): item for i, item in enumerate(old)}
    after = {_identity(item, i): item for i, item in enumerate(new)}
    if len(before) != len(old) or len(after) != len(new):  # no usable identity: compare by position
        before, after = dict(enumerate(old)), dict(enumerate(new))
    changes = []
    items = list(after.values())
    for index, (identity, item) in enumerate(after.items()):
        name = _name(item, index, singular)
        if identity in before:
            changes += _diff(before[identity], item, (*base, name))
        else:
            replaced = items[index - 1] if singular == "version" and index else None
            changes.append(Change(_where(base), f"{name} added{_summary(item, replaced)}"))
    for index, (identity, item) in enumerate(before.items()):
        if identity not in after:
            changes.append(Change(_where(base), f"{_name(item, index, singular)} removed{_summary(item)}"))
    return changes


def _audit(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[Change]:
    known = {entry.get("id") for entry in old}
    added = [entry for entry in new if entry.get("id") not in known]
    missing = len(known - {entry.get("id") for entry in new})
    changes = []
    if added:
        actions = ", ".join(dict.fromkeys(str(entry.get("action")) for entry in added))
        changes.append(Change("Audit trail", f"{len(added)} entries added (#{added[0].get('id')} to "
                                             f"#{added[-1].get('id')}): {actions}"))
    if missing:
        changes.append(Change("Audit trail", f"{missing} entries of the printed trail are no longer in it"))
    return changes


def _identity(item: Any, index: int) -> Any:
    if isinstance(item, dict):
        if "printed_name" in item and "signed_at" in item:
            return item["printed_name"], item.get("meaning"), item["signed_at"]
        for key in IDENTITY_KEYS:
            if key in item:
                return item[key]
    return index


def _name(item: Any, index: int, singular: str) -> str:
    if isinstance(item, dict):
        if "printed_name" in item and "signed_at" in item:
            return f"signature of {item['printed_name']} ({item.get('meaning')}, {_shown(item['signed_at'])})"
        if "occurrence" in item:
            return f"entry {item['occurrence']}"
        for key in NAME_KEYS:
            if key in item:
                return str(item[key])
    return f"{singular} {index + 1}"


def _value(item: dict[str, Any]) -> str:
    """A version's value for people. The canonical form does not say the field's type: a
    stored date-time is known by its form, a number by its unit."""
    text, unit = str(item["text"]), item.get("unit")
    if _CANONICAL_TIME.fullmatch(text):
        return format_recorded(text, "datetime", unit)
    return format_recorded(text, "number" if unit else "text", unit)


def _summary(item: Any, replaced: Any = None) -> str:
    """A few words on an added or removed item, after a colon; ``replaced`` is the value a
    new version replaces."""
    if not isinstance(item, dict):
        return f": {_shown(item)}"
    if "printed_name" in item:
        return ""  # its name says it all
    if "text" in item and "recorded_by" in item:
        was = f" (was {_value(replaced)})" if isinstance(replaced, dict) and "text" in replaced else ""
        reason = f". Reason: {item['reason']}" if item.get("reason") else ""
        return f": {_value(item)}{was}, by {item['recorded_by']} at {_shown(item.get('recorded_at'))}{reason}"
    for who, when in (("performed_by", "performed_at"), ("decided_by", "decided_at"), ("opened_by", "opened_at"),
                      ("actor", "occurred_at")):
        if who in item:
            return f": by {item[who]} at {_shown(item.get(when))}"
    return ""


def _words(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _where(path: tuple[str, ...]) -> str:
    return " / ".join(path) or "Record"


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    if _CANONICAL_TIME.fullmatch(text):
        return format_utc(datetime.fromisoformat(text))
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"
