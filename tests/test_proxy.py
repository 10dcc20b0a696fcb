"""Behind a reverse proxy (issue 12, item 6 and the per-address sign-in limit): with
``PROXY_HOPS`` set, the client's own address and scheme come from the proxy's headers; without
it, those headers are ignored, so a client cannot choose the address its failures count against."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from config import TestingConfig
from lab import ConfigurationError, create_app
from lab.extensions import db
from lab.models.users import SignInAttempt
from tests.conftest import empty_tables

FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


class BehindOneProxy(TestingConfig):
    PROXY_HOPS = 1


@pytest.fixture
def proxied_app(app: Flask) -> Iterator[Flask]:
    proxied = create_app(BehindOneProxy)
    empty_tables(proxied)
    yield proxied
    with proxied.app_context():
        db.session.remove()
        db.engine.dispose()


def _attempt_addresses(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(SignInAttempt.address).order_by(SignInAttempt.id)))


def test_without_hops_the_forwarded_headers_are_ignored(app: Flask, users: object) -> None:
    response = app.test_client().post("/login", data={"username": "tech1", "password": "wrong"}, headers=FORWARDED)
    assert response.status_code == 401
    assert _attempt_addresses(app) == ["127.0.0.1"]
    assert "Strict-Transport-Security" not in response.headers


def test_behind_a_proxy_the_client_address_and_scheme_are_the_forwarded_ones(proxied_app: Flask,
                                                                              users: object) -> None:
    response = proxied_app.test_client().post("/login", data={"username": "tech1", "password": "wrong"},
                                              headers=FORWARDED)
    assert response.status_code == 401
    assert _attempt_addresses(proxied_app) == ["203.0.113.7"]
    assert "max-age" in response.headers["Strict-Transport-Security"]  # the proxy's HTTPS counts


@pytest.mark.parametrize("hops", [-1, 6, "one", True])
def test_a_wrong_number_of_hops_stops_the_app_with_the_reason(hops: object) -> None:
    config = type("Wrong", (TestingConfig,), {"PROXY_HOPS": hops})
    with pytest.raises(ConfigurationError, match="LAB_PROXY_HOPS=1"):
        create_app(config)
