"""Model files on disk, each fetched once and verified against the manifest's sha256.

Sources are tried in order: the installed Python package that ships the file (used in
place), the local mirror folder (copied), then each URL (downloaded). Files live under
``models_dir/<name>/<sha256[:16]>/<file>``, so a manifest with a new hash fetches beside the
old version; nothing here deletes a verified model. A small ``verified.json`` beside it
remembers the verified file's size and mtime, so a present file is only re-hashed when it
changed.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ex_app.models.manifest import ModelSpec

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
USER_AGENT = "Nextcloud-Recognize-ExApp"

Progress = Callable[[int, int], None]


class ModelUnavailable(Exception):
    """No source could provide a verified copy of a model; ``reasons`` says why, per source."""

    def __init__(self, name: str, reasons: list[str]):
        self.name = name
        self.reasons = reasons
        listing = "\n".join(f"  - {reason}" for reason in reasons) or "  - no sources"
        super().__init__(f"model {name!r} is unavailable; sources tried:\n{listing}")


class SourceFailed(Exception):
    """One source could not provide the model; the message says why."""


@dataclass(frozen=True)
class ModelStatus:
    """One manifest entry and whether a verified copy is on this machine."""

    name: str
    task: str
    file: str
    size: int
    present: bool
    path: Path | None


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
    return Path(list(found.submodule_search_locations)[0]) / spec.package.path


def _content_range_start(header: str | None) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (header or "").strip())
    return int(match.group(1)) if match else None


class ModelStore:
    """Verified model files under ``models_dir``, fetched on first use."""

    def __init__(
        self,
        models_dir: Path,
        manifest: dict[str, ModelSpec],
        mirror: Path | None = None,
        timeout: float = 30,
    ):
        self.models_dir = Path(models_dir)
        self.manifest = manifest
        self.mirror = Path(mirror) if mirror is not None else None
        self.timeout = timeout

    def path(self, name: str) -> Path:
        """The verified local file for a model, fetching it first if needed."""
        return self.fetch(name)

    def fetch(self, name: str, progress: Progress | None = None) -> Path:
        """Make a verified copy available (unless one is) and return its path.

        ``progress(done_bytes, total_bytes)`` is called as bytes are copied or downloaded.
        Raises :class:`ModelUnavailable` when every source failed.
        """
        spec = self._spec(name)
        present = self._present(spec)
        if present is not None:
            return present
        attempts: list[tuple[str, Callable[[], Path]]] = []
        if spec.package is not None:
            attempts.append(
                (f"python package {spec.package.python_package}", lambda: self._from_package(spec))
            )
        if spec.derivation is not None:
            attempts.append(
                (
                    f"conversion of {spec.derivation.derived_from}",
                    lambda: self._from_derivation(spec),
                )
            )
        if self.mirror is not None:
            mirror = self.mirror
            attempts.append((f"mirror {mirror}", lambda: self._from_mirror(spec, mirror, progress)))
        for url in spec.urls:
            attempts.append((url, lambda url=url: self._from_url(spec, url, progress)))

        reasons = []
        for source, attempt in attempts:
            try:
                found = attempt()
            except SourceFailed as failure:
                log.warning("model %s: %s: %s", name, source, failure)
                reasons.append(f"{source}: {failure}")
                continue
            log.info("model %s: verified %s (from %s)", name, found, source)
            return found
        raise ModelUnavailable(name, reasons)

    def status(self) -> list[ModelStatus]:
        """Every manifest entry with its verified local path, if any."""
        rows = []
        for spec in self.manifest.values():
            present = self._present(spec)
            rows.append(
                ModelStatus(
                    name=spec.name,
                    task=spec.task,
                    file=spec.file,
                    size=spec.size,
                    present=present is not None,
                    path=present,
                )
            )
        return rows

    def stored_path(self, name: str) -> Path:
        """Where a downloaded or copied model is kept (whether or not it is there yet)."""
        spec = self._spec(name)
        return self.models_dir / spec.name / spec.sha256[:16] / spec.file

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
        return {
            "path": str(path),
            "sha256": spec.sha256,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }

    def _remember_verified(self, spec: ModelSpec, path: Path) -> None:
        stamp_path = self._stamp_path(spec)
        stamp_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = stamp_path.with_name(stamp_path.name + ".tmp")
        temporary.write_text(json.dumps(self._stamp(spec, path)), encoding="utf-8")
        os.replace(temporary, stamp_path)

    def _stamped(self, spec: ModelSpec) -> Path | None:
        """The file the sidecar vouches for, if it has not changed since it was hashed."""
        try:
            recorded = json.loads(self._stamp_path(spec).read_text(encoding="utf-8"))
            path = Path(recorded["path"])
            return path if recorded == self._stamp(spec, path) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _verify(self, spec: ModelSpec, path: Path) -> None:
        """Raise SourceFailed unless ``path`` holds exactly the manifest's bytes."""
        size = path.stat().st_size
        if size != spec.size:
            raise SourceFailed(f"size mismatch: {path} has {size} bytes, expected {spec.size}")
        actual = file_sha256(path)
        if actual != spec.sha256:
            raise SourceFailed(f"sha256 mismatch: {path} has {actual}, expected {spec.sha256}")

    def _present(self, spec: ModelSpec) -> Path | None:
        """A verified copy on this machine: the stamped one, else the stored or package file."""
        stamped = self._stamped(spec)
        if stamped is not None:
            return stamped
        for candidate in (self.stored_path(spec.name), package_file(spec)):
            if candidate is None or not candidate.is_file():
                continue
            try:
                self._verify(spec, candidate)
            except SourceFailed:
                continue
            self._remember_verified(spec, candidate)
            return candidate
        return None

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
        self._verify(spec, path)
        self._remember_verified(spec, path)
        return path

    def _from_derivation(self, spec: ModelSpec) -> Path:
        """Convert the verified source model into ``.part``, then verify and install it."""
        derivation = spec.derivation
        module_name, function_name = derivation.converter.split(":")
        convert = getattr(importlib.import_module(module_name), function_name)
        try:
            source = self.path(derivation.derived_from)
        except ModelUnavailable as error:
            raise SourceFailed(str(error)) from error
        part = self._part_path(spec)
        try:
            convert(source, part)
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
        offset = part.stat().st_size if part.exists() else 0
        if offset >= spec.size:  # cannot be a prefix of the file: start over
            part.unlink()
            offset = 0
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"

        done = offset
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                resuming = (
                    offset > 0
                    and response.status == 206
                    and _content_range_start(response.headers.get("Content-Range")) == offset
                )
                if offset and not resuming:
                    log.info("model %s: %s does not resume; downloading again", spec.name, url)
                    done = 0
                with part.open("ab" if resuming else "wb") as writer:
                    while done <= spec.size and (chunk := response.read(CHUNK_SIZE)):
                        writer.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(min(done, spec.size), spec.size)
        except urllib.error.HTTPError as error:
            if error.code == 416:  # our .part does not fit the file the server has
                part.unlink(missing_ok=True)
            raise SourceFailed(f"HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            raise SourceFailed(
                f"download broke off after {done} of {spec.size} bytes ({error!r}); "
                "the partial file is kept to resume"
            ) from error
        if done > spec.size:
            part.unlink(missing_ok=True)
            raise SourceFailed(f"server sent more than the expected {spec.size} bytes")
        if done < spec.size:
            raise SourceFailed(
                f"connection closed after {done} of {spec.size} bytes; "
                "the partial file is kept to resume"
            )
        return self._install(spec, part)
