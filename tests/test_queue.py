"""The work queue and its workers, as real `recognize worker` processes on real photos.

Only the objects analyzer runs (the cheapest); backlogs are small; leases, retry delays
and idle waits are shortened through the settings so that recovery shows within seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import REPO, SHARED_MODELS

from ex_app.store import schema

FAST = {
    "RECOGNIZE_FACES__ENABLED": "0",
    "RECOGNIZE_PLACES__ENABLED": "0",
    "RECOGNIZE_MUSIC__ENABLED": "0",
    "RECOGNIZE_VIDEO__ENABLED": "0",
    "RECOGNIZE_QUEUE__IDLE_POLL_SECONDS": "0.3",
    "RECOGNIZE_QUEUE__REQUEUE_INTERVAL_SECONDS": "0.5",
    "RECOGNIZE_QUEUE__BATCH_SIZE": "4",
    "RECOGNIZE_WORKER__CPU_BUDGET": "2",
}


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOGNIZE_")}
    env.pop("APP_PERSISTENT_STORAGE", None)
    return env | FAST | settings


def command(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ex_app", "--data-dir", str(data_dir),
            "--model-mirror", str(SHARED_MODELS), *args]


def cli(data_dir: Path, *args: str, **settings: str) -> str:
    done = subprocess.run(command(data_dir, *args), capture_output=True, text=True, check=False,
                          env=environment(**settings), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def engine_for(data_dir: Path, **settings: str):
    """An engine in this process on the same settings as the workers (for quick set-ups)."""
    from ex_app.config import Settings
    from ex_app.engine import Engine

    values: dict = {}
    for name, value in (FAST | settings).items():
        section, _, field = name.removeprefix("RECOGNIZE_").lower().partition("__")
        if field:
            values.setdefault(section, {})[field] = value
        else:
            values[section] = value
    return Engine(Settings(data_dir=data_dir, model_mirror=SHARED_MODELS, **values))


def start_worker(data_dir: Path, *args: str, **settings: str) -> subprocess.Popen:
    return subprocess.Popen(command(data_dir, "worker", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment(**settings), cwd=REPO)


def finish(worker: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    """Wait for a worker; returns how many files it analyzed and its log."""
    out, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, err
    return int(re.search(r"(\d+) files analyzed by worker", out).group(1)), err


def wait_for_log(worker: subprocess.Popen, text: str, timeout: float = 120) -> str:
    """Read a worker's log until a line holds ``text``; returns what was read (finish()
    gets the rest)."""
    lines: list[str] = []

    def read() -> None:
        for line in worker.stderr:
            lines.append(line)
            if text in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    log = "".join(lines)
    assert text in log, log
    return log


def photo_tree(folder: Path, shared_data: Path, count: int, start: int = 0) -> Path:
    folder.mkdir(parents=True)
    for photo in sorted((shared_data / "images").iterdir())[start : start + count]:
        shutil.copy(photo, folder / photo.name)
    return folder


def tasks(data_dir: Path, database_url: str | None = None) -> list[dict]:
    """The tasks with their files' paths: from the data folder's SQLite, or from a URL."""
    query = "SELECT tasks.*, files.path FROM tasks JOIN files ON files.id = tasks.file_id"
    if database_url:
        from sqlalchemy import create_engine, text

        engine = create_engine(database_url)
        with engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(text(query))]
        engine.dispose()
        return rows
    with sqlite3.connect(data_dir / "recognize.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(query)]


def wait_until(condition, timeout: float = 120, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A redis-server of its own on a free port (Debian's package)."""
    server = shutil.which("redis-server")
    assert server, "redis-server is missing: apt-get install redis-server"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    wait_until(lambda: _pings(client), timeout=20)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


def _pings(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A PostgreSQL server of its own (Debian's), on a Unix socket; yields a database maker."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert found, "PostgreSQL is missing: apt-get install postgresql"
    bin_dir = found[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="recognize-pg-"))  # the server's user must reach it
    as_owner = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    data = str(folder / "data")

    def run(*args: str) -> None:
        subprocess.run([*as_owner, *args], check=True, capture_output=True)

    run(str(bin_dir / "initdb"), "-D", data, "-A", "trust", "-U", "recognize")
    run(str(bin_dir / "pg_ctl"), "-D", data, "-l", str(folder / "log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=''", "start")
    names = iter(range(1000))

    def database() -> str:
        name = f"recognize{next(names)}"
        run(str(bin_dir / "createdb"), "-h", str(folder), "-p", port, "-U", "recognize", name)
        return f"postgresql+psycopg://recognize@/{name}?host={folder}&port={port}"

    yield database
    run(str(bin_dir / "pg_ctl"), "-D", data, "-m", "fast", "stop")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("backend", ["sqlite", "redis", "redis+postgresql"])
def test_two_workers_share_a_backlog_and_analyze_each_file_once(
    backend, tmp_path, shared_data, request
):
    """The default (one machine), and what workers on several machines share: Redis for the
    queue, PostgreSQL for the store."""
    settings = {}
    if backend.startswith("redis"):
        settings["RECOGNIZE_QUEUE__URL"] = request.getfixturevalue("redis_url")
    if backend.endswith("postgresql"):
        settings["RECOGNIZE_DATABASE_URL"] = request.getfixturevalue("postgres")()
    url = settings.get("RECOGNIZE_DATABASE_URL")
    tree = photo_tree(tmp_path / "tree", shared_data, 30)
    data_dir = tmp_path / "state"
    engine = engine_for(data_dir, **settings)
    assert engine.scan(tree, wait=False).sync.added == 30
    assert {t["status"] for t in tasks(data_dir, url)} == {"pending"}

    engine.queue.pause()  # both start held back, then begin together
    workers = [start_worker(data_dir, "--exit-when-done", **settings) for _ in range(2)]
    time.sleep(1)
    engine.queue.resume()
    counts = [finish(worker)[0] for worker in workers]

    rows = tasks(data_dir, url)
    assert len(rows) == 30 and {t["status"] for t in rows} == {"done"}
    assert sum(counts) == 30 and min(counts) > 0, counts  # each file analyzed by one worker
    assert {t["attempts"] for t in rows} == {1}
    assert len({t["worker"] for t in rows}) == 2
    assert all(t["lease_until"] is None for t in rows)
    assert not (data_dir / "recognize.db").exists() or url is None


def test_a_worker_killed_mid_backlog_loses_nothing_and_duplicates_nothing(tmp_path, shared_data):
    settings = {"RECOGNIZE_QUEUE__LEASE_SECONDS": "4", "RECOGNIZE_QUEUE__FILE_TIME_LIMIT_SECONDS": "3"}
    tree = photo_tree(tmp_path / "tree", shared_data, 30)
    data_dir = tmp_path / "state"
    engine_for(data_dir, **settings).scan(tree, wait=False)

    victim = start_worker(data_dir, **settings)

    def busy_with_a_file():
        rows = tasks(data_dir)
        held = [t for t in rows if t["status"] == "pending" and t["lease_until"]]
        return held if sum(t["status"] == "done" for t in rows) >= 3 and held else None

    wait_until(busy_with_a_file, step=0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    rows = tasks(data_dir)
    done_before = {t["path"] for t in rows if t["status"] == "done"}
    held = [t for t in rows if t["status"] == "pending" and t["lease_until"]]
    assert 3 <= len(done_before) < 30

    analyzed, _ = finish(start_worker(data_dir, "--exit-when-done", **settings))
    rows = tasks(data_dir)
    assert {t["status"] for t in rows} == {"done"} and len(rows) == 30
    assert analyzed == 30 - len(done_before)  # the rest, each once
    assert {t["attempts"] for t in rows} == {1}
    for t in held:  # the file the victim held was given to the second worker
        again = next(r for r in rows if r["id"] == t["id"])
        assert again["worker"] != t["worker"]


def test_a_file_that_keeps_failing_is_dead_lettered_with_its_error_and_retry_sends_it_again(
    tmp_path, shared_data
):
    settings = {"RECOGNIZE_QUEUE__MAX_ATTEMPTS": "3", "RECOGNIZE_QUEUE__RETRY_DELAY_SECONDS": "0.2"}
    tree = photo_tree(tmp_path / "tree", shared_data, 4)
    (tree / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    data_dir = tmp_path / "state"
    cli(data_dir, "scan", "--queue-only", str(tree), **settings)
    away = min(tree.glob("*.JPEG"))
    kept = tmp_path / away.name
    away.rename(kept)  # a file that cannot be read for now: retried, then given up

    analyzed, _ = finish(start_worker(data_dir, "--exit-when-done", **settings))
    by_path = {t["path"]: t for t in tasks(data_dir)}
    assert analyzed == 4  # three photos and the broken file; the missing one was not analyzed
    missing = by_path[away.name]
    assert missing["status"] == "error" and missing["attempts"] == 3
    assert "gave up after 3 attempts" in missing["error"] and "is not there" in missing["error"]
    broken = by_path["broken.jpg"]  # a bad file is not retried
    assert broken["status"] == "error" and broken["attempts"] == 1 and "gave up" not in broken["error"]
    assert "3 done, 0 pending, 2 failed" in cli(data_dir, "progress", **settings)

    kept.rename(away)
    assert "2 files sent again" in cli(data_dir, "retry", **settings)
    finish(start_worker(data_dir, "--exit-when-done", **settings))
    by_path = {t["path"]: t for t in tasks(data_dir)}
    assert by_path[away.name]["status"] == "done" and by_path[away.name]["error"] is None
    assert by_path["broken.jpg"]["status"] == "error"


def test_a_request_overtakes_a_long_backlog(tmp_path, shared_data):
    from ex_app.work.queue import REQUEST

    backlog = photo_tree(tmp_path / "backlog", shared_data, 36)
    wanted = photo_tree(tmp_path / "wanted", shared_data, 2, start=50)
    data_dir = tmp_path / "state"
    engine = engine_for(data_dir)
    engine.scan(backlog, wait=False)
    engine.scan(wanted, wait=False)  # known files, at the end of the queue
    worker = start_worker(data_dir, "--exit-when-done")
    wait_until(lambda: sum(t["status"] == "done" for t in tasks(data_dir)) >= 2, step=0.01)

    wanted_ids = [t["file_id"] for t in tasks(data_dir) if t["path"] in {p.name for p in wanted.iterdir()}]
    assert engine.queue.enqueue_files(engine.sessions, wanted_ids, REQUEST) == 2
    finish(worker)

    rows = tasks(data_dir)
    assert {t["status"] for t in rows} == {"done"}
    wanted_done = max(t["updated_at"] for t in rows if t["file_id"] in wanted_ids)
    after = [t for t in rows if t["file_id"] not in wanted_ids and t["updated_at"] > wanted_done]
    assert len(after) >= 20, f"the request was done before only {len(after)} backlog files"


def test_quiet_hours_and_pause_hold_work_back(tmp_path, shared_data):
    tree = photo_tree(tmp_path / "tree", shared_data, 6)
    data_dir = tmp_path / "state"
    engine_for(data_dir).scan(tree, wait=False)
    hour = datetime.now().hour
    quiet = start_worker(data_dir, "--exit-when-done", RECOGNIZE_WORKER__QUIET_HOURS=f"{hour}-{(hour + 2) % 24}")
    wait_for_log(quiet, "quiet hours")  # however long its start takes
    assert {t["status"] for t in tasks(data_dir)} == {"pending"}
    quiet.send_signal(signal.SIGTERM)
    assert finish(quiet)[0] == 0

    cli(data_dir, "pause")
    assert "workers are paused" in cli(data_dir, "progress")
    worker = start_worker(data_dir, "--exit-when-done")
    wait_for_log(worker, "paused")
    assert {t["status"] for t in tasks(data_dir)} == {"pending"}
    cli(data_dir, "resume")
    assert finish(worker)[0] == 6
    assert {t["status"] for t in tasks(data_dir)} == {"done"}


def catches_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler (Linux: SigCgt in /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_a_worker_stopped_while_it_starts_exits_cleanly_and_claims_nothing(tmp_path, shared_data):
    tree = photo_tree(tmp_path / "tree", shared_data, 2)
    data_dir = tmp_path / "state"
    engine_for(data_dir).scan(tree, wait=False)
    worker = subprocess.Popen(command(data_dir, "-v", "worker"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=environment(), cwd=REPO)
    wait_until(lambda: catches_sigterm(worker.pid), timeout=60, step=0.002)
    worker.send_signal(signal.SIGTERM)  # while it loads its libraries: before any log line
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert "0 files analyzed by worker" in out and "stopped while it started" in out
    assert not re.search(r"worker \S+ started", err)  # its loop never ran
    assert {(t["status"], t["worker"]) for t in tasks(data_dir)} == {("pending", None)}


def test_progress_on_a_half_done_backlog_gives_the_rate_and_time_left(tmp_path, shared_data):
    tree = photo_tree(tmp_path / "tree", shared_data, 20)
    data_dir = tmp_path / "state"
    engine_for(data_dir).scan(tree)
    # Half of it back to pending; the other half finished one every 30 s over five minutes.
    now = datetime.now(UTC)
    with sqlite3.connect(data_dir / "recognize.db") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM tasks ORDER BY id")]
        for index, task_id in enumerate(ids):
            if index < 10:
                finished = (now - timedelta(seconds=30 * (index + 1))).strftime("%Y-%m-%d %H:%M:%S.%f")
                db.execute("UPDATE tasks SET updated_at = ? WHERE id = ?", (finished, task_id))
            else:
                db.execute("UPDATE tasks SET status = 'pending', attempts = 0 WHERE id = ?", (task_id,))

    import json

    report = json.loads(cli(data_dir, "progress", "--json", "--per-user"))
    (objects,) = report["instance"]
    assert (objects["done"], objects["pending"], objects["failed"]) == (10, 10, 0)
    assert 1.9 <= objects["per_minute"] <= 2.0  # 10 files in 300 s (and the seconds since)
    assert 290 <= objects["eta_seconds"] <= 320  # 10 left at 2 a minute
    assert report["users"] == {f"local:{tree.resolve()}": [objects]}
    text = cli(data_dir, "progress")
    assert re.search(r"objects: 10 done, 10 pending, 0 failed; (1\.9|2\.0)/min; time left 5m0\ds", text)


def test_a_file_over_the_time_limit_is_recorded_with_that_reason(tmp_path, shared_data):
    tree = photo_tree(tmp_path / "tree", shared_data, 2)
    data_dir = tmp_path / "state"
    cli(data_dir, "scan", str(tree), RECOGNIZE_QUEUE__FILE_TIME_LIMIT_SECONDS="0.001")
    rows = tasks(data_dir)
    assert {t["status"] for t in rows} == {"error"}
    assert all("per-file time limit" in t["error"] for t in rows)


def test_the_time_limit_passes_through_code_that_catches_every_exception(shared_data):
    """Decoders turn any exception into "a damaged file"; the limit must not become one."""
    from ex_app.media.images import decode_image
    from ex_app.work.neighbour import FileTimeLimit, time_limit

    photo = next((shared_data / "images").glob("*.JPEG"))
    deadline = time.monotonic() + 10
    with pytest.raises(FileTimeLimit), time_limit(0.0005):
        while time.monotonic() < deadline:
            try:
                decode_image(photo, max_side=1024, max_pixels=50_000_000)
            except Exception:  # noqa: BLE001  what a decoder does with the errors it meets
                pass


def test_a_claim_of_another_host_goes_back_to_the_queue_only_when_its_lease_ran_out(
    tmp_path, shared_data
):
    from ex_app.work.claims import claim_file, worker_gone, worker_name

    tree = photo_tree(tmp_path / "tree", shared_data, 3)
    engine = engine_for(tmp_path / "state")
    engine.scan(tree, wait=False)
    queue = engine.queue
    while queue.take() is not None:  # the messages are lost: only the claims tell the work
        pass
    with engine.sessions.begin() as session:
        file_ids = sorted({t.file_id for t in session.query(schema.Task)})
        now = datetime.now(UTC)
        assert claim_file(session, file_ids[0], "elsewhere:7:1:ab", timedelta(seconds=60), now)
        assert claim_file(session, file_ids[1], "elsewhere:8:1:cd", timedelta(seconds=1), now)
        assert claim_file(session, file_ids[2], worker_name(), timedelta(seconds=60), now)
    assert not worker_gone("elsewhere:7:1:ab") and not worker_gone(worker_name())

    later = datetime.now(UTC) + timedelta(seconds=5)
    assert queue.requeue_lost(engine.sessions, later) == 1  # the other host's lapsed lease only
    assert queue.requeue_lost(engine.sessions, later) == 0  # not again while its message waits
    assert [message.args[0] for message in iter(queue.take, None)] == [[file_ids[1]]]
    # That message taken by a worker that died before claiming: sent again once the queue is empty.
    assert queue.requeue_lost(engine.sessions, later) == 1


def test_a_worker_leaves_the_files_of_a_source_it_cannot_fetch_to_another(tmp_path, shared_data):
    from ex_app.media.kinds import MediaKind
    from ex_app.sources.local import LocalFetcher
    from ex_app.sources.nextcloud import NextcloudFile, NextcloudSource, NextcloudUsers
    from ex_app.store.files import record_files

    found = NextcloudFile("alice", "Photos/cat.jpg", 42, MediaKind.IMAGE, 1000, 1, "1")  # by a crawl
    tree = photo_tree(tmp_path / "tree", shared_data, 3)
    engine = engine_for(tmp_path / "state")
    source = NextcloudUsers(NextcloudSource(1 << 20), ["alice"])
    recorded = record_files(engine.sessions, source, [found], engine.pipeline)
    engine.queue.enqueue_files(engine.sessions, recorded.fresh)  # first in the queue
    engine.scan(tree, wait=False)

    worker = engine.worker(LocalFetcher())
    assert worker.run(until=lambda: engine.queue.backlog()[0] == 0) == 3
    by_source = {}
    for t in tasks(tmp_path / "state"):
        by_source.setdefault(t["path"] == found.path, set()).add((t["status"], t["attempts"], t["lease_until"]))
    assert by_source == {False: {("done", 1, None)}, True: {("pending", 0, None)}}
    assert engine.queue.backlog() == (0, 1)  # waiting in the schedule for a Nextcloud worker


def test_the_walk_sends_files_in_chunks_before_it_ends(tmp_path, shared_data, monkeypatch):
    from ex_app.sources import sync

    monkeypatch.setattr(sync, "CHUNK", 5)
    tree = photo_tree(tmp_path / "tree", shared_data, 12)
    engine = engine_for(tmp_path / "state")
    seen = []

    def chunk(file_ids: list[int]) -> None:  # what the store and the queue hold at each chunk
        engine.queue.enqueue_files(engine.sessions, file_ids)
        with engine.sessions() as session:
            seen.append((len(file_ids), session.query(schema.File).count(), engine.queue.backlog()[0]))

    engine.sync_local(tree, chunk)
    assert seen == [(5, 5, 2), (5, 10, 4), (2, 12, 5)]  # 4 files a message (FAST)


def test_a_worker_runs_within_its_memory_cap_and_says_when_it_is_too_small(tmp_path, shared_data):
    tree = photo_tree(tmp_path / "tree", shared_data, 2)
    data_dir = tmp_path / "state"
    engine_for(data_dir).scan(tree, wait=False)
    too_small = subprocess.run(command(data_dir, "worker", "--exit-when-done"), capture_output=True,
                               text=True, check=False, cwd=REPO,
                               env=environment(RECOGNIZE_WORKER__MEMORY_MB="300"))
    assert too_small.returncode != 0 and "too little to load the models" in too_small.stderr
    analyzed, _ = finish(start_worker(data_dir, "--exit-when-done", RECOGNIZE_WORKER__MEMORY_MB="1500"))
    assert analyzed == 2
