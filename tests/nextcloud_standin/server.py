"""The stand-in Nextcloud as one ASGI app, served by uvicorn from a background thread."""

from __future__ import annotations

import base64
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from .ocs import OcsApi
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
        status = self.state.take_fault()
        if status is None:
            await self.app(scope, receive, send)
            return
        body = b"Service Unavailable" if status == 503 else b"Error"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _claimed_user(headers: dict[str, str]) -> str:
    try:
        return base64.b64decode(headers.get("authorization-app-api", "")).decode().partition(":")[0]
    except ValueError:
        return ""


def build_app(state: NextcloudState) -> ASGIApp:
    """The Starlette app serving OCS and WebDAV over ``state``."""
    routes = OcsApi(state).routes() + FilesDav(state).routes() + SystemTagsDav(state).routes()
    return FaultsAndLog(Starlette(routes=routes), state)


class BackgroundServer:
    """Serves an ASGI app with uvicorn on 127.0.0.1, at a free port, from a daemon thread until ``stop``."""

    def __init__(self, app: ASGIApp, lifespan: str = "off") -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan=lifespan)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"asgi-{self.port}", daemon=True)

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
