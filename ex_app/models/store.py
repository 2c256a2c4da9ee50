"""Model files on disk, each fetched once and verified against the manifest's sha256.

Sources are tried in order: the installed Python package that ships the file (used in
place), the local mirror folder (copied), then each URL (downloaded). Files live under
``models_dir/<name>/<sha256[:16]>/<file>``, so a manifest with a new hash fetches beside the
old version; nothing here deletes a verified model. A small ``verified.json`` beside it
remembers the verified file's size and mtime, so a present file is only re-hashed when it
changed.

An entry whose hash could not be learned when the manifest was written (``sha256: null``,
``pin_on_first_download: true``) lives under ``models_dir/<name>/pinned/``: the hash of the
first copy the store gets is written beside it (``pinned.sha256``, with a warning in the log)
and every later copy must match it.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import importlib.util
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ex_app.models.manifest import ModelSpec

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
PINNED_DIR = "pinned"  # the version folder of an entry without a manifest hash
PIN_FILE = "pinned.sha256"
UNPINNED_SIZE_FACTOR = 4  # an unpinned download may be this many times its published size
USER_AGENT = "Nextcloud-Recognize-ExApp"


@contextmanager
def host_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock shared by the processes of this host (released at death too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


Progress = Callable[[int, int], None]


class ModelUnavailable(Exception):
    """No source could provide a verified copy of a model; ``reasons`` says why, per source."""

    def __init__(self, name: str, reasons: list[str], hint: str = ""):
        self.name = name
        self.reasons = reasons
        listing = "\n".join(f"  - {reason}" for reason in reasons) or "  - no sources"
        advice = f"\n{hint}" if hint else ""
        super().__init__(f"model {name!r} is unavailable; sources tried:\n{listing}{advice}")


def remedy(spec: ModelSpec) -> str:
    """What an admin can do when no source gave a model: the ways in, in plain words."""
    ways = []
    if spec.package is not None:
        ways.append(f"install the Python package {spec.package.python_package!r}")
    if spec.derivation is not None:
        made_from = ", ".join(spec.derivation.derived_from)
        ways.append(f"make {made_from} available (it is made from them)")
    if spec.urls:
        ways.append("let this machine reach the URLs above")
    ways.append(f"or put {spec.file} (sha256 {spec.sha256 or 'as pinned'}) in a folder and pass "
                "it with --model-mirror (RECOGNIZE_MODEL_MIRROR)")
    return "To fix: " + "; ".join(ways) + "."


class SourceFailed(Exception):
    """One source could not provide the model; the message says why."""


@dataclass(frozen=True)
class ModelStatus:
    """One manifest entry and whether a verified copy is on this machine."""

    name: str
    task: str
    file: str
    size: int
    path: Path | None

    @property
    def present(self) -> bool:
        return self.path is not None


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, as lowercase hex."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def package_file(spec: ModelSpec) -> Path | None:
    """Where the package source's file would be, without importing the package."""
    if spec.package is None:
        return None
    found = importlib.util.find_spec(spec.package.python_package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))) / spec.package.path


def _write_atomic(path: Path, text: str) -> None:
    """Write a small file whole or not at all (readers in other processes never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _content_range_start(header: str | None) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (header or "").strip())
    return int(match.group(1)) if match else None


def _response_total(response: http.client.HTTPResponse, start: int) -> int | None:
    """The whole file's length as the response states it (start: bytes already here)."""
    match = re.fullmatch(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", "").strip())
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _kept(part: Path) -> str:
    """What is left of a broken download: a part file the next try resumes, or nothing."""
    size = part.stat().st_size if part.exists() else 0
    if size:
        return f"the {size} bytes got are kept in {part} and the next try resumes them"
    part.unlink(missing_ok=True)
    return "nothing was kept"


class ModelStore:
    """Verified model files under ``models_dir``, fetched on first use."""

    def __init__(self, models_dir: Path, manifest: dict[str, ModelSpec],
                 mirror: Path | None = None, timeout: float = 30):
        self.models_dir = Path(models_dir)
        self.manifest = manifest
        self.mirror = Path(mirror) if mirror is not None else None
        self.timeout = timeout
        self._fallen_back: set[str] = set()

    def path(self, name: str) -> Path:
        """The verified local file for a model, fetching it first if needed."""
        return self.fetch(name)

    def fetch(self, name: str, progress: Progress | None = None) -> Path:
        """Make a verified copy available (unless one is) and return its path.

        ``progress(done_bytes, total_bytes)`` is called as bytes are copied or downloaded.
        Raises :class:`ModelUnavailable` when every source failed.
        """
        spec = self._spec(name)
        try:
            # Another process fetching it: wait, then find it there.
            with host_lock(self.models_dir / ".locks" / f"{spec.name}.lock"):
                return self._fetch(spec, progress)
        except ModelUnavailable as error:
            if spec.fallback is None:
                raise
            try:
                path = self.fetch(spec.fallback, progress)
            except ModelUnavailable as lesser:
                reasons = [*error.reasons, *(f"fallback {r}" for r in lesser.reasons)]
                raise ModelUnavailable(name, reasons, remedy(spec)) from lesser
            if name not in self._fallen_back:  # once per store, not per use
                self._fallen_back.add(name)
                log.warning("model %s is not available here (%s); using its fallback %s: %s",
                            name, "; ".join(error.reasons), spec.fallback, path)
            return path

    def _fetch(self, spec: ModelSpec, progress: Progress | None) -> Path:
        if (present := self._present(spec)) is not None:
            return present
        attempts: list[tuple[str, Callable[[], Path]]] = []
        if spec.package is not None:
            source = f"python package {spec.package.python_package}"
            attempts.append((source, lambda: self._from_package(spec)))
        if spec.derivation is not None:
            source = f"conversion of {', '.join(spec.derivation.derived_from)}"
            attempts.append((source, lambda: self._from_derivation(spec)))
        if (mirror := self.mirror) is not None:
            attempts.append((f"mirror {mirror}", lambda: self._from_mirror(spec, mirror, progress)))
        for url in spec.urls:
            attempts.append((url, lambda url=url: self._from_url(spec, url, progress)))

        reasons = []
        for source, attempt in attempts:
            try:
                found = attempt()
            except SourceFailed as failure:
                # With a fallback, the one warning that says it is used lists these reasons.
                level = logging.INFO if spec.fallback else logging.WARNING
                log.log(level, "model %s: %s: %s", spec.name, source, failure)
                reasons.append(f"{source}: {failure}")
                continue
            log.info("model %s: verified %s (from %s)", spec.name, found, source)
            return found
        raise ModelUnavailable(spec.name, reasons, remedy(spec))

    def local_path(self, name: str) -> Path | None:
        """The verified copy on this machine (or its fallback's), or None; never fetches."""
        spec = self._spec(name)
        present = self._present(spec)
        if present is None and spec.fallback is not None:
            return self._present(self._spec(spec.fallback))
        return present

    def version_sha256(self, name: str) -> str | None:
        """The hash of the file a model name stands for here: its own, or its fallback's
        while only the fallback is on this machine (results say which model made them)."""
        spec = self._spec(name)
        fallback = spec.fallback
        if fallback and self._present(spec) is None and self._present(self._spec(fallback)):
            return self.expected_sha256(fallback)
        return self.expected_sha256(name)

    def status(self) -> list[ModelStatus]:
        """Every manifest entry with its verified local path, if any."""
        return [ModelStatus(spec.name, spec.task, spec.file, spec.size, self._present(spec))
                for spec in self.manifest.values()]

    def stored_path(self, name: str) -> Path:
        """Where a downloaded or copied model is kept (whether or not it is there yet)."""
        spec = self._spec(name)
        version = spec.sha256[:16] if spec.sha256 is not None else PINNED_DIR
        return self.models_dir / spec.name / version / spec.file

    def expected_sha256(self, name: str) -> str | None:
        """The hash a model's bytes must have: the manifest's, else the one pinned here."""
        spec = self._spec(name)
        return spec.sha256 if spec.sha256 is not None else self._pinned(spec)

    # Verification ---------------------------------------------------------------------

    def _spec(self, name: str) -> ModelSpec:
        try:
            return self.manifest[name]
        except KeyError:
            raise KeyError(f"unknown model {name!r}; known: {sorted(self.manifest)}") from None

    def _stamp_path(self, spec: ModelSpec) -> Path:
        return self.stored_path(spec.name).with_name("verified.json")

    def _stamp(self, spec: ModelSpec, path: Path) -> dict[str, object]:
        stat = path.stat()
        # ctime_ns: a rewrite with its mtime put back still shows there.
        return {"path": str(path), "sha256": self.expected_sha256(spec.name), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns, "inode": stat.st_ino}

    def _pin_path(self, spec: ModelSpec) -> Path:
        return self.stored_path(spec.name).with_name(PIN_FILE)

    def _pinned(self, spec: ModelSpec) -> str | None:
        """The hash pinned here for an entry without one in the manifest, if any yet."""
        try:
            value = self._pin_path(spec).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return value if re.fullmatch(r"[0-9a-f]{64}", value) else None

    def _pin_first_copy(self, spec: ModelSpec, path: Path) -> None:
        """Pin the hash of the first verified-by-nothing copy of an entry without a hash."""
        if spec.sha256 is not None or self._pinned(spec) is not None:
            return
        digest = file_sha256(path)
        pin = self._pin_path(spec)
        _write_atomic(pin, digest + "\n")
        log.warning("model %s: the manifest has no sha256 for %s; pinned %s from this first copy "
                    "(%d bytes) in %s: later copies must match it. Check it and write it into "
                    "models/manifest.yml.", spec.name, spec.file, digest, path.stat().st_size, pin)

    def _remember_verified(self, spec: ModelSpec, path: Path) -> None:
        self._pin_first_copy(spec, path)
        _write_atomic(self._stamp_path(spec), json.dumps(self._stamp(spec, path)))

    def _stamped(self, spec: ModelSpec) -> Path | None:
        """The file the sidecar vouches for, if it has not changed since it was hashed."""
        try:
            recorded = json.loads(self._stamp_path(spec).read_text(encoding="utf-8"))
            path = Path(recorded["path"])
            return path if recorded == self._stamp(spec, path) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _verify(self, spec: ModelSpec, path: Path) -> None:
        """Raise SourceFailed unless ``path`` holds exactly the expected bytes.

        The expected bytes are the manifest's, or those pinned here; the first copy of an
        entry without a hash only has to fit its size bound (it is pinned when accepted).
        """
        size = path.stat().st_size
        if spec.sha256 is not None and size != spec.size:
            raise SourceFailed(f"size mismatch: {path} has {size} bytes, expected {spec.size}")
        if spec.sha256 is None and size > spec.size * UNPINNED_SIZE_FACTOR:
            raise SourceFailed(f"{path} has {size} bytes, far more than the published {spec.size}")
        expected = self.expected_sha256(spec.name)
        if expected is not None and (actual := file_sha256(path)) != expected:
            where = "expected" if spec.sha256 is not None else "pinned on first download"
            raise SourceFailed(f"sha256 mismatch: {path} has {actual}, {where} {expected}")

    def _present(self, spec: ModelSpec) -> Path | None:
        """A verified copy on this machine: the stamped one, else the stored or package file."""
        if (stamped := self._stamped(spec)) is not None:
            return stamped
        for candidate in (self.stored_path(spec.name), package_file(spec)):
            if candidate is not None and candidate.is_file():
                with suppress(SourceFailed):
                    return self._accept(spec, candidate)
        return None

    def _accept(self, spec: ModelSpec, path: Path) -> Path:
        """``path`` once verified (else SourceFailed) and remembered as verified."""
        self._verify(spec, path)
        self._remember_verified(spec, path)
        return path

    def _install(self, spec: ModelSpec, part: Path) -> Path:
        """Verify a complete ``.part`` file and move it into place atomically."""
        try:
            self._verify(spec, part)
        except SourceFailed:
            part.unlink(missing_ok=True)
            raise
        target = self.stored_path(spec.name)
        os.replace(part, target)
        self._remember_verified(spec, target)
        return target

    # Sources ----------------------------------------------------------------------------

    def _part_path(self, spec: ModelSpec) -> Path:
        target = self.stored_path(spec.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(target.name + ".part")

    def _from_package(self, spec: ModelSpec) -> Path:
        path = package_file(spec)
        if path is None:
            raise SourceFailed("package is not installed")
        if not path.is_file():
            raise SourceFailed(f"package has no file {path}")
        return self._accept(spec, path)

    def _from_derivation(self, spec: ModelSpec) -> Path:
        """Convert the verified source models into ``.part``, then verify and install it."""
        derivation = spec.derivation
        module_name, function_name = derivation.converter.split(":")
        convert = getattr(importlib.import_module(module_name), function_name)
        try:
            sources = [self.path(name) for name in derivation.derived_from]
        except ModelUnavailable as error:
            raise SourceFailed(str(error)) from error
        part = self._part_path(spec)
        try:
            convert(*sources, part)
        except Exception as error:  # any converter failure leaves the other sources to try
            part.unlink(missing_ok=True)
            raise SourceFailed(f"conversion failed: {error}") from error
        return self._install(spec, part)

    def _from_mirror(self, spec: ModelSpec, mirror: Path, progress: Progress | None) -> Path:
        source = mirror / spec.file
        if not source.is_file():
            raise SourceFailed(f"no file {spec.file} in the mirror")
        part = self._part_path(spec)
        done = 0
        try:
            with source.open("rb") as reader, part.open("wb") as writer:
                while chunk := reader.read(CHUNK_SIZE):
                    writer.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, spec.size)
        except OSError as error:
            raise SourceFailed(f"copy failed after {done} bytes: {error}") from error
        return self._install(spec, part)

    def _from_url(self, spec: ModelSpec, url: str, progress: Progress | None) -> Path:
        """Download to ``.part``, resuming a previous ``.part`` when the server allows it."""
        part = self._part_path(spec)
        limit = spec.size if spec.sha256 is not None else spec.size * UNPINNED_SIZE_FACTOR
        offset = part.stat().st_size if part.exists() else 0
        if offset >= limit:  # cannot be a prefix of the file: start over
            part.unlink()
            offset = 0
        headers = {"User-Agent": USER_AGENT} | ({"Range": f"bytes={offset}-"} if offset else {})

        done = offset
        total: int | None = spec.size if spec.sha256 is not None else None
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                start = _content_range_start(response.headers.get("Content-Range"))
                resuming = offset > 0 and response.status == 206 and start == offset
                if offset and not resuming:
                    log.info("model %s: %s does not resume; downloading again", spec.name, url)
                    done = 0
                if total is None:  # no hash yet: the server's length says when it is whole
                    total = _response_total(response, done)
                    if total is not None and total > limit:
                        raise SourceFailed(
                            f"the file has {total} bytes, far more than the published {spec.size}"
                        )
                shown = total or spec.size
                with part.open("ab" if resuming else "wb") as writer:
                    while done <= limit and (chunk := response.read(CHUNK_SIZE)):
                        writer.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(min(done, shown), shown)
        except urllib.error.HTTPError as error:
            if error.code == 416:  # our .part does not fit the file the server has
                part.unlink(missing_ok=True)
            raise SourceFailed(f"HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            raise SourceFailed(
                f"download broke off after {done} of {spec.size} bytes ({error!r}); "
                + _kept(part)
            ) from error
        if done > min(limit, total or limit):
            part.unlink(missing_ok=True)
            raise SourceFailed(f"server sent more than {min(limit, total or limit)} bytes")
        if total is not None and done < total:
            raise SourceFailed(f"connection closed after {done} of {total} bytes; " + _kept(part))
        return self._install(spec, part)
