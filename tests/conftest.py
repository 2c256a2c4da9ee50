"""Shared test fixtures: where the real data and models are, and how to run the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["nextcloud_standin.fixture"]  # the `nextcloud` fixture: a local Nextcloud

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"


def run_cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``recognize`` in a fresh process with its own data folder and the shared mirror."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOGNIZE_")}
    env.pop("APP_PERSISTENT_STORAGE", None)
    command = [sys.executable, "-m", "ex_app", "--data-dir", str(data_dir),
               "--model-mirror", str(SHARED_MODELS), *args]
    return subprocess.run(command, capture_output=True, text=True, check=check, env=env, cwd=REPO)


def export_json(data_dir: Path, *args: str) -> dict:
    return json.loads(run_cli(data_dir, "export", "--json", *args).stdout)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the real test data is missing: {SHARED_DATA}"
    return SHARED_DATA


def write_oversized_png(path: Path, width: int = 30_000, height: int = 30_000) -> None:
    """A syntactically valid PNG that declares width × height pixels but holds only a few rows."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\x00" + b"\x80" * width) * 1
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="session")
def model_store(tmp_path_factory):
    """The real model store over a fresh folder, filled from the shared mirror and packages."""
    from ex_app.models.manifest import load_manifest
    from ex_app.models.store import ModelStore

    return ModelStore(tmp_path_factory.mktemp("models"), load_manifest(), mirror=SHARED_MODELS)
