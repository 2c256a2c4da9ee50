"""AppAPI's proxy to an ExApp's own routes: ``/index.php/apps/app_api/proxy/{appId}/{other}``,
answered as AppAPI's ExAppProxyController does it, release by release (``state.nextcloud_version``:
since Nextcloud 32, AppAPI is tagged with the server's release, ``v33.0.8`` for 33.0.8, while the
version it reports stays ``33.0.0`` across the branch, so the server's version tells the code apart).

What every release does (app_api's ``lib/Controller/ExAppProxyController.php`` and
``lib/Service/AppAPIService.php``): Nextcloud's router percent-decodes the whole path once
(Symfony's UrlMatcher) and hands ``other`` over; ``other`` is checked against the ExApp's
info.xml routes (regex, verbs, access level: PUBLIC anyone, USER a signed-in user, ADMIN an
admin); an unknown or disabled app, or a route that does not pass, answers 404. The request
then goes to ``<exapp>/<other>`` with the query re-encoded from PHP's ``$_GET``: Guzzle
percent-encodes what a URL path cannot hold, cuts the path at a decoded ``?`` or ``#``, and
curl collapses ``.``/``..`` segments (RFC 3986 remove_dot_segments) before sending. The
caller's headers go along except ``X-Origin-IP``, ``Content-Length``,
``AUTHORIZATION-APP-API`` and the route's ``headers_to_exclude``, then AppAPI's own:
``AA-VERSION``, ``EX-APP-ID``, ``EX-APP-VERSION``, ``AUTHORIZATION-APP-API`` (base64 of
``user:secret``; the signed-in user, empty for a caller nobody signed in, also on PUBLIC
routes), ``AA-REQUEST-ID``, ``X-Origin-IP`` (the caller's address) and ``Accept-Language``.
A route with ``bruteforce_protection`` (a list of statuses) throttles the caller's address
with Nextcloud's throttler (action ``app_api``): delay 0.1 s x 2^attempts up to 25 s, 429
once more than 10 attempts fell in the last 30 minutes; a 2xx after a delay resets it.

What differs (:class:`ProxyRelease`): until 32.0.8 / 33.0.2 (and before 32, AppAPI 3.x-5.x)
a route matches ``'/' . url . '/i'`` on ``other`` and the first route passing path, verb and
access level wins (a refused USER route falls through to a broader PUBLIC one); 32.0.9 /
33.0.3 match ``~^(?:url)~i`` and the first route matching path and verb decides; from
32.0.10 / 33.0.4 (all of 34 and 35) a path with a ``..`` segment, raw or ``%2e``-encoded, is
refused with 404 first, and routes match ``'/' . other`` with a fallback to the bare path.

Signing in: :meth:`AppApiProxy.sign_in` gives the session cookie (named after the instance
id, as Nextcloud names it) of a signed-in browser. Basic auth and app passwords are not
modelled; neither is HaRP, multipart re-encoding or the CSP nonce put into HTML answers.
"""

from __future__ import annotations

import asyncio
import json
import math
import mimetypes
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote_to_bytes, urlencode
from xml.etree import ElementTree

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .auth import headers_to_exapp
from .state import INSTANCE_ID, NextcloudState

PREFIX = "/index.php/apps/app_api/proxy/"
INFO_XML = Path(__file__).resolve().parents[2] / "appinfo" / "info.xml"
SESSION_COOKIE = INSTANCE_ID  # Nextcloud's session cookie is named after the instance id
APPAPI_HEADERS = ("aa-version", "ex-app-id", "authorization-app-api", "ex-app-version", "aa-request-id")
HOP_BY_HOP = ("host", "connection", "transfer-encoding", "accept-encoding")  # httpx's own
PARENT_SEGMENT = re.compile(r"(?:^|/|%2[fF])(?:\.|%2[eE]){2}(?:/|%2[fF]|$)")  # 33.0.4+
PATH_KEEPS = re.compile(rb"[^a-zA-Z0-9_\-.~!$&'()*+,;=%:@/]")  # Guzzle's Uri::filterPath
QUERY_KEEPS = re.compile(rb"[^a-zA-Z0-9_\-.~!$&'()*+,;=%:@/?]")
THROTTLE_ACTION = "app_api"
MAX_ATTEMPTS = 10  # Nextcloud's IThrottler::MAX_ATTEMPTS
MAX_DELAY_MS = 25_000


@dataclass(frozen=True)
class ProxyRoute:
    """One route of the ExApp's info.xml as AppAPI stores it."""

    url: str
    verb: str
    access_level: str  # PUBLIC, USER or ADMIN
    headers_to_exclude: tuple[str, ...] = ()
    bruteforce_protection: tuple[int, ...] = ()


def routes_from_info_xml(path: Path = INFO_XML) -> list[ProxyRoute]:
    """The ``<route>`` entries of an info.xml, in order."""
    def json_list(text: str | None) -> list:
        try:
            value = json.loads(text or "[]")
        except ValueError:
            return []
        return value if isinstance(value, list) else []

    return [
        ProxyRoute(
            route.findtext("url", ""), route.findtext("verb", ""),
            route.findtext("access_level", "").strip().upper(),
            tuple(h.lower() for h in json_list(route.findtext("headers_to_exclude")) if isinstance(h, str)),
            tuple(int(s) for s in json_list(route.findtext("bruteforce_protection")) if isinstance(s, int)),
        )
        for route in ElementTree.parse(path).getroot().iterfind("external-app/routes/route")
    ]


@dataclass(frozen=True)
class ProxyRelease:
    """How one AppAPI release's ExAppProxyController checks a path (see the module's docstring)."""

    refuses_parent_segments: bool
    slash_prefixed_match: bool
    first_match_decides: bool

    @classmethod
    def of(cls, version: tuple[int, ...]) -> ProxyRelease:
        """The proxy of the AppAPI shipped with this Nextcloud server version."""
        fixed = {32: (32, 0, 10), 33: (33, 0, 4)}
        first = {32: (32, 0, 9), 33: (33, 0, 3)}

        def since(table: dict[int, tuple[int, ...]]) -> bool:
            major = version[0]
            return major > 33 or (major in table and version >= table[major])

        return cls(since(fixed), since(fixed), since(first))

    def pattern(self, url: str) -> re.Pattern[str]:
        if self.first_match_decides:
            return re.compile("^(?:" + url + ")", re.IGNORECASE)
        return re.compile(url, re.IGNORECASE)

    def matches(self, url: str, other: str) -> bool:
        pattern = self.pattern(url)
        if self.slash_prefixed_match and pattern.search("/" + other):
            return True
        return pattern.search(other) is not None


@dataclass
class Throttler:
    """Nextcloud's brute-force throttler (OC\\Security\\Bruteforce\\Throttler), in memory. With
    ``testing`` (``auth.bruteforce.protection.testing``) it computes delays without sleeping."""

    testing: bool = False
    attempts: list[tuple[float, str, str]] = field(default_factory=list)  # (time, ip, action)
    slept_ms: list[int] = field(default_factory=list)

    def count(self, ip: str, action: str, hours: float = 12) -> int:
        since = time.time() - 3600 * hours
        return sum(1 for at, who, what in self.attempts if who == ip and what == action and at > since)

    def delay_ms(self, ip: str, action: str) -> int:
        attempts = self.count(ip, action)
        if attempts == 0:
            return 0
        if attempts > MAX_ATTEMPTS:
            return MAX_DELAY_MS
        return min(MAX_DELAY_MS, math.ceil(0.1 * 2**attempts * 1000))

    async def sleep_or_refuse(self, ip: str, action: str) -> int | None:
        """sleepDelayOrThrowOnMax: the delay slept, or None (429) at the maximum."""
        delay = self.delay_ms(ip, action)
        if delay == MAX_DELAY_MS and self.count(ip, action, 0.5) > MAX_ATTEMPTS:
            return None
        self.slept_ms.append(delay)
        if not self.testing:
            await asyncio.sleep(delay / 1000)
        return delay

    def register(self, ip: str, action: str) -> None:
        self.attempts.append((time.time(), ip, action))

    def reset(self, ip: str, action: str) -> None:
        self.attempts = [a for a in self.attempts if (a[1], a[2]) != (ip, action)]


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, as curl applies it to the path it sends."""
    output: list[str] = []
    while path:
        if path.startswith("../"):
            path = path[3:]
        elif path.startswith("./"):
            path = path[2:]
        elif path.startswith("/./"):
            path = path[2:]
        elif path == "/.":
            path = "/"
        elif path.startswith("/../"):
            path = path[3:]
            if output:
                output.pop()
        elif path == "/..":
            path = "/"
            if output:
                output.pop()
        elif path in (".", ".."):
            path = ""
        else:
            cut = path.find("/", 1)
            cut = len(path) if cut == -1 else cut
            output.append(path[:cut])
            path = path[cut:]
    return "".join(output)


def forwarded_target(other: str, get: list[tuple[str, str]]) -> str:
    """The path and query AppAPI's HTTP client sends for ``'/' . other`` and ``$_GET``."""
    url = "/" + other
    if get:
        url += "?" + urlencode(get)  # http_build_query, RFC 1738 spaces
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    path, rest = url[:cut], url[cut:]
    query = rest[1:].partition("#")[0] if rest.startswith("?") else ""

    def encode(text: str, keeps: re.Pattern[bytes]) -> str:
        return keeps.sub(lambda m: b"%%%02X" % m.group()[0], text.encode("latin-1")).decode("ascii")

    target = remove_dot_segments(encode(path, PATH_KEEPS)) or "/"
    return target + ("?" + encode(query, QUERY_KEEPS) if query else "")


def php_get(query: bytes) -> list[tuple[str, str]]:
    """``$_GET`` as pairs: PHP turns dots and spaces of a parameter's name into ``_``."""
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return [(re.sub(r"[. ]", "_", key), value) for key, value in pairs]


class AppApiProxy:
    """The proxy of one stand-in Nextcloud. Set ``exapp_url`` to where the ExApp listens;
    ``routes`` defaults to the repository's info.xml (AppAPI reads it at registration)."""

    def __init__(self, state: NextcloudState, routes: list[ProxyRoute] | None = None,
                 bruteforce_testing: bool = False) -> None:
        self.state = state
        self.exapp_url = ""
        self.routes = routes_from_info_xml() if routes is None else routes
        self.throttler = Throttler(testing=bruteforce_testing)
        self.sessions: dict[str, str] = {}  # session cookie value -> user id
        self.forwarded: list[tuple[str, str, str]] = []  # (method, target, user) sent to the ExApp
        self._lock = threading.Lock()

    @property
    def release(self) -> ProxyRelease:
        return ProxyRelease.of(self.state.nextcloud_version)

    def sign_in(self, user_id: str) -> dict[str, str]:
        """The cookies of a browser where user_id signed in."""
        assert user_id in self.state.users, user_id
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.sessions[token] = user_id
        return {SESSION_COOKIE: token}

    def routes_for_server(self) -> list[Route]:
        return [Route(PREFIX + "{rest:path}", self.handle, methods=["GET", "POST", "PUT", "DELETE"])]

    def _route(self, other: str, method: str, user: str) -> ProxyRoute | None:
        """passesExAppProxyRoutesChecks of this release."""
        release = self.release
        for route in self.routes:
            if not (release.matches(route.url, other) and method.lower() in route.verb.lower()):
                continue
            if self._may(route.access_level, user):
                return route
            if release.first_match_decides:
                return None
        return None

    def _may(self, level: str, user: str) -> bool:
        if level == "PUBLIC":
            return True
        if level == "USER":
            return bool(user)
        if level == "ADMIN":
            return bool(user) and self.state.users[user].admin
        return False

    async def handle(self, request: Request) -> Response:
        decoded = unquote_to_bytes(request.scope["raw_path"]).decode("latin-1")
        app_id, _, other = decoded[len(PREFIX):].partition("/")
        if request.method != "GET" and not other:
            return not_found()
        user = self.sessions.get(request.cookies.get(SESSION_COOKIE, ""), "")
        if self.release.refuses_parent_segments and PARENT_SEGMENT.search(other):
            return not_found()
        if app_id != self.state.app.app_id or not self.state.app.enabled:
            return not_found()
        route = self._route(other, request.method, user)
        if route is None:
            return not_found()
        ip = request.client.host if request.client else ""
        delay = 0
        if route.bruteforce_protection:
            slept = await self.throttler.sleep_or_refuse(ip, THROTTLE_ACTION)
            if slept is None:
                return HTMLResponse("<h2>Too many requests</h2>", status_code=429)
            delay = slept
        target = forwarded_target(other, php_get(request.scope["query_string"]))
        exclude = {"x-origin-ip", "content-length", "authorization-app-api", *route.headers_to_exclude}
        headers = [(k, v) for k, v in request.headers.items() if k not in exclude and k not in HOP_BY_HOP]
        headers.append(("x-origin-ip", ip))
        headers += list(headers_to_exapp(self.state, user).items())
        if not any(k.lower() == "accept-language" for k, _ in headers):
            headers.append(("Accept-Language", "en"))
        with self._lock:
            self.forwarded.append((request.method, target, user))
        url = httpx.URL(self.exapp_url).copy_with(raw_path=target.encode("ascii"))
        try:
            async with httpx.AsyncClient(timeout=120) as client:
                answer = await client.request(request.method, url, headers=headers,
                                              content=await request.body())
        except httpx.HTTPError:
            return Response(status_code=500)
        if route.bruteforce_protection:
            if delay > 0 and 200 <= answer.status_code < 300:
                self.throttler.reset(ip, THROTTLE_ACTION)
            elif answer.status_code in route.bruteforce_protection:
                self.throttler.register(ip, THROTTLE_ACTION)
        return proxy_response(other, answer)


def proxy_response(other: str, answer: httpx.Response) -> Response:
    """createProxyResponse: the ExApp's answer without AppAPI's headers, a type guessed from
    the path when it sent none, and an hour of caching for what is neither HTML nor JSON."""
    drop = {*APPAPI_HEADERS, "transfer-encoding", "content-length", "content-encoding"}
    headers = {k: v for k, v in answer.headers.items() if k.lower() not in drop}
    is_html = Path(other).suffix == ".html"
    content_type = answer.headers.get("content-type", "")
    if not content_type:
        guessed = "application/wasm" if other.endswith(".wasm") else mimetypes.guess_type(other)[0]
        if guessed and guessed != "application/octet-stream":
            headers["Content-Type"] = guessed
    if (not is_html and "cache-control" not in answer.headers
            and content_type not in ("application/json", "application/x-tar")):
        headers["Cache-Control"] = "private, max-age=3600, must-revalidate"
        headers["Pragma"] = "private"
    return Response(answer.content, status_code=answer.status_code, headers=headers)


def not_found() -> Response:
    """The AppFramework's NotFoundResponse (a page, status 404)."""
    return HTMLResponse("<h2>Page not found</h2>", status_code=404)
