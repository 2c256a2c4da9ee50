"""The stand-in Nextcloud as one ASGI app, served by uvicorn from a background thread."""

from __future__ import annotations

import base64
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .carddav import CardDav
from .davxml import DavError
from .declarative import DeclarativeSettingsApi
from .ocs import (
    NOT_FOUND_MESSAGE,
    RESPOND_NOT_FOUND,
    OcsApi,
    ocs_response,
    render_envelope,
)
from .proxy import AppApiProxy
from .state import NextcloudState
from .systemtags import SystemTagsDav
from .webdav import FilesDav


class FaultsAndLog:
    """Records each request in the state, and answers with an injected fault status while one is active."""

    def __init__(self, app: ASGIApp, state: NextcloudState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        with self.state.lock:
            self.state.requests.append((scope["method"], scope["path"], _claimed_user(headers)))
            self.state.request_headers.append(headers)
        status = self.state.take_fault(scope["path"])
        if status is None:
            await self.app(scope, receive, send)
            return
        await fault_response(Request(scope), status)(scope, receive, send)


def fault_response(request: Request, status: int) -> Response:
    """503 as Nextcloud 29 answers in maintenance mode (ocs/v*.php's envelope without paging fields,
    or the DAV app's ServerMaintenanceMode error); any other status as a failing proxy in front of it would."""
    path = request.url.path
    if status != 503:
        return PlainTextResponse(f"Error {status}", status)
    if path.startswith("/ocs/"):
        meta = {"status": "failure", "statuscode": 503, "message": "Service unavailable"}
        response = render_envelope(request, {"ocs": {"meta": meta, "data": []}}, 503)
        response.headers["X-Nextcloud-Maintenance-Mode"] = "1"
        return response
    if path.startswith("/remote.php/"):
        return DavError(503, "OCA\\DAV\\Exception\\ServerMaintenanceMode", "System is in maintenance mode.").response()
    return PlainTextResponse("Service Unavailable", 503, headers={"X-Nextcloud-Maintenance-Mode": "1"})


async def unknown_ocs_route(request: Request) -> Response:
    """What ocs/v1.php answers for a route no app defines."""
    return ocs_response(request, None, RESPOND_NOT_FOUND, NOT_FOUND_MESSAGE)


def _claimed_user(headers: dict[str, str]) -> str:
    try:
        return base64.b64decode(headers.get("authorization-app-api", "")).decode().partition(":")[0]
    except ValueError:
        return ""


def build_app(state: NextcloudState, proxy: AppApiProxy | None = None) -> ASGIApp:
    """The Starlette app serving OCS and WebDAV over ``state``, and AppAPI's proxy when given."""
    routes = OcsApi(state).routes() + FilesDav(state).routes() + SystemTagsDav(state).routes()
    routes += DeclarativeSettingsApi(state).routes() + CardDav(state).routes()
    routes += proxy.routes_for_server() if proxy else []
    routes += [Route(f"/ocs/v{v}.php/{{rest:path}}", unknown_ocs_route, methods=["GET", "POST", "PUT", "DELETE"])
               for v in (1, 2)]
    return FaultsAndLog(Starlette(routes=routes), state)


class BackgroundServer:
    """Serves an ASGI app with uvicorn on 127.0.0.1, at a free port, from a daemon thread until ``stop``."""

    def __init__(self, app: ASGIApp, lifespan: str = "off") -> None:
        self._socket = socket.socket()
        # Accepted connections inherit it: without, each answer waits ~40 ms for a delayed ACK.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind(("127.0.0.1", 0))  # bound now, so no other server can take the port meanwhile
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan=lifespan)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=f"asgi-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
