"""The image's entry script and health check, under HaRP and under Docker Socket Proxy.

docker/start.sh is run as the image runs it, with a stand-in ``frpc`` on PATH that records
how it was started and with which config; the ExApp is started through it as AppAPI starts
it under HaRP (its variables, a unix socket) and called over that socket with AppAPI's
signed headers; docker/healthcheck.py is run against it in both modes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import REPO, SHARED_MODELS
from nextcloud_standin.auth import headers_to_exapp

START = REPO / "docker" / "start.sh"
HEALTHCHECK = REPO / "docker" / "healthcheck.py"
KEY = 'a "shared" key\\with odd characters'
WAIT_SECONDS = 60

# A stand-in for frpc: records its argv, parent, own pid and config, then stays up (the real
# one keeps its tunnel open) until killed. Its process is named frpc, as the real one.
FAKE_FRPC = """#!PYTHON
import json, os, sys, time
config = sys.argv[sys.argv.index("-c") + 1]
record = {"argv": sys.argv[1:], "pid": os.getpid(), "ppid": os.getppid(),
          "config": open(config).read()}
with open(os.environ["FRPC_RECORD"] + ".tmp", "w") as out:
    json.dump(record, out)
os.rename(os.environ["FRPC_RECORD"] + ".tmp", os.environ["FRPC_RECORD"])
if os.environ.get("FRPC_STAYS"):
    time.sleep(600)
"""


@pytest.fixture
def place() -> Iterator[Path]:
    """A short folder (a unix socket's path has at most 107 bytes) holding the stand-in frpc."""
    with tempfile.TemporaryDirectory(prefix="harp-", dir="/tmp") as folder:
        root = Path(folder)
        (root / "bin").mkdir()
        frpc = root / "bin" / "frpc"
        frpc.write_text(FAKE_FRPC.replace("PYTHON", sys.executable, 1))
        frpc.chmod(0o755)
        yield root


def harp_env(place: Path, **extra: str) -> dict[str, str]:
    """What AppAPI gives the container under HaRP, with the test's paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HP_", "RECOGNIZE_", "FRPC_"))}
    env.update(
        PATH=f"{place / 'bin'}:{env['PATH']}",
        APP_ID="recognize_ex",
        APP_PORT="23000",
        HP_SHARED_KEY=KEY,
        HP_FRP_ADDRESS="appapi-harp",
        HP_FRP_PORT="8782",
        HP_EXAPP_SOCK=str(place / "exapp.sock"),
        FRPC_CONFIG=str(place / "frpc.toml"),
        FRPC_CERTS_DIR=str(place / "certs"),
        FRPC_RECORD=str(place / "frpc.json"),
    )
    env.update(extra)
    return env


def wait_for(condition, what: str, seconds: float = WAIT_SECONDS):
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.05)
    return result


def frpc_record(place: Path) -> dict:
    record = place / "frpc.json"
    wait_for(record.exists, "frpc started")
    return json.loads(record.read_text())


def start(env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(START), *command], env=env, capture_output=True, text=True,
                          timeout=WAIT_SECONDS, check=False)


def expected_config(place: Path, tls: dict) -> dict:
    return {
        "serverAddr": "appapi-harp",
        "serverPort": 8782,
        "loginFailExit": False,
        "transport": {"tls": tls},
        "metadatas": {"token": KEY},
        "proxies": [{
            "remotePort": 23000,
            "type": "tcp",
            "name": "recognize_ex",
            "plugin": {"type": "unix_domain_socket", "unixPath": str(place / "exapp.sock")},
        }],
    }  # fmt: skip


# The app of the first test: its process ends once frpc has said who started it.
WAIT_FOR_FRPC = """import os, pathlib, time
deadline = time.monotonic() + 60
while not pathlib.Path(os.environ["FRPC_RECORD"]).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def test_under_harp_frpc_gets_its_config_and_starts_before_the_exapp(place):
    app = [sys.executable, "-c", WAIT_FOR_FRPC + "print('app', os.getpid())"]
    result = start(harp_env(place), *app)
    assert result.returncode == 0, result.stderr
    app_pid = int(result.stdout.split("app ")[1])
    record = frpc_record(place)
    assert record["argv"] == ["-c", str(place / "frpc.toml")]
    assert record["ppid"] == app_pid  # started by the script, which then became the ExApp
    config = tomllib.loads(record["config"])
    assert config == expected_config(place, {"enable": False})
    assert stat.S_IMODE((place / "frpc.toml").stat().st_mode) == 0o600  # it holds the key
    assert int((place / "frpc.pid").read_text()) == record["pid"]


def test_with_harps_certificates_frpc_speaks_tls(place):
    """HaRP starts a new container once to copy its FRP certificates into /certs/frp, stops
    it, and starts it again: the second start speaks TLS."""
    assert start(harp_env(place), "true").returncode == 0
    assert tomllib.loads(frpc_record(place)["config"])["transport"]["tls"] == {"enable": False}
    (place / "frpc.json").unlink()
    (place / "certs").mkdir()
    result = start(harp_env(place), "true")
    assert result.returncode == 0, result.stderr
    certs = place / "certs"
    config = tomllib.loads(frpc_record(place)["config"])
    assert config == expected_config(place, {
        "enable": True,
        "certFile": str(certs / "client.crt"),
        "keyFile": str(certs / "client.key"),
        "trustedCaFile": str(certs / "ca.crt"),
        "serverName": "harp.nc",
    })  # fmt: skip


def test_the_socket_defaults_to_nc_py_apis(place):
    env = harp_env(place)
    del env["HP_EXAPP_SOCK"]
    assert start(env, "true").returncode == 0
    [proxy] = tomllib.loads(frpc_record(place)["config"])["proxies"]
    assert proxy["plugin"]["unixPath"] == "/tmp/exapp.sock"


def test_with_docker_socket_proxy_no_frpc_runs(place):
    env = harp_env(place)
    for name in ("HP_SHARED_KEY", "HP_FRP_ADDRESS", "HP_FRP_PORT", "HP_EXAPP_SOCK"):
        del env[name]
    result = start(env, sys.executable, "-c", "print('the exapp ran')")
    assert result.returncode == 0 and result.stdout.strip() == "the exapp ran", result.stderr
    assert not (place / "frpc.toml").exists() and not (place / "frpc.json").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"HP_FRP_PORT": "87 82"}, "HP_FRP_PORT must be a port number"),
    ({"APP_PORT": ""}, "APP_PORT must be a port number"),
    ({"HP_FRP_ADDRESS": ""}, "HP_FRP_ADDRESS is not set"),
    ({"PATH": "/usr/bin:/bin"}, "HaRP needs frpc, which this image lacks"),
])  # fmt: skip
def test_bad_harp_variables_stop_the_start_with_a_clear_error(place, change, message):
    result = start(harp_env(place, **change), "true")
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert not (place / "frpc.json").exists()


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True,
                          text=True, timeout=WAIT_SECONDS, check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exapp_env(nextcloud, port: int, tmp_path: Path) -> dict[str, str]:
    """AppAPI's variables for an ExApp on this port, its state in tmp_path, models from the mirror."""
    return {**nextcloud.app_env(port), "RECOGNIZE_DATA_DIR": str(tmp_path / "data"),
            "RECOGNIZE_MODEL_MIRROR": str(SHARED_MODELS)}


@contextmanager
def exapp_through_start_script(env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """The ExApp started as the image starts it (start.sh, then python -m ex_app.main), in a
    process group of its own, which is ended afterwards (frpc included)."""
    process = subprocess.Popen([str(START), sys.executable, "-m", "ex_app.main"], env=env,
                               cwd=REPO, start_new_session=True)
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(WAIT_SECONDS)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # a stand-in frpc left behind
            except ProcessLookupError:
                pass


def test_under_harp_the_exapp_answers_appapi_on_its_socket_and_is_healthy(
    nextcloud, place, tmp_path
):
    nextcloud.state.app.enabled = False  # installed, not enabled yet: no work starts
    port = _free_port()
    env = harp_env(place, **exapp_env(nextcloud, port, tmp_path), FRPC_STAYS="1")
    sock = place / "exapp.sock"
    assert healthcheck(env).returncode == 1  # nothing runs yet
    with exapp_through_start_script(env) as exapp:
        record = frpc_record(place)
        assert record["ppid"] == exapp.pid
        wait_for(lambda: healthcheck(env).returncode == 0 or exapp.poll() is not None,
                 "the health check passes")
        assert exapp.poll() is None, "the ExApp ended"
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)),
                          base_url="http://exapp", timeout=30) as client:
            heartbeat = client.get("/heartbeat")
            assert heartbeat.status_code == 200 and heartbeat.json() == {"status": "ok"}
            progress = client.get("/api/progress", headers=headers_to_exapp(nextcloud.state, "admin"))
            assert progress.status_code == 200, progress.text
            assert progress.json()["cycles"] == 0
            assert client.get("/api/progress").status_code == 401
            forged = headers_to_exapp(nextcloud.state, "admin", secret="not-the-secret")
            assert client.get("/api/progress", headers=forged).status_code == 401
        with pytest.raises(httpx.ConnectError):  # HaRP reaches it through frpc only
            httpx.get(f"http://127.0.0.1:{port}/heartbeat", timeout=5)
        assert tomllib.loads(record["config"])["proxies"][0]["remotePort"] == port

        os.kill(record["pid"], signal.SIGKILL)  # frpc gone: HaRP cannot reach the ExApp
        unhealthy = wait_for(lambda: (r := healthcheck(env)).returncode == 1 and r,
                             "the health check fails")
        assert "frpc is not running" in unhealthy.stdout
    assert healthcheck(env).returncode == 1


def test_with_docker_socket_proxy_the_health_check_asks_the_tcp_port(nextcloud, place, tmp_path):
    nextcloud.state.app.enabled = False
    port = _free_port()
    env = harp_env(place, **{**exapp_env(nextcloud, port, tmp_path), "APP_HOST": "0.0.0.0"})
    for name in ("HP_SHARED_KEY", "HP_FRP_ADDRESS", "HP_FRP_PORT"):
        del env[name]
    unhealthy = healthcheck(env)
    assert unhealthy.returncode == 1 and "no answer on /heartbeat" in unhealthy.stdout
    with exapp_through_start_script(env) as exapp:
        wait_for(lambda: healthcheck(env).returncode == 0 or exapp.poll() is not None,
                 "the health check passes")
        assert exapp.poll() is None, "the ExApp ended"
        assert httpx.get(f"http://127.0.0.1:{port}/heartbeat").json() == {"status": "ok"}
        assert not (place / "exapp.sock").exists() and not (place / "frpc.json").exists()
    assert healthcheck(env).returncode == 1
