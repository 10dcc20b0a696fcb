"""After sign-in, ``next`` leads only to a path on this site (issue 12, item 5).

The values are sent as raw query strings, so the server decodes them as a browser's
request would reach it (``/%09/evil.example/`` arrives as ``/<tab>/evil.example/``).
"""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.factories import PASSWORD

pytestmark = pytest.mark.requirements("SEC-1")

OFF_SITE = [
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(1)",
    "data:text/html,hi",
    "//evil.example/",
    "///evil.example/",
    "/\\evil.example/",
    "\\\\evil.example",
    "/%09/evil.example/",
    "/%0d%0a/evil.example/",
    "%2F%2Fevil.example/",
    "/%252F%252Fevil.example/",
    "/%5Cevil.example/",
    "%09/evil.example/",
    "/ /evil.example/",
    "evil.example",
    "patients/",
]


def _sign_in(client: FlaskClient, query: str) -> str:
    response = client.post(f"/login?next={query}", data={"username": "tech1", "password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    client.post("/logout")
    return response.headers["Location"]


@pytest.mark.parametrize("query", OFF_SITE)
def test_next_off_site_or_malformed_goes_to_the_dashboard(client: FlaskClient, users: dict[str, int],
                                                          query: str) -> None:
    assert _sign_in(client, query) == "/"


def test_next_with_a_nul_byte_never_leaves_the_site(client: FlaskClient, users: dict[str, int]) -> None:
    response = client.post("/login?next=/%00/evil.example/", data={"username": "tech1", "password": PASSWORD})
    assert response.status_code in (302, 400)  # refused as input, or signed in to the dashboard
    assert response.headers.get("Location", "/") == "/"


@pytest.mark.parametrize(("query", "location"), [
    ("/patients/", "/patients/"),
    ("/audit%3Faction%3Duser.login", "/audit?action=user.login"),
])
def test_next_on_this_site_is_followed(client: FlaskClient, users: dict[str, int], query: str,
                                       location: str) -> None:
    assert _sign_in(client, query) == location
