"""Workers through the queue: scaling, being a good neighbour, and idling.

Run from the project root: ``.venv/bin/python bench/queue_workers.py [--images 200]``.
Needs Debian's redis-server (the bench starts its own on a free port). Three figures:

1. throughput of 1 worker and of 2 workers (separate ``recognize worker`` processes, one
   thread each) on one backlog through the Redis backend, and their ratio;
2. the wall time of a CPU-bound probe pinned to the second core, alone and while a worker
   (default settings: 1 thread, nice 10, idle I/O) analyzes a backlog, and their ratio;
3. the CPU a worker uses over ``--idle-seconds`` with an empty queue, SQLite and Redis.

The photos are the shared ImageNet photos (faces and objects analyzers), repeated as needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "data" / "images"
MODELS = SHARED / "models"
ANALYZERS = {
    "RECOGNIZE_PLACES__ENABLED": "0",
    "RECOGNIZE_MUSIC__ENABLED": "0",
    "RECOGNIZE_VIDEO__ENABLED": "0",
}


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOGNIZE_")}
    env.pop("APP_PERSISTENT_STORAGE", None)
    return env | ANALYZERS | settings


def recognize(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ex_app", "--data-dir", str(data_dir),
            "--model-mirror", str(MODELS), *args]


def run(data_dir: Path, *args: str, **settings: str) -> None:
    subprocess.run(recognize(data_dir, *args), check=True, capture_output=True,
                   env=environment(**settings), cwd=ROOT)


def start_worker(data_dir: Path, log: Path, **settings: str) -> subprocess.Popen:
    """A ``recognize worker`` logging (at INFO) to the file log."""
    with open(log, "w") as stream:
        return subprocess.Popen(recognize(data_dir, "-v", "worker"), stdout=subprocess.DEVNULL,
                                stderr=stream, env=environment(**settings), cwd=ROOT)


def wait_for(condition, timeout: float = 600, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not get there in time")
        time.sleep(step)


def done_count(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "recognize.db") as db:
        return db.execute("SELECT count(DISTINCT file_id) FROM tasks WHERE status != 'pending'").fetchone()[0]


def backlog(folder: Path, count: int) -> Path:
    """``count`` photos (the shared ones, copied again under new names when more are asked)."""
    folder.mkdir(parents=True)
    photos = sorted(IMAGES.glob("*.JPEG"))
    for index in range(count):
        photo = photos[index % len(photos)]
        shutil.copy(photo, folder / f"{index:05d}_{photo.name}")
    return folder


class Redis:
    """A redis-server of the bench's own, on a free port."""

    def __init__(self, folder: Path):
        server = shutil.which("redis-server")
        if server is None:
            sys.exit("redis-server is missing: apt-get install redis-server")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder)], stdout=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{port}/0"
        import redis

        self.client = redis.Redis(port=port)
        wait_for(self._up, timeout=20)

    def _up(self) -> bool:
        import redis

        try:
            return self.client.ping()
        except redis.ConnectionError:
            return False

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def fresh_state(data_dir: Path, redis: Redis) -> None:
    """No database and an empty queue; the fetched models stay."""
    for path in data_dir.glob("recognize.db*"):
        path.unlink()
    redis.client.flushall()


def throughput(workers: int, tree: Path, data_dir: Path, redis: Redis, logs: Path) -> float:
    """Files per second of ``workers`` workers on the tree's backlog, from a common start."""
    fresh_state(data_dir, redis)
    settings = {"RECOGNIZE_QUEUE__URL": redis.url, "RECOGNIZE_WORKER__CPU_BUDGET": str(workers),
                "RECOGNIZE_WORKER__NICE": "0", "RECOGNIZE_QUEUE__IDLE_POLL_SECONDS": "1"}
    run(data_dir, "scan", "--queue-only", str(tree), **settings)
    run(data_dir, "pause", **settings)
    files = [logs / f"throughput-{workers}-{i}.log" for i in range(workers)]
    processes = [start_worker(data_dir, log, **settings) for log in files]
    wait_for(lambda: all("paused" in log.read_text() for log in files))  # models loaded, waiting
    total = len(list(tree.iterdir()))
    run(data_dir, "resume", **settings)
    start = time.perf_counter()
    wait_for(lambda: done_count(data_dir) >= total)
    elapsed = time.perf_counter() - start
    for process in processes:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return total / elapsed


PROBE = "import os, time\nos.sched_setaffinity(0, {%d})\nt = time.perf_counter()\nx = 0\nfor i in range(%d): x += i * i\nprint(time.perf_counter() - t)"


def probe_seconds(core: int, loops: int, repeats: int) -> float:
    """The median wall time of a pure-Python loop pinned to one core."""
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", PROBE % (core, loops)], check=True,
                             capture_output=True, text=True).stdout
        times.append(float(out))
    return sorted(times)[len(times) // 2]


def neighbour(tree: Path, data_dir: Path, logs: Path, loops: int, repeats: int) -> tuple[float, float]:
    """Probe seconds alone, and while a worker with default settings analyzes the backlog."""
    core = max(os.sched_getaffinity(0))
    alone = probe_seconds(core, loops, repeats)
    for path in data_dir.glob("recognize.db*"):
        path.unlink()
    run(data_dir, "scan", "--queue-only", str(tree))
    worker = start_worker(data_dir, logs / "neighbour.log", RECOGNIZE_QUEUE__IDLE_POLL_SECONDS="1")
    wait_for(lambda: done_count(data_dir) >= 2)
    busy = probe_seconds(core, loops, repeats)
    still_working = done_count(data_dir) < len(list(tree.iterdir()))
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    if not still_working:
        print("warning: the worker ran out of work during the probe; use more --images")
    return alone, busy


def idle_cpu(data_dirs: dict[str, tuple[Path, dict]], logs: Path, seconds: float) -> dict[str, float]:
    """CPU seconds per second of workers with nothing to do, measured together."""
    workers = {}
    for name, (data_dir, settings) in data_dirs.items():
        log = logs / f"idle-{name}.log"
        workers[name] = (start_worker(data_dir, log, **settings), log)
    for process, log in workers.values():  # started: models fetched, looking at the queue
        wait_for(lambda p=process, log=log: "started" in log.read_text() or p.poll() is not None)
    time.sleep(2)
    before = {name: psutil.Process(p.pid).cpu_times() for name, (p, _) in workers.items()}
    time.sleep(seconds)
    result = {}
    for name, (process, log) in workers.items():
        if process.poll() is not None:
            sys.exit(f"the {name} worker stopped: {log.read_text()[-2000:]}")
        after = psutil.Process(process.pid).cpu_times()
        used = (after.user + after.system) - (before[name].user + before[name].system)
        result[name] = used / seconds
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="photos in the throughput backlog")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--probe-loops", type=int, default=20_000_000)
    parser.add_argument("--probe-repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="recognize-queue-bench-") as scratch:
        scratch = Path(scratch)
        logs = scratch / "logs"
        logs.mkdir()
        tree = backlog(scratch / "photos", args.images)
        data_dir = scratch / "state"
        redis = Redis(scratch)
        try:
            one = throughput(1, tree, data_dir, redis, logs)
            two = throughput(2, tree, data_dir, redis, logs)
            alone, busy = neighbour(backlog(scratch / "more", args.images * 2), scratch / "neighbour",
                                    logs, args.probe_loops, args.probe_repeats)
            fresh_state(data_dir, redis)
            idle = idle_cpu(
                {"sqlite": (scratch / "idle-sqlite", {}),
                 "redis": (data_dir, {"RECOGNIZE_QUEUE__URL": redis.url})},
                logs, args.idle_seconds)
        finally:
            redis.close()

    core = max(os.sched_getaffinity(0))
    print(f"host: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    row("", "figure", "ratio")
    row("1 worker, Redis queue", f"{one:.2f} files/s")
    row("2 workers, Redis queue", f"{two:.2f} files/s", f"{two / one:.2f}")
    row(f"probe on core {core} alone", f"{alone:.2f} s")
    row("probe beside a 1-thread worker", f"{busy:.2f} s", f"{busy / alone:.2f}")
    for name, share in idle.items():
        row(f"idle worker, empty {name} queue, {args.idle_seconds:g} s", f"{share * 100:.3f} % CPU")


def row(label: str, figure: str, ratio: str = "") -> None:
    print(f"{label:<44}{figure:>16}{ratio:>8}")

if __name__ == "__main__":
    main()
