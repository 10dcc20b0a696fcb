"""A survey of every page a person reaches by following links, at the widths people use: what
the browser laid out wrong on each (a document wider than the window, an identity code broken
across lines, a header on two rows where there is room for one, a control covered by another).

The pages are found by following the links of each page (fetched with the person's cookies,
not rendered), at most a few addresses per endpoint; each endpoint is then rendered once and
looked at in every width.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from html import unescape
from urllib.parse import urljoin, urlsplit

from flask import Flask
from playwright.sync_api import Page
from werkzeug.exceptions import HTTPException

#: The widths of the issue: a laptop, a tablet held sideways, a phone.
WIDTHS = ((1280, 800), (1024, 768), (390, 844))
#: Addresses that answer with a file or an action, not a page.
NOT_PAGES = re.compile(r"\.(pdf|zpl|csv|toml)$|^/attachments/|^/static/|^/scan$|^/logout$|^/api/")
#: A bound on the links followed for one person, however many the pages offer.
MOST_FETCHES = 400
#: How many addresses of one endpoint are fetched to find further links.
FETCHES_PER_ENDPOINT = 2

#: What the browser is asked about the page it shows, at one width.
LOOK = """() => {
  const width = window.innerWidth, problems = [];
  const doc = document.documentElement.scrollWidth;
  if (doc > width) {
    const wide = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > width + 1
      && !e.closest('.table-scroll') && getComputedStyle(e).position !== 'fixed').slice(-3)
      .map(e => e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ').join('.') : ''));
    problems.push(`the document is ${doc} px wide in a ${width} px window (${wide.join(', ')})`);
  }
  for (const code of document.querySelectorAll('.code, .coi')) {
    if (code.getClientRects().length > 1) problems.push(`the code "${code.textContent.trim()}" is broken across lines`);
  }
  const header = document.querySelector('.topbar'), menu = document.querySelector('.topbar .menu > summary');
  if (header && menu) {
    const height = header.getBoundingClientRect().height, compact = menu.checkVisibility();
    if (width >= 1024 && (compact || height > 72)) problems.push(`the header is ${Math.round(height)} px tall (not one row)`);
    if (width < 1024 && !compact) problems.push('no compact menu below 1024 px');
    if (width < 1024 && height > 110) problems.push(`the compact header is ${Math.round(height)} px tall`);
  }
  window.scrollTo(0, 0);
  const controls = 'a[href], button, input:not([type=hidden]), select, textarea, summary';
  for (const control of document.querySelectorAll(controls)) {
    const box = control.getBoundingClientRect();
    if (box.width < 4 || box.height < 4 || !control.checkVisibility({visibilityProperty: true})) continue;
    const x = box.left + box.width / 2, y = box.top + box.height / 2;
    if (x < 0 || y < 0 || x >= width || y >= window.innerHeight) continue;
    const hit = document.elementFromPoint(x, y);
    if (!hit || control.contains(hit) || hit.contains(control)) continue;
    const label = hit.closest('label');
    if (label && (label.control === control || label.contains(control))) continue;
    problems.push(`the ${control.tagName.toLowerCase()} "${(control.textContent || control.name || '').trim().slice(0, 40)}"`
                  + ` is covered by ${hit.tagName.toLowerCase()}.${String(hit.className).split(' ').join('.')}`);
  }
  return problems;
}"""


@dataclass(frozen=True)
class Seen:
    """One endpoint's page as one person saw it, and what was wrong with it at each width."""

    endpoint: str
    url: str
    problems: tuple[str, ...]


def reachable(page: Page, app: Flask, base: str, start: str = "/") -> tuple[dict[str, str], list[str]]:
    """The first address of each page endpoint that ``page``'s person reaches from ``start`` by
    following links (fetched with their cookies, not rendered), by endpoint; and the links that
    answered with a server error."""
    adapter = app.url_map.bind("localhost")
    found: dict[str, str] = {}
    fetched: Counter[str] = Counter()
    errors: list[str] = []
    queue, queued, fetches = [start], {start}, 0
    while queue and fetches < MOST_FETCHES:
        url = queue.pop(0)
        endpoint = _endpoint(adapter, url)
        if endpoint is None or fetched[endpoint] >= FETCHES_PER_ENDPOINT:
            continue
        fetches += 1
        response = page.request.get(urljoin(base, url), max_redirects=0)
        if response.status >= 500:
            errors.append(f"{url} answered {response.status}")
        if response.status != 200 or not response.headers.get("content-type", "").startswith("text/html"):
            continue
        fetched[endpoint] += 1
        found.setdefault(endpoint, url)
        for link in _links(response.text(), url):
            if link not in queued:
                queued.add(link)
                queue.append(link)
    return found, errors


def look(page: Page, url: str, widths: Iterable[tuple[int, int]], shoot: str | None = None) -> list[str]:
    """Open ``url`` and say what is wrong with it at each width; with ``shoot``, a screenshot of
    the whole page at each width is written to ``<shoot>-<width>.png``."""
    page.goto(url)
    problems = []
    for width, height in widths:
        page.set_viewport_size({"width": width, "height": height})
        problems += [f"at {width} px: {problem}" for problem in page.evaluate(LOOK)]
        if shoot:
            page.screenshot(path=f"{shoot}-{width}.png", full_page=True)
    return problems


def _endpoint(adapter: object, url: str) -> str | None:
    path = urlsplit(url).path
    if NOT_PAGES.search(path):
        return None
    try:
        endpoint, _ = adapter.match(path, method="GET")  # type: ignore[attr-defined]
    except HTTPException:
        return None
    return str(endpoint)


def _links(html: str, base: str) -> list[str]:
    """The site's own addresses that ``html`` links to, relative to the site's root."""
    links = []
    for href in re.findall(r'<a\b[^>]*\bhref="([^"]+)"', html):
        target = urlsplit(urljoin(base, unescape(href)))
        if target.scheme or target.netloc or not target.path.startswith("/"):
            continue
        links.append(target.path + (f"?{target.query}" if target.query else ""))
    return links
