"""The ``nextcloud`` pytest fixture: a running stand-in, its state, and what an ExApp needs to reach it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .auth import headers_to_exapp, new_secret
from .proxy import AppApiProxy
from .releases import DEFAULT, MAINTAINED, RELEASES
from .server import BackgroundServer, build_app
from .state import NextcloudState, Node
from .webhook_events import WebhookCall, node_event_calls

APP_ID = "recognize_ex"  # appinfo/info.xml
APP_VERSION = "0.1.0"


@dataclass
class Nextcloud:
    """A running stand-in: ``url``, ``state`` to arrange and inspect, the ExApp's credentials
    and AppAPI's ``proxy`` (set its ``exapp_url`` to use it)."""

    url: str
    state: NextcloudState
    storage: Path
    proxy: AppApiProxy

    @property
    def app_secret(self) -> str:
        return self.state.app.secret

    def app_env(self, app_port: int = 23000) -> dict[str, str]:
        """The environment AppAPI gives a deployed ExApp."""
        app = self.state.app
        return {
            "NEXTCLOUD_URL": self.url,
            "APP_ID": app.app_id,
            "APP_SECRET": app.secret,
            "APP_VERSION": app.version,
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(app_port),
            "AA_VERSION": self.state.aa_version,
            "APP_PERSISTENT_STORAGE": str(self.storage),
            "APP_DISPLAY_NAME": "Recognize",
            "COMPUTE_DEVICE": "CPU",
        }

    def headers_to_exapp(self, user_id: str = "", secret: str | None = None) -> dict[str, str]:
        """Headers of a request AppAPI's proxy forwards to the ExApp on behalf of ``user_id``."""
        return headers_to_exapp(self.state, user_id, secret)

    def node_event_calls(self, event_class: str, node: Node, acting_user: str = "",
                         target: Node | None = None) -> list[WebhookCall]:
        """The webhook calls the ExApp's registered listeners get for this file event (send them with ``send``)."""
        return node_event_calls(self.state, event_class, node, acting_user, target)


@pytest.fixture
def nextcloud(tmp_path: Path) -> Iterator[Nextcloud]:
    """A fresh stand-in of the oldest maintained Nextcloud (releases.DEFAULT) with an admin ``admin``
    and users ``alice`` and ``bob`` (each user's password is their id)."""
    yield from serve_release(tmp_path, DEFAULT)


@pytest.fixture(params=MAINTAINED, ids=[f"nc{major}" for major in MAINTAINED])
def nextcloud_each(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Nextcloud]:
    """The stand-in once per maintained release (33, 34, 35), for what differs between them."""
    yield from serve_release(tmp_path, request.param)


@pytest.fixture
def nextcloud29(tmp_path: Path) -> Iterator[Nextcloud]:
    """Nextcloud 29 with AppAPI 3.2.3 as a real one answered: no webhook_listeners app. Out of
    support; kept for the periodic crawl that stands in for webhooks there."""
    yield from serve_release(tmp_path, 29)


def serve_release(tmp_path: Path, major: int) -> Iterator[Nextcloud]:
    """A running stand-in answering as that release of releases.RELEASES (a generator for fixtures)."""
    release = RELEASES[major]
    yield from _serve(tmp_path, NextcloudState(APP_ID, APP_VERSION, new_secret(), release.app_api, release.server))


def _serve(tmp_path: Path, state: NextcloudState) -> Iterator[Nextcloud]:
    state.add_user("admin", "Administrator", admin=True)
    state.add_user("alice", "Alice")
    state.add_user("bob", "Bob")
    proxy = AppApiProxy(state)
    server = BackgroundServer(build_app(state, proxy))
    server.start()
    storage = tmp_path / "app_storage"
    storage.mkdir()
    try:
        yield Nextcloud(server.url, state, storage, proxy)
    finally:
        server.stop()
