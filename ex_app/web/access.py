"""Who may call which route of the ExApp: one rule, enforced for every request here.

AppAPI signs each request it sends to the ExApp with the app secret and a user id
(``AUTHORIZATION-APP-API``: base64 of ``user:secret``). The user is the one signed in to
Nextcloud, or empty: for a caller nobody signed in (AppAPI's proxy serves PUBLIC routes to
anyone) and for Nextcloud's own calls (``/init``, ``/enabled``, the file webhooks).
``appinfo/info.xml`` lists the routes AppAPI's proxy lets through, and this module reads the
same list, so every route is one of:

- ``PUBLIC`` (declared PUBLIC: the People page's ``js/``, ``css/``, ``img/``): any signed
  request, with or without a user;
- ``USER`` (declared USER): a signed request naming a user; the route acts for that user only;
- ``SYSTEM`` (not declared): Nextcloud's own calls. AppAPI's proxy never forwards to them, so a
  request that came through it (the proxy always adds ``X-Origin-IP``) is refused.

``/heartbeat`` alone needs nothing. A path with a dot segment (``.`` or ``..``, raw or
percent-encoded) is refused everywhere: no route has one, and AppAPI matches its routes on the
raw path before its HTTP client collapses the dot segments. Refusals are logged without the
secret that was sent or the real one.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

from nc_py_api import AsyncNextcloudApp
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ex_app.config import PROJECT_ROOT

log = logging.getLogger(__name__)

INFO_XML = PROJECT_ROOT / "appinfo" / "info.xml"
OPEN_PATHS = frozenset({"/heartbeat"})  # AppAPI's health check, without any header
SIGNED_HEADERS = ("ex-app-id", "ex-app-version", "authorization-app-api")
PROXY_HEADER = "x-origin-ip"  # AppAPI's proxy adds the caller's address to what it forwards
ENCODING_ROUNDS = 3  # a path still percent-encoded after this many decodings is refused


class Access(enum.Enum):
    """What a route needs (see the module's docstring)."""

    OPEN = "open"
    PUBLIC = "PUBLIC"
    USER = "USER"
    SYSTEM = "system"


@dataclass(frozen=True)
class DeclaredRoute:
    """One ``<route>`` of info.xml: its URL pattern, verbs and access level."""

    pattern: re.Pattern[str]
    verbs: frozenset[str]
    access: Access


def declared_routes(info_xml: Path = INFO_XML) -> list[DeclaredRoute]:
    """info.xml's routes, in order. Only PUBLIC and USER are enforced here: an ADMIN route
    would need an admin check, so declaring one fails the start rather than going unchecked."""
    routes = []
    for route in ElementTree.parse(info_xml).getroot().iterfind("external-app/routes/route"):
        url, level = route.findtext("url", ""), route.findtext("access_level", "").strip()
        if level not in (Access.PUBLIC.value, Access.USER.value):
            raise ValueError(f"info.xml route {url}: access level {level!r} is not enforced by "
                             "ex_app/web/access.py (PUBLIC or USER)")
        verbs = frozenset(v.strip().upper() for v in route.findtext("verb", "").split(","))
        routes.append(DeclaredRoute(re.compile(url, re.IGNORECASE), verbs, Access(level)))
    return routes


def access_of(routes: list[DeclaredRoute], method: str, path: str) -> Access:
    """What a request for path needs: the first declared route matching path and method
    (AppAPI's rule), else the first matching path alone, else SYSTEM."""
    if path in OPEN_PATHS:
        return Access.OPEN
    method = "GET" if method == "HEAD" else method
    matching = [route for route in routes if route.pattern.search(path)]
    for route in matching:
        if method in route.verbs:
            return route.access
    return matching[0].access if matching else Access.SYSTEM


def has_dot_segment(path: str) -> bool:
    """Whether path has a ``.`` or ``..`` segment (``/`` or ``\\`` separated), raw or
    percent-encoded once or more."""
    for _ in range(ENCODING_ROUNDS):
        if any(part in (".", "..") for part in re.split(r"[/\\]", path)):
            return True
        decoded = unquote(path, errors="surrogateescape")
        if decoded == path:
            return False
        path = decoded
    return True


class Refused(Exception):
    """A request that does not get through: the status, why (for the log only) and the log
    level (a bad signature is a warning; a route the caller may not use is information)."""

    def __init__(self, status: int, reason: str, level: int = logging.INFO) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.level = level


def bad_signature(reason: str) -> Refused:
    """A 401 for a request AppAPI did not sign, logged as a warning."""
    return Refused(401, reason, logging.WARNING)


def signed_user(headers: Headers) -> str:
    """The user of a request AppAPI signed ("" for none); Refused(401) otherwise. The app's
    id and secret come from nc_py_api's configuration (the environment AppAPI deploys with)."""
    values = {name: headers.getlist(name) for name in SIGNED_HEADERS}
    missing = [name for name, found in values.items() if len(found) != 1 or not found[0]]
    if missing:
        raise bad_signature(f"missing or repeated AppAPI headers: {', '.join(missing)}")
    config = AsyncNextcloudApp().app_cfg
    if values["ex-app-id"][0] != config.app_name:
        raise bad_signature("EX-APP-ID names another app")
    try:
        token = base64.b64decode(values["authorization-app-api"][0], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise bad_signature("AUTHORIZATION-APP-API is not base64 of user:secret") from None
    user, colon, secret = token.partition(":")
    if not colon:
        raise bad_signature("AUTHORIZATION-APP-API is not base64 of user:secret")
    if not hmac.compare_digest(secret.encode(), config.app_secret.encode()):
        raise bad_signature(f"wrong app secret (user {user!r})")
    return user


class AppApiAccess:
    """Pure ASGI middleware enforcing the rule for every request; it leaves the user AppAPI
    signed for in ``scope["username"]`` (where nc_py_api's handlers and
    :func:`ex_app.web.dependencies.signed_in_user` look)."""

    def __init__(self, app: ASGIApp, routes: list[DeclaredRoute] | None = None) -> None:
        self.app = app
        self.routes = declared_routes() if routes is None else routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", "GET"), scope["path"]
        try:
            scope["username"] = self.check(scope)
        except Refused as refused:
            log.log(refused.level, "refused %s %r: %s", method, path[:300], refused.reason)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            text = {401: "Unauthorized", 404: "Not Found"}[refused.status]
            await PlainTextResponse(text, status_code=refused.status)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> str:
        """The user the request acts for ("" for none), or Refused."""
        method, path = scope.get("method", "GET"), scope["path"]
        raw = scope.get("raw_path", b"").decode("latin-1")
        if has_dot_segment(path) or has_dot_segment(raw):
            raise Refused(404, "dot segment in the path")
        access = access_of(self.routes, method, path)
        if access is Access.OPEN:
            return ""
        headers = Headers(scope=scope)
        user = signed_user(headers)
        if access is Access.USER and not user:
            raise Refused(401, "a USER route without a signed-in user")
        if access is Access.SYSTEM and PROXY_HEADER in headers:
            raise Refused(404, "a route for Nextcloud alone, through AppAPI's proxy")
        return user

