"""What every page must have to be read by anyone (issue 6, item 5): a title of its own, one
h1, a label for every input, ids that are unique, labels that point at something labelable,
an error message tied to the field it concerns, and no row flagged by colour alone. Checked
on the HTML the app serves."""

from __future__ import annotations

import html as entities
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

#: Row classes that colour a row; each such row must also say why in words or a symbol.
COLOURED = re.compile(r'<(tr|li)\b[^>]*\bclass="[^"]*\b(out|overdue|unusable|inactive|tl-problem)\b[^"]*"[^>]*>(.*?)</\1>', re.DOTALL)
SAID = ("OUT OF LIMIT", "OUT OF SPECIFICATION", "MISMATCH", "OVERDUE", "EXPIRED", "⚠", "quarantined", "rejected",
        "out of service", "deactivated", "recalled", "used up")
LABELABLE = {"input", "select", "textarea", "button", "meter", "output", "progress"}
UNLABELLED_INPUT_TYPES = {"hidden", "submit", "button", "reset", "image"}


@dataclass
class _Control:
    tag: str
    attrs: dict[str, str]
    in_label: bool


@dataclass
class PageFacts:
    title: str = ""
    h1: int = 0
    ids: list[str] = field(default_factory=list)
    label_for: list[str] = field(default_factory=list)
    controls: list[_Control] = field(default_factory=list)
    tags_by_id: dict[str, str] = field(default_factory=dict)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.facts = PageFacts()
        self._labels = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if "id" in values:
            self.facts.ids.append(values["id"])
            self.facts.tags_by_id[values["id"]] = tag
        if tag == "title":
            self._in_title = True
        elif tag == "h1":
            self.facts.h1 += 1
        elif tag == "label":
            self._labels += 1
            if values.get("for"):
                self.facts.label_for.append(values["for"])
        elif tag in ("input", "select", "textarea"):
            self.facts.controls.append(_Control(tag, values, self._labels > 0))

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "label":
            self._labels -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.facts.title += data


def problems(html: str) -> list[str]:
    """Everything wrong with ``html`` by the rules above; [] for a good page."""
    reader = _Reader()
    reader.feed(html)
    facts = reader.facts
    found = []
    title = " ".join(facts.title.split())
    if not title or title == "CellTrail" or title.startswith("·"):
        found.append(f"the page has no title of its own: {title!r}")
    if facts.h1 != 1:
        found.append(f"{facts.h1} h1 headings instead of one")
    duplicates = sorted({i for i in facts.ids if facts.ids.count(i) > 1})
    if duplicates:
        found.append(f"ids used twice: {duplicates}")
    for target in facts.label_for:
        if facts.tags_by_id.get(target) not in LABELABLE:
            found.append(f"a label points at {target!r}, which is not an input ({facts.tags_by_id.get(target)})")
    labelled = set(facts.label_for)
    for control in facts.controls:
        attrs = control.attrs
        if control.tag == "input" and attrs.get("type", "text") in UNLABELLED_INPUT_TYPES:
            continue
        if not (control.in_label or attrs.get("id") in labelled or attrs.get("aria-label")
                or attrs.get("aria-labelledby")):
            found.append(f"a {control.tag} without a label: {attrs}")
        described = attrs.get("aria-describedby", "")
        if attrs.get("aria-invalid") == "true" and not described:
            found.append(f"an invalid {control.tag} without its error message tied to it: {attrs}")
        for target in described.split():
            if target not in facts.tags_by_id:
                found.append(f"aria-describedby names {target!r}, which is not on the page")
    for _tag, colour, inner in COLOURED.findall(html):
        text = " ".join(entities.unescape(re.sub(r"<[^>]+>", " ", inner)).split())
        if not any(word in text for word in SAID):
            found.append(f"a row marked {colour!r} by colour only: {text[:120]!r}")
    return found
