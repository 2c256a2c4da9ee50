"""The image's health check: exit 0 when the ExApp answers ``/heartbeat`` where it listens.

Under HaRP (``HP_SHARED_KEY`` set) that is its unix socket (``HP_EXAPP_SOCK``, default
``/tmp/exapp.sock``), and the FRP client started by ``start.sh`` must be running too;
with Docker Socket Proxy it is ``APP_HOST:APP_PORT``. Standard library only.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
from pathlib import Path

TIMEOUT_SECONDS = 4
ANY_ADDRESS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket."""

    def __init__(self, path: str):
        super().__init__("localhost", timeout=TIMEOUT_SECONDS)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def frpc_running() -> bool:
    """Whether the frpc that start.sh recorded runs (not gone, not a zombie)."""
    config = Path(os.environ.get("FRPC_CONFIG", "/tmp/frpc.toml"))
    try:
        pid = int(config.with_suffix(".pid").read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    name, _, rest = stat.partition(" (")[2].rpartition(") ")
    return name == "frpc" and not rest.startswith(("Z", "X"))


def heartbeat_connection() -> http.client.HTTPConnection:
    if os.environ.get("HP_SHARED_KEY"):
        return UnixConnection(os.environ.get("HP_EXAPP_SOCK", "/tmp/exapp.sock"))
    host = os.environ.get("APP_HOST", "127.0.0.1")
    port = int(os.environ.get("APP_PORT", "23000"))
    return http.client.HTTPConnection(ANY_ADDRESS.get(host, host), port, timeout=TIMEOUT_SECONDS)


def main() -> int:
    if os.environ.get("HP_SHARED_KEY") and not frpc_running():
        print("unhealthy: frpc is not running (HaRP cannot reach the ExApp)")
        return 1
    connection = heartbeat_connection()
    try:
        connection.request("GET", "/heartbeat")
        status = connection.getresponse().status
    except OSError as error:
        print(f"unhealthy: no answer on /heartbeat: {error}")
        return 1
    finally:
        connection.close()
    if status != 200:
        print(f"unhealthy: /heartbeat answered {status}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
