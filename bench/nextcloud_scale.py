"""A big Nextcloud: the ExApp run as AppAPI runs it, against the stand-in with many files.

The stand-in (tests/nextcloud_standin, indexed: bulk.py) serves --users users and --files
media files (the real photos, songs and a video made from them, under distinct paths, sizes
and etags; shared albums; .nomedia trees) over HTTP from this process. The ExApp runs in
its own process with its worker processes, objects only, as AppAPI deploys it: /init, then
enabled. Printed, with SQLite and with PostgreSQL as the database:

- the stand-in's own PROPFIND rate (a walk of every folder with plain HTTP requests), first
  and repeated: it keeps each folder's answer while nothing it shows changed, so that a crawl
  that finds nothing new measures the ExApp rather than the stand-in's XML;
- seconds from enabling to the first tag set in Nextcloud;
- files analyzed per minute during the backlog, and the whole backlog's time with every
  analyzer (from per-analyzer rates measured before, see bench/README.md);
- a new photo's seconds to its tags through a webhook and through the Files menu, on the
  busy backlog; what a crawl does for a new photo (found after how long, behind how much);
- a second crawl with nothing changed: seconds, queries, writes, CPU seconds (the crawl run
  in a process of its own against the same store and stand-in, its statements counted);
- the peak resident memory of the ExApp's process and of each worker.

    .venv/bin/python bench/nextcloud_scale.py [--files 100000] [--users 20] [--window 120]
                                              [--database sqlite postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "tests"))

from nextcloud_standin.auth import headers_to_exapp, new_secret  # noqa: E402
from nextcloud_standin.bulk import IndexedState, RepeatedPropfinds, seed_instance  # noqa: E402
from nextcloud_standin.fixture import APP_ID, APP_VERSION, Nextcloud  # noqa: E402
from nextcloud_standin.proxy import AppApiProxy  # noqa: E402
from nextcloud_standin.releases import DEFAULT, RELEASES  # noqa: E402
from nextcloud_standin.server import BackgroundServer, build_app  # noqa: E402
from nextcloud_standin.webhook_events import NODE_CREATED, node_event_calls  # noqa: E402
from peak_memory import own_peak_mb  # noqa: E402

# Seconds per file of each analyzer on this machine, from bench/README.md: the soak (objects
# 25.0 files/s; faces and objects 8.4 files/s), music (about 1 s per minute of audio, songs of
# 4 minutes) and video (4.72 s per minute, videos of 1 minute); places is a lookup.
SECONDS_PER_FILE = {"objects": 1 / 25.0, "faces": 1 / 8.4 - 1 / 25.0, "music": 4.0, "video": 4.7}
MEDIA_SHARE = {"image": 0.98, "audio": 0.01, "video": 0.01}  # of a typical archive


def media_sources(workdir: Path) -> list[Path]:
    """The real photos and songs of ../shared/data, and a short video made from photos."""
    photos = sorted(p for p in (SHARED / "data").rglob("*")
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    songs = sorted((SHARED / "data" / "music").glob("*.mp3"))
    video = workdir / "clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-loop", "1", "-i", str(photos[0]),
                    "-t", "3", "-vf", "scale=320:-2", "-pix_fmt", "yuv420p", str(video)],
                   check=True)
    return photos + songs + [video]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def propfind_rate(nextcloud: Nextcloud, users: list[str]) -> tuple[int, int, float]:
    """(folders, entries, seconds) of a Depth-1 walk of every user's folders."""
    body = ('<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
            '<d:prop><d:getetag/><d:getcontentlength/><d:resourcetype/><oc:fileid/>'
            '<oc:size/><oc:permissions/></d:prop></d:propfind>')
    folders = entries = 0
    started = time.monotonic()
    with httpx.Client(timeout=60) as client:
        for user in users:
            headers = {**headers_to_exapp(nextcloud.state, user), "Depth": "1"}
            todo = [""]
            while todo:
                path = todo.pop()
                response = client.request("PROPFIND", f"{nextcloud.url}/remote.php/dav/files/{user}/{path}",
                                          headers=headers, content=body)
                folders += 1
                hrefs = response.text.count("<d:href>")
                entries += hrefs
                entry = nextcloud.state.resolve(user, path)
                todo += [child.path for child in nextcloud.state.children(entry) if child.node.is_dir]
    return folders, entries, time.monotonic() - started


class Memory:
    """Samples the resident memory of a process and its children; keeps each one's peak."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    name = "worker" if "worker" in process.cmdline() else "service"
                except psutil.Error:
                    continue
                if rss > self.peaks.get(process.pid, ("", 0))[1]:
                    self.peaks[process.pid] = (name, rss)

    def stop(self) -> dict[int, tuple[str, int]]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def postgres_server(workdir: Path):
    """A PostgreSQL server of its own (Debian's) on a Unix socket: (database URL, stop)."""
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="recognize-pg-"))
    as_owner = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = str(free_port())

    def run(*args: str) -> None:
        subprocess.run([*as_owner, *args], check=True, capture_output=True)

    run(str(bin_dir / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "recognize")
    run(str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=''", "start")
    run(str(bin_dir / "createdb"), "-h", str(folder), "-p", port, "-U", "recognize", "recognize")

    def stop() -> None:
        run(str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "stop")
        shutil.rmtree(folder, ignore_errors=True)

    return f"postgresql+psycopg://recognize@/recognize?host={folder}&port={port}", stop


def wait_for(condition, seconds: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {seconds:.0f} s")
        time.sleep(every)


def files_with_tasks(database_url: str, status: str, negate: bool = False) -> int:
    """Nextcloud files with a task of this status (or, negated, of another), from the store."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(
                "SELECT count(DISTINCT file_id) FROM tasks WHERE (status = :status) <> :negate"),
                {"status": status, "negate": negate}).scalar()
    finally:
        engine.dispose()


def crawl_in_child(env: dict[str, str], send: bool = False) -> dict:
    """One crawl of every user, in a process of its own, with its statements counted."""
    command = [sys.executable, __file__, "--crawl-child"] + (["--send"] if send else [])
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(result.stdout.strip().splitlines()[-1])


def crawl_child(send: bool) -> None:
    """The child: crawl as the service does (objects only), print what it cost as JSON."""
    from nc_py_api import AsyncNextcloudApp
    from sqlalchemy import event

    from ex_app.config import Settings
    from ex_app.engine import Engine
    from ex_app.sources.nextcloud import NextcloudSource, NextcloudUsers
    from ex_app.sources.sync import sync
    from ex_app.work.queue import BACKLOG

    engine = Engine(Settings())
    counts: Counter[str] = Counter()

    def count(_conn, _cursor, statement, _parameters, _context, _many) -> None:
        counts[statement.lstrip().split(None, 1)[0].upper()] += 1

    def on_chunk(fresh: list[int]) -> None:
        if send:
            engine.queue.enqueue_files(engine.sessions, fresh, BACKLOG)

    async def crawl():
        users = sorted(await AsyncNextcloudApp().users_list())
        source = NextcloudSource(engine.settings.nextcloud.max_download_bytes)
        return await sync(engine.sessions, NextcloudUsers(source, users), engine.pipeline, on_chunk)

    engine.pipeline  # noqa: B018 (built before timing)
    event.listen(engine.sessions.kw["bind"], "before_cursor_execute", count)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    report = asyncio.run(crawl())
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "seconds": seconds,
        "cpu": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
        "statements": dict(counts),
        "writes": sum(counts[w] for w in ("INSERT", "UPDATE", "DELETE")),
        "report": vars(report),
        "peak_rss_mb": own_peak_mb(),
    }))


def run_one(database: str, args, sources: list[Path], workdir: Path) -> dict:
    """One whole run on a fresh stand-in and store; returns the figures."""
    figures: dict = {"database": database}
    state = IndexedState(APP_ID, APP_VERSION, new_secret(), RELEASES[DEFAULT].app_api, RELEASES[DEFAULT].server)
    state.add_user("admin", "Administrator", admin=True)
    seeded = seed_instance(state, sources, args.files, args.users)
    cache = RepeatedPropfinds(build_app(state), state)
    server = BackgroundServer(cache)
    server.start()
    storage = workdir / f"storage-{database}"
    storage.mkdir()
    nextcloud = Nextcloud(server.url, state, storage, AppApiProxy(state))
    print(f"[{database}] stand-in: {seeded.files} files ({seeded.hidden} below .nomedia), "
          f"{seeded.folders} folders, {len(seeded.users)} users, {seeded.shares} shares; "
          f"seeded in {seeded.seconds:.1f} s", flush=True)
    folders, entries, seconds = propfind_rate(nextcloud, ["admin", *seeded.users])
    _, _, again = propfind_rate(nextcloud, ["admin", *seeded.users])
    figures["propfind"] = (folders, entries, seconds, again)
    print(f"[{database}] stand-in alone: {folders} PROPFINDs, {entries} entries in {seconds:.1f} s "
          f"= {entries / seconds:.0f} entries/s; asked again (answers kept): {entries / again:.0f} "
          f"entries/s", flush=True)

    stop_database = None
    if database == "postgresql":
        database_url, stop_database = postgres_server(workdir)
    else:
        database_url = f"sqlite:///{storage / 'recognize.db'}"
    port = free_port()
    env = {**os.environ, **nextcloud.app_env(port),
           "RECOGNIZE_DATA_DIR": str(storage), "RECOGNIZE_MODEL_MIRROR": str(SHARED / "models"),
           "RECOGNIZE_DATABASE_URL": database_url, "RECOGNIZE_FACES__ENABLED": "false",
           "RECOGNIZE_PLACES__ENABLED": "false", "RECOGNIZE_MUSIC__ENABLED": "false",
           "RECOGNIZE_VIDEO__ENABLED": "false", "RECOGNIZE_NEXTCLOUD__JOBS": str(args.jobs),
           "RECOGNIZE_NEXTCLOUD__CRAWL_INTERVAL_SECONDS": "36000"}
    exapp = subprocess.Popen([sys.executable, "-c", "from ex_app.main import main; main()"],
                             env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=open(workdir / f"exapp-{database}.log", "w"))
    memory = Memory(exapp.pid)
    url = f"http://127.0.0.1:{port}"

    def call(method: str, path: str, user: str = "admin", **kwargs) -> httpx.Response:
        return httpx.request(method, url + path, headers=headers_to_exapp(state, user),
                             timeout=120, **kwargs)

    try:
        wait_for(lambda: _answers(url), 120, "the ExApp to listen")
        state.app.initializing = True
        call("POST", "/init")
        wait_for(lambda: state.app.progress == 100 or state.app.error, 600, "/init")
        assert not state.app.error, state.app.error
        state.app.enabled = True
        enabled = time.monotonic()
        assert call("PUT", "/enabled?enabled=1").json() == {"error": ""}
        wait_for(lambda: state.tag_relations, 900, "the first tag", every=0.05)
        figures["first_tag"] = time.monotonic() - enabled
        print(f"[{database}] first tag in Nextcloud {figures['first_tag']:.1f} s after enabling",
              flush=True)

        service = psutil.Process(exapp.pid)
        before, started, cpu = files_with_tasks(database_url, "pending", negate=True), time.monotonic(), service.cpu_times()
        time.sleep(args.window)
        rate = (files_with_tasks(database_url, "pending", negate=True) - before) / (time.monotonic() - started) * 60
        cpu_after = service.cpu_times()
        busy = (cpu_after.user + cpu_after.system - cpu.user - cpu.system) / (time.monotonic() - started)
        failed = files_with_tasks(database_url, "error")
        figures["per_minute"], figures["service_cpu"] = rate, busy * 100
        print(f"[{database}] backlog, objects: {rate:.0f} files/min ({failed} files failed so far); "
              f"the service's own process used {busy * 100:.0f} % of a core meanwhile", flush=True)

        for how in ("webhook", "files menu"):
            node = state.put_file("u02", f"Uploads/new-{how.replace(' ', '-')}.jpg",
                                  sources[7].read_bytes())
            sent = time.monotonic()
            if how == "webhook":
                for webhook in node_event_calls(state, NODE_CREATED, node, "u02"):
                    webhook.send(url)
            else:
                call("POST", "/api/files-action", "u02", json=_selection(state, "u02", node.path))
            wait_for(lambda node=node: state.tag_ids_of(node.fileid), 600, f"the {how} photo's tags")
            figures[how] = time.monotonic() - sent
            print(f"[{database}] new photo through the {how}: tagged {figures[how]:.1f} s after "
                  f"{'upload' if how == 'webhook' else 'the request'}", flush=True)

        child_env = {k: v for k, v in env.items() if k != "APP_PORT"}
        hits = cache.hits
        recrawl = crawl_in_child(child_env)
        recrawl["kept"] = cache.hits - hits
        figures["recrawl"] = recrawl
        print(f"[{database}] crawl with nothing changed: {recrawl['seconds']:.1f} s, "
              f"{sum(recrawl['statements'].values())} statements ({recrawl['writes']} writes), "
              f"{recrawl['cpu']:.1f} CPU s, peak RSS {recrawl['peak_rss_mb']:.0f} MB; "
              f"{recrawl['kept']} PROPFINDs answered from the stand-in's kept answers; "
              f"{recrawl['report']}", flush=True)

        state.put_file("u03", "Uploads/found-by-crawl.jpg", sources[9].read_bytes())
        found = crawl_in_child(child_env, send=True)
        waiting = files_with_tasks(database_url, "pending")
        figures["crawl_new"] = (found["seconds"], waiting)
        print(f"[{database}] new photo without a webhook: recorded and queued by a crawl of "
              f"{found['seconds']:.1f} s, then behind {waiting} pending files "
              f"(~{waiting / max(rate, 1e-9):.0f} min at the backlog's rate)", flush=True)
    finally:
        try:
            call("PUT", "/enabled?enabled=0")
        except httpx.HTTPError:
            pass
        peaks = memory.stop()
        exapp.terminate()
        try:
            exapp.wait(60)
        except subprocess.TimeoutExpired:
            exapp.kill()
        server.stop()
        if stop_database:
            stop_database()
    figures["rss"] = sorted(peaks.values())
    for name, rss in sorted(peaks.values()):
        print(f"[{database}] peak RSS {name}: {rss / 2**20:.0f} MB", flush=True)
    return figures


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/heartbeat", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _selection(state, user: str, path: str) -> dict:
    """The Files menu payload for one of user's files."""
    node = state.own_node(user, path)
    directory, _, name = ("/" + path).rpartition("/")
    return {"files": [{
        "fileId": node.fileid, "name": name, "directory": directory or "/", "etag": node.etag,
        "mime": node.mimetype, "fileType": "file", "size": node.size, "favorite": "false",
        "permissions": 31, "mtime": node.mtime, "userId": user, "instanceId": None,
    }]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--window", type=float, default=120, help="seconds the backlog rate is measured")
    parser.add_argument("--database", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--crawl-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--send", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.crawl_child:
        crawl_child(args.send)
        return
    with tempfile.TemporaryDirectory(prefix="recognize-scale-") as folder:
        workdir = Path(folder)
        sources = media_sources(workdir)
        results = [run_one(database, args, sources, workdir) for database in args.database]
    print(f"\n{args.files} files, {args.users} users, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; targets in brackets")
    print(f"{'':44}" + "".join(f"{r['database']:>14}" for r in results))
    rows = [
        ("stand-in PROPFIND entries/s, first", lambda r: f"{r['propfind'][1] / r['propfind'][2]:.0f}"),
        ("stand-in PROPFIND entries/s, repeated", lambda r: f"{r['propfind'][1] / r['propfind'][3]:.0f}"),
        ("first tag after enabling, s [< 60]", lambda r: f"{r['first_tag']:.1f}"),
        ("backlog, objects, files/min", lambda r: f"{r['per_minute']:.0f}"),
        ("service CPU during the backlog, % of a core", lambda r: f"{r['service_cpu']:.0f}"),
        ("new photo, webhook, s [< 30]", lambda r: f"{r['webhook']:.1f}"),
        ("new photo, Files menu, s [< 30]", lambda r: f"{r['files menu']:.1f}"),
        ("re-crawl unchanged, s [< 120 at 100k]", lambda r: f"{r['recrawl']['seconds']:.1f}"),
        ("re-crawl unchanged, statements", lambda r: f"{sum(r['recrawl']['statements'].values())}"),
        ("re-crawl unchanged, writes [0]", lambda r: f"{r['recrawl']['writes']}"),
        ("re-crawl unchanged, CPU s", lambda r: f"{r['recrawl']['cpu']:.1f}"),
        ("service peak RSS, MB [< 500]",
         lambda r: f"{max((rss for n, rss in r['rss'] if n == 'service'), default=0) / 2**20:.0f}"),
        ("worker peak RSS, MB",
         lambda r: f"{max((rss for n, rss in r['rss'] if n == 'worker'), default=0) / 2**20:.0f}"),
    ]
    for label, value in rows:
        print(f"{label:44}" + "".join(f"{value(r):>14}" for r in results))
    objects_rate = results[0]["per_minute"] / 60
    everything = args.files * (
        MEDIA_SHARE["image"] * (SECONDS_PER_FILE["objects"] + SECONDS_PER_FILE["faces"])
        + MEDIA_SHARE["audio"] * SECONDS_PER_FILE["music"]
        + MEDIA_SHARE["video"] * SECONDS_PER_FILE["video"])
    measured_objects = args.files / max(objects_rate, 1e-9)
    scale = measured_objects / (args.files * SECONDS_PER_FILE["objects"])
    print(f"whole backlog, objects only, at the measured rate: {measured_objects / 3600:.1f} h; "
          f"every analyzer (faces, objects, music, video; per-analyzer rates of bench/README.md "
          f"scaled by this run's objects rate): {everything * scale / 3600:.1f} h")


if __name__ == "__main__":
    main()
