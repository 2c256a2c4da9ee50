"""Nothing leaves the server: a full Nextcloud scan by the ExApp, run as AppAPI runs it (its
own process, with its worker processes), contacts the Nextcloud address alone; models come
from the local mirror.

Every outgoing connection attempt and name lookup of these processes is recorded (and any
to another address refused) by a ``sitecustomize`` module put on its path: the socket layer
itself, whatever library opens the connection. FFmpeg, the one native program it starts,
reads local files only (see ``ex_app.media.ffmpeg_io``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import httpx
from conftest import REPO, SHARED_DATA, SHARED_MODELS
from nextcloud_standin.auth import headers_to_exapp

SITECUSTOMIZE = '''
import json, os, socket
_log = open(os.environ["PRIVACY_LOG"], "a", buffering=1)
_allowed = set(json.loads(os.environ["PRIVACY_ALLOWED"]))
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

def _check(kind, address):
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        _log.write(json.dumps([kind, host, port, os.getpid()]) + "\\n")
        if f"{host}:{port}" not in _allowed:
            raise PermissionError(f"privacy test: connection to {host}:{port} refused")
    else:
        _log.write(json.dumps([kind, str(address), None, os.getpid()]) + "\\n")  # Unix socket

def connect(self, address):
    _check("connect", address)
    return _connect(self, address)

def connect_ex(self, address):
    _check("connect", address)
    return _connect_ex(self, address)

def getaddrinfo(host, *args, **kwargs):
    name = host if isinstance(host, str) else repr(host)
    _log.write(json.dumps(["lookup", name, None, os.getpid()]) + "\\n")
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''

MEDIA = {
    "alice": {
        "Photos/gore.jpg": SHARED_DATA / "faces" / "Al_Gore" / "lfw_Al_Gore_0004.jpg",
        "Photos/cat.jpg": SHARED_DATA / "images" / "n02123394_Persian_cat.JPEG",
        "Music/blues.mp3": SHARED_DATA / "music" / "TRWJAZW128F42760DD_test.mp3",
    },
    "bob": {"Photos/group.jpg": SHARED_DATA / "faces" / "group" / "dlib_2008_001322.jpg"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_full_scan_contacts_nextcloud_alone(nextcloud, tmp_path):
    state = nextcloud.state
    for user, files in MEDIA.items():
        for path, source in files.items():
            state.put_file(user, path, source.read_bytes())
    nc = urlsplit(nextcloud.url)
    allowed = [f"{nc.hostname}:{nc.port}"]
    log = tmp_path / "connections.jsonl"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOGNIZE_", "NPA_"))}
    env.update(nextcloud.app_env(port))
    env.update(PYTHONPATH=str(tmp_path / "site"), PRIVACY_LOG=str(log),
               PRIVACY_ALLOWED=json.dumps(allowed), RECOGNIZE_MODEL_MIRROR=str(SHARED_MODELS),
               RECOGNIZE_VIDEO__ENABLED="0", no_proxy="*")
    state.app.enabled, state.app.initializing = False, True
    exapp = subprocess.Popen([sys.executable, "-m", "ex_app.main"], env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def call(method: str, path: str, user: str = "admin") -> httpx.Response:
        return httpx.request(method, url + path, headers=headers_to_exapp(state, user), timeout=60)

    try:
        deadline = time.monotonic() + 60
        while True:
            assert exapp.poll() is None and time.monotonic() < deadline, "the ExApp did not start"
            try:
                if httpx.get(url + "/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert call("POST", "/init", "").status_code == 200  # AppAPI: fetch the models
        deadline = time.monotonic() + 300
        while state.app.progress != 100:
            assert not state.app.error and time.monotonic() < deadline, state.app.progress_history
            time.sleep(0.2)
        state.app.initializing, state.app.enabled = False, True
        assert call("PUT", "/enabled?enabled=1").json() == {"error": ""}
        deadline = time.monotonic() + 300
        while True:  # the crawl found every file and every task is settled
            progress = call("GET", "/api/progress").json()
            analyzers = progress["analyzers"]
            if progress["cycles"] >= 1 and analyzers and all(
                    a["pending"] == 0 for a in analyzers):
                break
            assert time.monotonic() < deadline, progress
            time.sleep(0.5)
        done = {a["analyzer"]: a["done"] for a in analyzers}
        assert done.get("faces", 0) >= 3 and done.get("music", 0) >= 1, analyzers
        gore = state.own_node("alice", "Photos/gore.jpg")
        assert "People" in state.tag_names_of(gore.fileid)  # results reached Nextcloud
    finally:
        exapp.send_signal(signal.SIGTERM)
        try:
            exapp.wait(timeout=30)
        except subprocess.TimeoutExpired:
            exapp.kill()
            exapp.wait()
    attempts = [json.loads(line) for line in log.read_text().splitlines()]
    connects = {(host, port) for kind, host, port, _pid in attempts if kind == "connect"}
    lookups = {host for kind, host, _port, _pid in attempts if kind == "lookup"}
    processes = {pid for *_, pid in attempts}
    assert connects, "nothing was recorded: the socket layer was not watched"
    assert len(processes) >= 2, processes  # the ExApp and its worker processes alike
    assert {f"{host}:{port}" for host, port in connects} == set(allowed), connects
    assert lookups <= {nc.hostname, "localhost"}, lookups
