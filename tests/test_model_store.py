"""The model manifest and store, against real model files and a real local HTTP server."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from ex_app.models.manifest import ManifestError, ModelSpec, UrlSource, load_manifest
from ex_app.models.store import ModelStore, ModelUnavailable, file_sha256, package_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = PROJECT_ROOT.parent / "shared" / "models"
BIG_MODEL = SHARED_MODELS / "efficientnet_lite0.onnx"  # 18.6 MB: many chunks
SMALL_MODEL = SHARED_MODELS / "face_detection_yunet.onnx"
OTHER_MODEL = SHARED_MODELS / "musicnn_mtt.onnx"
# Entries with a known hash whose file is only upstream (not in the mirror, no package ships it).
ONLY_UPSTREAM = {"kinetics600_labels"}
# Entries converted here whose bytes differ from the mirror's file of the same name; their
# outputs are compared with the mirror's in tests/test_model_sources.py.
CONVERTED_HERE = {"efficientnet_lite0", "musicnn_msd", "musicnn_mtt"}


@dataclass
class ServedFiles:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    supports_range: bool = True
    cut_next_response_after: int | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)


class ModelFileHandler(BaseHTTPRequestHandler):
    """Serves ``ServedFiles``, honouring Range when allowed, cutting a response when told."""

    def do_GET(self) -> None:
        served = self.server.served  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        served.requests.append((self.path, range_header))
        body = served.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if range_header and served.supports_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if served.cut_next_response_after is not None:
            payload = payload[: served.cut_next_response_after]
            served.cut_next_response_after = None
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, ServedFiles]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ModelFileHandler)
    httpd.served = ServedFiles()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.served  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def spec_for(name: str, payload: Path, urls: list[str], file: str | None = None) -> ModelSpec:
    """A manifest entry describing a real file's bytes, fetched from ``urls``."""
    return ModelSpec(
        name=name,
        task="test",
        file=file or payload.name,
        sha256=file_sha256(payload),
        size=payload.stat().st_size,
        licence="test",
        inputs="test",
        sources=tuple({"url": url} for url in urls),
    )


def serve(served: ServedFiles, base: str, payload: Path) -> str:
    served.files["/" + payload.name] = payload.read_bytes()
    return f"{base}/{payload.name}"


def test_download_verifies_and_reports_progress(tmp_path, server):
    base, served = server
    spec = spec_for("big", BIG_MODEL, [serve(served, base, BIG_MODEL)])
    store = ModelStore(tmp_path, {"big": spec})
    calls: list[tuple[int, int]] = []

    path = store.fetch("big", progress=lambda done, total: calls.append((done, total)))

    assert path == tmp_path / "big" / spec.sha256[:16] / BIG_MODEL.name
    assert file_sha256(path) == spec.sha256
    assert len(calls) > 2
    done_values = [done for done, _ in calls]
    assert done_values == sorted(done_values) and len(set(done_values)) == len(done_values)
    assert calls[-1] == (spec.size, spec.size)
    assert {total for _, total in calls} == {spec.size}
    assert not path.with_name(path.name + ".part").exists()


def test_wrong_hash_fails_each_source_clearly_and_leaves_nothing(tmp_path, server):
    base, served = server
    url = serve(served, base, SMALL_MODEL)
    wrong = spec_for("probe", SMALL_MODEL, [f"{base}/missing.onnx", url]).model_copy(
        update={"sha256": hashlib.sha256(b"other bytes").hexdigest()}
    )
    store = ModelStore(tmp_path / "models", {"probe": wrong}, mirror=tmp_path / "empty")

    with pytest.raises(ModelUnavailable) as failure:
        store.path("probe")

    reasons = failure.value.reasons
    assert len(reasons) == 3
    assert "mirror" in reasons[0] and "no file" in reasons[0]
    assert "missing.onnx" in reasons[1] and "HTTP 404" in reasons[1]
    assert reasons[2].startswith(url) and "sha256 mismatch" in reasons[2]
    assert wrong.sha256 in reasons[2] and file_sha256(SMALL_MODEL) in reasons[2]
    assert "sha256 mismatch" in str(failure.value)
    version_dir = store.stored_path("probe").parent
    assert [p.name for p in version_dir.iterdir()] == []


def test_broken_download_resumes_with_range_request(tmp_path, server):
    base, served = server
    spec = spec_for("big", BIG_MODEL, [serve(served, base, BIG_MODEL)])
    store = ModelStore(tmp_path, {"big": spec})
    cut = 5_000_000
    served.cut_next_response_after = cut

    with pytest.raises(ModelUnavailable) as failure:
        store.fetch("big")
    assert "kept in" in failure.value.reasons[0] and "next try resumes" in failure.value.reasons[0]
    part = store.stored_path("big").with_name(BIG_MODEL.name + ".part")
    assert part.stat().st_size == cut
    assert not store.stored_path("big").exists()

    calls: list[tuple[int, int]] = []
    path = store.fetch("big", progress=lambda done, total: calls.append((done, total)))

    assert served.requests[-1] == ("/" + BIG_MODEL.name, f"bytes={cut}-")
    assert calls[0][0] > cut and calls[-1] == (spec.size, spec.size)
    assert file_sha256(path) == spec.sha256
    assert not part.exists()


def test_server_without_range_support_restarts(tmp_path, server):
    base, served = server
    served.supports_range = False
    spec = spec_for("big", BIG_MODEL, [serve(served, base, BIG_MODEL)])
    store = ModelStore(tmp_path, {"big": spec})
    served.cut_next_response_after = 3_000_000
    with pytest.raises(ModelUnavailable):
        store.fetch("big")

    calls: list[tuple[int, int]] = []
    path = store.fetch("big", progress=lambda done, total: calls.append((done, total)))

    assert served.requests[-1][1] == "bytes=3000000-"  # asked, but got the whole file
    assert calls[0][0] <= 3_000_000 and calls[-1] == (spec.size, spec.size)
    assert file_sha256(path) == spec.sha256


def test_fetch_from_mirror_copies_and_verifies(tmp_path, server):
    base, served = server
    spec = spec_for("tagger", OTHER_MODEL, [serve(served, base, OTHER_MODEL)])
    store = ModelStore(tmp_path, {"tagger": spec}, mirror=SHARED_MODELS)
    calls: list[tuple[int, int]] = []

    path = store.fetch("tagger", progress=lambda d, t: calls.append((d, t)))

    assert path == store.stored_path("tagger")
    assert path.read_bytes() == OTHER_MODEL.read_bytes()
    assert calls[-1] == (OTHER_MODEL.stat().st_size,) * 2
    assert served.requests == []  # the mirror comes before any URL


def test_label_files_are_made_from_the_packages_that_ship_them(tmp_path):
    manifest = load_manifest()
    store = ModelStore(tmp_path, manifest)  # no mirror

    for name in ("imagenet_labels", "musicnn_msd_labels", "musicnn_mtt_labels"):
        path = store.path(name)
        assert path == store.stored_path(name) and file_sha256(path) == manifest[name].sha256
        assert path.read_bytes() == (SHARED_MODELS / manifest[name].file).read_bytes()
    assert store.path("imagenet_labels").read_text().startswith("n01440764\ttench\n")


def test_dlib_files_come_verified_from_the_python_package(tmp_path):
    manifest = load_manifest()
    store = ModelStore(tmp_path, manifest)

    for name in ("dlib_face_landmarks_5", "dlib_face_embedder"):
        path = store.path(name)
        assert "face_recognition_models" in path.parts
        assert path.name == manifest[name].file
        assert not store.stored_path(name).exists()  # used in place, not copied

    tampered = manifest["dlib_face_embedder"].model_copy(
        update={"sha256": "0" * 64, "sources": manifest["dlib_face_embedder"].sources[:1]}
    )
    with pytest.raises(ModelUnavailable) as failure:
        ModelStore(tmp_path / "other", {"dlib_face_embedder": tampered}).path("dlib_face_embedder")
    assert failure.value.reasons == [
        (f"python package face_recognition_models: sha256 mismatch: {package_file(tampered)} "
        f"has {manifest['dlib_face_embedder'].sha256}, expected {'0' * 64}")
    ]


def test_present_file_is_not_refetched_nor_rehashed_unless_changed(tmp_path, server):
    base, served = server
    spec = spec_for("small", SMALL_MODEL, [serve(served, base, SMALL_MODEL)])
    path = ModelStore(tmp_path, {"small": spec}).path("small")
    assert len(served.requests) == 1

    fresh_store = ModelStore(tmp_path, {"small": spec})
    assert fresh_store.path("small") == path
    assert fresh_store.fetch("small") == path
    assert len(served.requests) == 1

    # Changed bytes with the size and mtime put back: the change time gives it away, and the
    # store re-hashes, rejects and fetches again.
    stat = path.stat()
    original = path.read_bytes()
    path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fresh_store.path("small") == path
    assert len(served.requests) == 2
    assert path.read_bytes() == original


def test_new_manifest_hash_fetches_beside_the_old_version(tmp_path, server):
    base, served = server
    old = spec_for("detector", SMALL_MODEL, [serve(served, base, SMALL_MODEL)], file="m.onnx")
    new = spec_for("detector", OTHER_MODEL, [serve(served, base, OTHER_MODEL)], file="m.onnx")

    old_path = ModelStore(tmp_path, {"detector": old}).path("detector")
    new_path = ModelStore(tmp_path, {"detector": new}).path("detector")

    assert old_path != new_path and old_path.name == new_path.name == "m.onnx"
    assert old_path.read_bytes() == SMALL_MODEL.read_bytes()
    assert new_path.read_bytes() == OTHER_MODEL.read_bytes()


def test_status_lists_every_model_and_what_is_present(tmp_path):
    manifest = load_manifest()
    store = ModelStore(tmp_path, manifest, mirror=SHARED_MODELS)
    store.path("musicnn_msd_labels")

    rows = {row.name: row for row in store.status()}

    assert set(rows) == set(manifest)
    assert rows["musicnn_msd_labels"].present
    assert rows["musicnn_msd_labels"].path == store.stored_path("musicnn_msd_labels")
    assert rows["dlib_face_embedder"].present  # the installed package ships it
    assert not rows["efficientnet_lite0"].present and rows["efficientnet_lite0"].path is None
    assert rows["efficientnet_lite0"].size == manifest["efficientnet_lite0"].size


def test_every_entry_has_a_real_source_and_its_pinned_bytes(tmp_path):
    """Each hash-pinned entry comes from an installed registry package, as it is or through
    its converter, or from its upstream URL (ONLY_UPSTREAM, or an entry whose fallback a
    package gives: checked against the mirror); a mirror file of the same name holds the
    same bytes, unless the entry is converted here (CONVERTED_HERE)."""
    manifest = load_manifest()
    converting_store = ModelStore(tmp_path, manifest)  # no mirror: derived files are made here

    for spec in manifest.values():
        assert spec.sources, spec.name
        assert all(url.startswith("https://") for url in spec.urls), spec.name
        assert not any("nextcloud/recognize-models" in url for url in spec.urls), spec.name
        if spec.sha256 is None or spec.name in ONLY_UPSTREAM:
            assert spec.urls, spec.name
            assert not (SHARED_MODELS / spec.file).exists(), f"{spec.name}: pin it from the mirror"
            continue
        if spec.fallback is not None and spec.package is None and spec.derivation is None:
            assert spec.urls and manifest[spec.fallback].package is not None, spec.name
            assert file_sha256(SHARED_MODELS / spec.file) == spec.sha256, spec.name
            continue
        assert spec.package is not None or spec.derivation is not None, spec.name
        local = converting_store.fetch(spec.name)
        assert local.stat().st_size == spec.size, spec.name
        assert file_sha256(local) == spec.sha256, spec.name
        mirrored = SHARED_MODELS / spec.file
        if mirrored.exists() and spec.name not in CONVERTED_HERE:
            assert file_sha256(mirrored) == spec.sha256, spec.name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda entry: entry.pop("sha256"), "'probe': sha256: Field required"),
        (lambda entry: entry.update(sha256="ABC123"), "'probe': sha256: String should match"),
        (lambda entry: entry.update(sources=[{"url": "http://x/y"}]), "must be https"),
        (lambda entry: entry.update(sizes=1), "sizes: Extra inputs are not permitted"),
        (lambda entry: entry.update(sha256=None), "set pin_on_first_download: true"),
        (lambda entry: entry.update(pin_on_first_download=True), "only for entries with sha256: null"),
        (lambda entry: entry.update(fallback="probe"), "must be another entry"),
        (
            lambda entry: entry.update(
                sources=[{"derived_from": ["probe", "gone"], "converter": "m:f"}]
            ),
            "derived from unknown model(s) ['gone']",
        ),
    ],
)
def test_manifest_errors_name_the_model_and_the_field(tmp_path, change, message):
    entry = {
        "task": "t",
        "file": "probe.onnx",
        "sha256": "a" * 64,
        "size": 1,
        "licence": "MIT",
        "inputs": "x",
        "sources": [{"url": "https://example.org/probe.onnx"}],
    }
    change(entry)
    path = tmp_path / "manifest.yml"
    path.write_text(yaml.safe_dump({"models": {"probe": entry}}))

    with pytest.raises(ManifestError, match="probe") as failure:
        load_manifest(path)
    assert message in str(failure.value)


def test_a_derived_model_is_made_from_its_source_and_a_failed_conversion_says_why(tmp_path):
    manifest = load_manifest()
    onnx = manifest["dlib_face_embedder_onnx"]
    made = ModelStore(tmp_path / "good", manifest).fetch(onnx.name)
    assert made.name == onnx.file and file_sha256(made) == onnx.sha256

    wrong_converter = onnx.model_copy(
        update={
            "sources": (
                onnx.derivation.model_copy(
                    update={"converter": "ex_app.models.dlib_onnx:chips_to_batch"}
                ),
            )
        }
    )
    broken = {**manifest, onnx.name: wrong_converter}
    with pytest.raises(ModelUnavailable) as raised:
        ModelStore(tmp_path / "bad", broken).fetch(onnx.name)
    assert "conversion of dlib_face_embedder" in str(raised.value)
    assert not list((tmp_path / "bad" / onnx.name).rglob("*.onnx"))


def unpinned_spec(name: str, published_size: int, urls: list[str]) -> ModelSpec:
    """A manifest entry whose hash could not be learned: pinned on first download."""
    return ModelSpec(
        name=name, task="test", file="model.bin", sha256=None, pin_on_first_download=True,
        size=published_size, licence="test", inputs="test",
        sources=tuple({"url": url} for url in urls),
    )


def test_entry_without_hash_pins_its_first_download_and_holds_later_copies_to_it(
    tmp_path, server, caplog
):
    base, served = server
    url = serve(served, base, SMALL_MODEL)
    spec = unpinned_spec("probe", OTHER_MODEL.stat().st_size, [url])  # published: about
    store = ModelStore(tmp_path, {"probe": spec})
    calls: list[tuple[int, int]] = []

    with caplog.at_level(logging.WARNING, logger="ex_app.models.store"):
        path = store.fetch("probe", progress=lambda done, total: calls.append((done, total)))

    digest = file_sha256(SMALL_MODEL)
    assert path == tmp_path / "probe" / "pinned" / "model.bin"
    assert path.read_bytes() == SMALL_MODEL.read_bytes()
    assert (path.parent / "pinned.sha256").read_text().strip() == digest
    assert store.expected_sha256("probe") == digest
    assert calls[-1] == (SMALL_MODEL.stat().st_size,) * 2  # as the server's length says
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and digest in warnings[0] and "no sha256" in warnings[0]

    # Present and pinned: neither downloaded nor pinned again.
    caplog.clear()
    assert ModelStore(tmp_path, {"probe": spec}).path("probe") == path
    assert len(served.requests) == 1 and not caplog.records

    # Upstream's bytes change: a new copy no longer matches the pin, and nothing replaces it.
    path.unlink()
    served.files["/" + SMALL_MODEL.name] = OTHER_MODEL.read_bytes()
    with pytest.raises(ModelUnavailable) as failure:
        ModelStore(tmp_path, {"probe": spec}).fetch("probe")
    assert "sha256 mismatch" in failure.value.reasons[0]
    assert f"pinned on first download {digest}" in failure.value.reasons[0]
    assert not path.exists() and store.expected_sha256("probe") == digest


def test_entry_without_hash_refuses_a_file_far_larger_than_published(tmp_path, server):
    base, served = server
    url = serve(served, base, BIG_MODEL)
    store = ModelStore(tmp_path, {"probe": unpinned_spec("probe", 1_000_000, [url])})

    with pytest.raises(ModelUnavailable) as failure:
        store.fetch("probe")

    assert f"{BIG_MODEL.stat().st_size} bytes, far more than the published 1000000" in str(
        failure.value
    )
    assert store.expected_sha256("probe") is None
    assert not (tmp_path / "probe" / "pinned" / "pinned.sha256").exists()


def test_entry_without_hash_resumes_a_broken_download_before_pinning(tmp_path, server):
    base, served = server
    url = serve(served, base, BIG_MODEL)
    store = ModelStore(tmp_path, {"probe": unpinned_spec("probe", 18_000_000, [url])})
    served.cut_next_response_after = 4_000_000

    with pytest.raises(ModelUnavailable) as failure:
        store.fetch("probe")
    assert "kept in" in failure.value.reasons[0] and "next try resumes" in failure.value.reasons[0]
    assert store.expected_sha256("probe") is None  # a part file is never pinned

    path = store.fetch("probe")
    assert served.requests[-1][1] == "bytes=4000000-"
    assert store.expected_sha256("probe") == file_sha256(BIG_MODEL) == file_sha256(path)


def test_the_new_entries_carry_upstream_urls_and_say_how_they_are_verified():
    manifest = load_manifest()
    new = ["movinet_a0_stream", "kinetics600_labels"] + [
        f"landmarks_{region}{suffix}"
        for region in ("africa", "asia", "europe", "north_america", "south_america",
                       "oceania_antarctica")
        for suffix in ("", "_labels")
    ]
    for name in new:
        spec = manifest[name]
        # a file made here by a converter needs no download of its own
        assert spec.urls or spec.derivation, spec.name
        assert all(url.startswith("https://") for url in spec.urls), name
        assert (spec.sha256 is None) == spec.pin_on_first_download, name
    assert manifest["movinet_a0_stream"].file.endswith(".tflite")
    assert all(manifest[f"landmarks_{r}"].file.endswith(".tflite") for r in ("asia", "europe"))
    assert manifest["kinetics600_labels"].sha256 is not None  # its hash is known


def test_a_model_no_source_gives_falls_back_to_its_lesser_entry(tmp_path, server, caplog):
    base, served = server
    primary = spec_for("detector", SMALL_MODEL, [f"{base}/{SMALL_MODEL.name}"])
    primary = primary.model_copy(update={"fallback": "lesser"})
    lesser = spec_for("lesser", OTHER_MODEL, [serve(served, base, OTHER_MODEL)])
    store = ModelStore(tmp_path, {"detector": primary, "lesser": lesser})
    assert store.local_path("detector") is None

    with caplog.at_level(logging.WARNING, logger="ex_app.models.store"):
        path = store.fetch("detector")
        assert store.fetch("detector") == path

    assert path == store.stored_path("lesser") and path.read_bytes() == OTHER_MODEL.read_bytes()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "using its fallback lesser" in warnings[0]  # once, with why
    assert "HTTP 404" in warnings[0]
    assert store.local_path("detector") == path
    assert store.version_sha256("detector") == lesser.sha256  # results say which model

    served.files["/" + SMALL_MODEL.name] = SMALL_MODEL.read_bytes()  # the better one appears
    assert store.fetch("detector") == store.stored_path("detector")
    assert store.version_sha256("detector") == primary.sha256

    gone = {"detector": primary.model_copy(update={"sources": (UrlSource(url=f"{base}/x"),)}),
            "lesser": lesser.model_copy(update={"sources": (UrlSource(url=f"{base}/y"),)})}
    with pytest.raises(ModelUnavailable) as failure:
        ModelStore(tmp_path / "fresh", gone).fetch("detector")
    assert any(r.startswith("fallback ") and "HTTP 404" in r for r in failure.value.reasons)


def test_an_unreachable_source_says_nothing_was_kept_and_what_to_do(tmp_path):
    spec = spec_for("probe", SMALL_MODEL, ["http://127.0.0.1:9/probe.onnx"])  # discard port
    store = ModelStore(tmp_path, {"probe": spec})

    with pytest.raises(ModelUnavailable) as failure:
        store.fetch("probe")

    assert "download broke off after 0 of" in failure.value.reasons[0]
    assert "nothing was kept" in failure.value.reasons[0]
    assert not store.stored_path("probe").with_name(SMALL_MODEL.name + ".part").exists()
    message = str(failure.value)
    assert "To fix:" in message and "--model-mirror" in message and spec.sha256 in message
