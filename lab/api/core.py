"""The /api/v1 blueprint's common ground: token authentication, problem answers (RFC 9457) and
strict JSON bodies.

A request to the API carries a personal token (``Authorization: Bearer ct_…``) and nothing
else: session cookies are ignored here, so a page in a browser can never make an API call in
its user's name (and the API needs no CSRF token). The token's user acts with their own role,
as on the pages; a read token only reads. Every write the request makes is attributed in the
audit trail to the user and the token (``AuditEvent.via``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, current_app, g, request
from werkzeug.wrappers import Response

from lab.audit import VIA
from lab.exceptions import InvalidInput, LabError, NotAllowed
from lab.extensions import csrf
from lab.models import ApiToken, User
from lab.services.api_tokens import authenticate

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)
PREFIX = "/api/"
PROBLEM_TYPE = "application/problem+json"
#: The largest JSON body the API reads (a result or a count is a few hundred bytes).
MAX_JSON_BYTES = 64 * 1024
TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          409: "Conflict", 413: "Content too large", 415: "Unsupported media type", 422: "Unprocessable content",
          429: "Too many requests", 500: "Internal server error", 503: "Service unavailable"}


class WrongMediaType(LabError):
    status = 415


class TooLarge(LabError):
    status = 413


def is_api_request() -> bool:
    return request.path.startswith(PREFIX)


def problem(status: int, detail: str, *, errors: Mapping[str, str] | None = None,
            headers: Mapping[str, str] | None = None) -> Response:
    """An RFC 9457 problem answer: ``detail`` says what was wrong and what to do; ``errors``
    maps request fields (JSON member names, or a field of a step) to their own reason."""
    body: dict[str, Any] = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status,
                            "detail": detail}
    if errors:
        body["errors"] = dict(errors)
    response = Response(json.dumps(body, ensure_ascii=False), status=status, mimetype=PROBLEM_TYPE)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="CellTrail"'
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


#: Endpoints answered without a token: they hold no data (the OpenAPI document).
PUBLIC_ENDPOINTS = frozenset({"api.openapi_document"})


@bp.before_request
def _authenticate() -> None:
    """Every API request names a live token; its user and token are kept on ``g``."""
    request.max_content_length = int(current_app.config["API_MAX_UPLOAD_BYTES"])
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    token = authenticate(request.headers.get("Authorization"))
    g.api_token = token
    g.api_user = token.user
    setattr(g, VIA, token.label[:128])


def api_user() -> User:
    """The user the request's token acts as."""
    user: User = g.api_user
    return user


def api_token() -> ApiToken:
    token: ApiToken = g.api_token
    return token


class BadQuery(InvalidInput):
    """A query parameter this route does not take, or one given twice: the request itself is wrong (400)."""

    status = 400


def query_args(*allowed: str) -> dict[str, str]:
    """The request's query parameters (trimmed), each one of ``allowed`` and given once; an
    unknown one is refused (400, naming it) rather than ignored, so a misspelt filter is not
    silently a list of everything."""
    errors = {name: f"Unknown query parameter; this route takes {', '.join(allowed) or 'none'}."
              for name in request.args if name not in allowed}
    errors.update({name: "Given more than once; give it once." for name in request.args
                   if name in allowed and len(request.args.getlist(name)) > 1})
    if errors:
        raise BadQuery(f"The query was not understood: {', '.join(sorted(errors))}.", errors)
    return {name: request.args[name].strip() for name in request.args}


def limit_arg(args: Mapping[str, str], *, default: int, maximum: int) -> int:
    """The ``limit`` parameter of a paged list: 1 to ``maximum``, ``default`` when absent."""
    text = args.get("limit", "")
    if not text:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 6 and 1 <= int(text) <= maximum):
        raise InvalidInput("The limit was not understood.",
                           {"limit": f"{text[:20]!r} is not a whole number from 1 to {maximum} (default {default})."})
    return int(text)


def require_write() -> None:
    """Refuse (403) a read token's write."""
    if api_token().scope != "write":
        raise NotAllowed(f"The token “{api_token().name}” may only read: make a token with scope write to "
                         "submit values.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _no_constants(text: str) -> Any:
    raise ValueError(text)


def json_body(fields: Mapping[str, type | tuple[type, ...]], *, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object, checked: sent as application/json, at most MAX_JSON_BYTES,
    valid JSON without NaN or infinities, an object whose members are all in ``fields`` (name ->
    accepted Python types), none of ``required`` missing. Raises WrongMediaType (415) or
    InvalidInput (422, with each member's reason)."""
    if request.mimetype != "application/json":
        raise WrongMediaType(f"Send the body as JSON with “Content-Type: application/json” (it came as "
                             f"“{request.mimetype or 'nothing'}”).")
    too_large = TooLarge(f"The body is larger than {MAX_JSON_BYTES // 1024} KiB: nothing was saved.")
    if (request.content_length or 0) > MAX_JSON_BYTES:
        raise too_large
    raw = request.get_data(cache=True)
    if len(raw) > MAX_JSON_BYTES:
        raise too_large
    try:
        data = json.loads(raw.decode("utf-8"), parse_float=_finite, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as error:
        detail = "NaN and infinite numbers are not values" if isinstance(error, ValueError) and not isinstance(
            error, json.JSONDecodeError) else f"{error}"
        raise InvalidInput(f"The body is not valid JSON: {detail}. Nothing was saved.") from None
    if not isinstance(data, dict):
        raise InvalidInput("The body must be a JSON object. Nothing was saved.")
    errors: dict[str, str] = {}
    for name in data:
        if name not in fields:
            errors[name] = f"Unknown member; this request takes {', '.join(sorted(fields))}."
    for name in required:
        if name not in data:
            errors[name] = "Required."
    for name, value in data.items():
        accepted = fields.get(name)
        if accepted is None or name in errors:
            continue
        types = accepted if isinstance(accepted, tuple) else (accepted,)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            errors[name] = f"Must be {' or '.join(_JSON_NAMES.get(t, t.__name__) for t in types)}."
    if errors:
        raise InvalidInput("The request was not accepted: see errors. Nothing was saved.", errors)
    return data


_JSON_NAMES: dict[type, str] = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
                                dict: "an object", list: "an array", type(None): "null"}
