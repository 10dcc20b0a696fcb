"""What the browser tests share: a live server, the demo lab it serves, and people at the
bench, each signed in in a browser context of their own, every page they see kept as a
screenshot.

Pages are found as a person finds them: by label, role and visible text, never by CSS class
(the interface is restyled freely). Where a link is best named by where it goes, its route
(``href``) is used, which the application defines.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import pypdfium2
from flask import Flask, request
from playwright.sync_api import Browser, BrowserContext, Download, Locator, Page, Route, expect
from sqlalchemy import select
from werkzeug.serving import make_server

from lab.demo import CLINICIANS, USERS, equipment_code, lot_code
from lab.extensions import db
from lab.models import Batch, Container, CustodyEvent, Deviation, QcResult, Signature, StepEntry
from tests.factories import PASSWORD

SCAN_BOX = "Scan or type a batch number or COI"
#: The password of a signing form, "Password (electronic signature)" (the sign-in form's is "Password").
SIGNING_PASSWORD = re.compile(r"^Password\b")
FULL_NAMES = {username: full_name for username, _role, full_name in USERS} | dict(CLINICIANS)
#: How a signature line shows its time: UTC, to the second.
SIGNED_AT = "%Y-%m-%d %H:%M UTC"  # as workflows.formatting writes a date-time


def message(page: Page, text: str | re.Pattern[str]) -> Locator:
    """The message the page says ``text`` in: a flash or a form's refusal (role status or alert)."""
    return page.get_by_role("status").or_(page.get_by_role("alert")).filter(has_text=text)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:120] or "page"


class Hold:
    """Keeps the answer to the first ``method`` request of ``path`` from leaving the server
    until released: a slow network, so that an impatient second click happens while the
    first request has been done but its answer has not arrived."""

    def __init__(self, method: str, path: str) -> None:
        self.method, self.path = method, path
        self.reached = threading.Event()
        self.released = threading.Event()


class LiveServer:
    """``app`` served by Werkzeug on a free port of 127.0.0.1, one thread per request.

    Notes every request's method, path and status, and every exception a view raised.
    """

    def __init__(self, app: Flask) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self.exceptions: list[str] = []
        self.hold: Hold | None = None
        app.after_request(self._after)
        app.teardown_request(self._teardown)
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="celltrail-live-server", daemon=True)
        self._thread.start()

    def _after(self, response: Any) -> Any:
        self.seen.append((request.method, request.path, response.status_code))
        hold = self.hold
        if hold and (request.method, request.path) == (hold.method, hold.path) and not hold.reached.is_set():
            hold.reached.set()
            hold.released.wait(timeout=20)
        return response

    def _teardown(self, error: BaseException | None) -> None:
        if error is not None:
            self.exceptions.append(f"{request.method} {request.path}: {error!r}")

    def statuses(self, method: str, path: str) -> list[int]:
        return [status for m, p, status in self.seen if (m, p) == (method, path)]

    def wait_for(self, method: str, path: str, count: int, timeout: float) -> bool:
        """Wait until ``count`` requests of ``method`` and ``path`` have been answered."""
        deadline = time.monotonic() + timeout
        while len(self.statuses(method, path)) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.released.set()
        self._server.shutdown()
        self._thread.join(timeout=10)
        self._server.server_close()


@dataclass(frozen=True)
class EntryRow:
    id: int
    performed_by: str
    values: dict[str, str]
    signatures: list[tuple[str, str, datetime]]  # signer, meaning, when


class Lab:
    """The demo lab of ``lab.demo.seed`` plus SLE-10, whose transduction is due: what the
    tests look up in the database, each in an application context of its own (so the test
    holds no transaction open while the server writes)."""

    def __init__(self, app: Flask, batches: dict[str, str]) -> None:
        self.app = app
        self.batches = batches

    def batch(self, ref: str) -> str:
        return self.batches[ref]

    def _batch(self, ref: str) -> Batch:
        return db.session.execute(select(Batch).filter_by(batch_number=self.batches[ref])).scalar_one()

    def coi(self, ref: str) -> str:
        with self.app.app_context():
            return self._batch(ref).patient.coi

    def lot(self, lot_number: str) -> str:
        """The generated code of the demo lot with supplier lot number ``lot_number``."""
        with self.app.app_context():
            return lot_code(lot_number)

    def equipment(self, name: str) -> str:
        """The generated code of the demo instrument called ``name`` (lab.demo.INCUBATOR, ...)."""
        with self.app.app_context():
            return equipment_code(name)

    def container(self, ref: str, kind: str) -> str:
        """The code of the batch's last container of ``kind``."""
        with self.app.app_context():
            batch = self._batch(ref)
            return db.session.scalars(select(Container.code).where(Container.batch_id == batch.id, Container.kind == kind)
                                      .order_by(Container.id)).all()[-1]

    def _signatures(self, batch: Batch, record_type: str, record_id: int) -> list[tuple[str, str, datetime]]:
        rows = db.session.scalars(select(Signature).where(
            Signature.batch_id == batch.id, Signature.record_type == record_type, Signature.record_id == record_id)
            .order_by(Signature.id)).all()
        return [(s.signer.username, s.meaning, s.signed_at) for s in rows]

    def entries(self, ref: str, step_key: str) -> list[EntryRow]:
        with self.app.app_context():
            batch = self._batch(ref)
            rows = db.session.scalars(select(StepEntry).where(StepEntry.batch_id == batch.id,
                                                              StepEntry.step_key == step_key).order_by(StepEntry.id))
            return [EntryRow(e.id, e.performed_by.username, {v.field_key: v.text for v in e.values},
                             self._signatures(batch, "step_entry", e.id)) for e in rows]

    def culture_days(self, ref: str) -> list[str]:
        return [e.values.get("culture_day", "") for e in self.entries(ref, "expansion")]

    def results(self, ref: str, test_key: str) -> list[tuple[str, str, list[tuple[str, str, datetime]]]]:
        """Each result of ``test_key``: its text, verdict and signatures."""
        with self.app.app_context():
            batch = self._batch(ref)
            rows = db.session.scalars(select(QcResult).where(QcResult.batch_id == batch.id,
                                                             QcResult.test_key == test_key).order_by(QcResult.id))
            return [(r.text, r.verdict, self._signatures(batch, "qc_result", r.id)) for r in rows]

    def state(self, ref: str) -> str:
        with self.app.app_context():
            return self._batch(ref).state

    def disposition_signatures(self, ref: str) -> list[tuple[str, str, datetime]]:
        with self.app.app_context():
            batch = self._batch(ref)
            rows = db.session.scalars(select(Signature).where(Signature.batch_id == batch.id,
                                                              Signature.record_type == "disposition")
                                      .order_by(Signature.id)).all()
            return [(s.signer.username, s.meaning, s.signed_at) for s in rows]

    def custody_mismatches(self, ref: str) -> list[tuple[str, str]]:
        """The scanned code and step of each refused scan at the batch's hand-offs."""
        with self.app.app_context():
            batch = self._batch(ref)
            rows = db.session.scalars(select(CustodyEvent).where(CustodyEvent.batch_id == batch.id,
                                                                 CustodyEvent.matched.is_(False)))
            return [(e.scanned_code, e.step_key or "") for e in rows]

    def deviations(self, ref: str) -> list[tuple[str, str, str]]:
        """Each deviation of the batch: source, title, status."""
        with self.app.app_context():
            batch = self._batch(ref)
            rows = db.session.scalars(select(Deviation).where(Deviation.batch_id == batch.id).order_by(Deviation.id))
            return [(d.source, d.title, d.status) for d in rows]


class Bench:
    """The people of one test, each in a browser context of their own, and the screenshots of
    every page they see: ``<directory>/<nn>-<who>-<what>.png``."""

    def __init__(self, browser: Browser, server: LiveServer, lab: Lab, directory: Path,
                 viewport: tuple[int, int] = (1280, 800)) -> None:
        self.browser, self.server, self.lab, self.directory = browser, server, lab, directory
        self.viewport = {"width": viewport[0], "height": viewport[1]}
        self.contexts: list[BrowserContext] = []
        self.pages: list[Page] = []
        self.problems: list[str] = []  # JavaScript errors and server errors any page met
        self._count = 0

    def person(self, username: str, *, javascript: bool = True, full_name: str | None = None) -> Person:
        """Someone in a browser context of their own: a demo user, or one named ``full_name``."""
        context = self.browser.new_context(base_url=self.server.url, accept_downloads=True, locale="en-GB",
                                           timezone_id="UTC", viewport=self.viewport,
                                           java_script_enabled=javascript)
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        page = context.new_page()
        self.pages.append(page)
        page.on("pageerror", lambda error: self.problems.append(f"{username}: JavaScript error on {page.url}: {error}"))
        page.on("response", lambda response: self.problems.append(
            f"{username}: {response.status} from {response.request.method} {response.url}")
            if response.status >= 500 else None)
        return Person(username, full_name or FULL_NAMES[username], page, self)

    def shot(self, page: Page, what: str) -> Path:
        """A screenshot of the whole page; a page wider than its window is noted as a problem."""
        self._count += 1
        path = self.directory / f"{self._count:02d}-{slug(what)}.png"
        page.screenshot(path=str(path), full_page=True)
        wide = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        if wide[0] > wide[1]:
            self.problems.append(f"{path.name}: {page.url} is {wide[0]} px wide in a {wide[1]} px window")
        return path

    def keep(self, name: str, data: bytes) -> Path:
        """Keep a file a person downloaded next to the screenshots."""
        path = self.directory / slug(name)
        path.write_bytes(data)
        return path

    def keep_first_page(self, what: str, pdf: bytes) -> Path:
        """A picture of a PDF's first page, numbered with the screenshots."""
        self._count += 1
        path = self.directory / f"{self._count:02d}-{slug(what)}-page-1.png"
        document = pypdfium2.PdfDocument(pdf)
        try:
            document[0].render(scale=110 / 72).to_pil().save(path)
        finally:
            document.close()
        return path

    def close(self, *, failed: bool) -> None:
        try:
            if failed:  # what each person saw when the test failed
                for page in self.pages:
                    if not page.is_closed():
                        try:
                            self.shot(page, "at-failure")
                        except Exception as error:  # noqa: BLE001 - a failed screenshot must not hide the failure
                            self.problems.append(f"no failure screenshot of {page.url}: {error}")
        finally:
            for context in self.contexts:
                context.close()


@dataclass
class Person:
    """Someone at the bench: a username, the printed name signatures carry, and their page."""

    username: str
    full_name: str
    page: Page
    bench: Bench

    def shot(self, what: str) -> Path:
        return self.bench.shot(self.page, f"{self.username}-{what}")

    def sign_in(self, then: str | None = None) -> None:
        """Sign in on the sign-in page and land where it sends (``then``: a path to go to)."""
        page = self.page
        page.goto("/login" + (f"?next={quote(then)}" if then else ""))
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        self.shot("sign-in")
        page.get_by_label("Username").fill(self.username)
        page.get_by_label("Password").fill(PASSWORD)
        self.submit("Sign in")
        # The account menu (closed) holds the name and "Sign out" at every width.
        expect(page.locator(".topbar form.sign-out button")).to_have_text("Sign out")
        expect(page.locator(".topbar .account .user")).to_have_text(self.full_name)
        self.shot("signed-in")

    def menu(self, name: str) -> None:
        """Open the page ``name`` from the main menu: a link in the header's row on a wide screen,
        behind the header's "Menu" button on a narrow one."""
        link = self.page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)
        if not link.is_visible():
            self.page.locator(".topbar .menu > summary").click()
        with self.page.expect_event("load"):
            link.click()

    def submit(self, button: str) -> None:
        """Click the button named ``button`` and wait for the page it brings."""
        with self.page.expect_event("load"):
            self.page.get_by_role("button", name=button).click()

    def follow(self, link: Locator, what: str) -> None:
        with self.page.expect_event("load"):
            link.click()
        self.shot(what)

    def scan(self, code: str, what: str = "scanned") -> None:
        """Scan ``code`` into the scan box at the top of the page: a keyboard-wedge scanner
        types it and presses Enter."""
        box = self.page.get_by_label(SCAN_BOX)
        box.click()
        box.press_sequentially(code)
        with self.page.expect_event("load"):
            box.press("Enter")
        self.shot(what)

    def wedge(self, label: str, code: str) -> None:
        """Scan ``code`` into the field labelled ``label``: typed, then Enter."""
        field = self.page.get_by_label(label)
        field.click()
        field.press_sequentially(code)
        field.press("Enter")

    def sign(self) -> None:
        """Fill the electronic signature: the username too when the form asks for it (the
        first signature of a sign-in), and the password."""
        username = self.page.get_by_label("Username", exact=True)
        if username.count():
            username.fill(self.username)
        self.page.get_by_label(SIGNING_PASSWORD).fill(PASSWORD)

    def download(self, link: Locator, what: str) -> tuple[bytes, str]:
        """Click ``link`` and return the file it gives and how the browser took it.

        An attachment is saved by the browser: a Playwright download, and the page stays. A
        PDF sent inline opens in Chromium's PDF viewer instead, whose page is not the file
        (and photographs as a grey rectangle), so the bytes are taken from the answer on its
        way to the browser (``route.fetch``), and the person goes back to the page they were
        on. Either way the server answers once. The file is kept with the screenshots, and a
        PDF's first page as a picture.
        """
        page = self.page
        was = page.url
        url = urljoin(was, link.get_attribute("href") or "")
        answered: list[tuple[dict[str, str], bytes]] = []

        def take(route: Route) -> None:
            response = route.fetch()
            answered.append((response.headers, response.body()))
            route.fulfill(response=response)

        downloads: list[Download] = []

        def note(download: Download) -> None:
            downloads.append(download)

        page.on("download", note)
        page.route(url, take)
        try:
            link.click()
            deadline = time.monotonic() + 15
            while not answered and time.monotonic() < deadline:
                page.wait_for_timeout(50)
            assert answered, f"{url} was not answered"
            headers, body = answered[0]
            disposition = headers.get("content-disposition", "")
            if disposition.startswith("attachment"):
                while not downloads and time.monotonic() < deadline:
                    page.wait_for_timeout(50)
                assert downloads, f"{url} came as an attachment but the browser did not download it"
                assert downloads[0].path().read_bytes() == body
                how = "download"
            else:
                how = "inline"
                page.goto(was)
        finally:
            page.unroute(url, take)
            page.remove_listener("download", note)
        name = re.search(r'filename="?([^";]+)', disposition)
        self.bench.keep(name[1] if name else url.rsplit("/", 1)[-1], body)
        if body.startswith(b"%PDF"):
            self.bench.keep_first_page(f"{self.username}-{what}", body)
        return body, how
