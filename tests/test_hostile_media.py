"""Hostile files: bombs, huge dimensions, nested and looping containers, playlists, endless and
changing files. Each ends in a result or a MediaError, in bounded time and memory.

The inputs are made here from real files in ../shared/data; fuzz/run.py searches for more
(every failing input it finds belongs here as a regression test).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA
from PIL import Image

from ex_app.config import Settings
from ex_app.media.audio import decode_audio
from ex_app.media.errors import MediaError
from ex_app.media.gps import read_gps
from ex_app.media.images import decode_image
from ex_app.media.video import probe_video, read_video

PHOTO = SHARED_DATA / "images" / "n01491361_tiger_shark.JPEG"
SONG = SHARED_DATA / "music" / "TRWJAZW128F42760DD_test.mp3"  # 30 s
LIMITS = Settings(data_dir=REPO / "build" / "unused")  # the shipped defaults
MAX_PIXELS, MAX_SIDE = LIMITS.images.max_pixels, LIMITS.images.max_side


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zeros_png(side: int, colour_type: int = 0) -> bytes:
    """A complete, valid PNG of side × side pixels, all one grey: kilobytes that inflate to
    hundreds of megabytes."""
    channels = {0: 1, 2: 3}[colour_type]
    row = b"\x00" + b"\x80" * (side * channels)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def small(fmt: str, **options) -> bytes:
    with Image.open(PHOTO) as photo:
        image = photo.convert("RGB").resize((16, 12))
    stream = io.BytesIO()
    (image.convert("P") if fmt == "GIF" else image).save(stream, fmt, **options)
    return stream.getvalue()


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(small("GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    frame = data.index(b"\x2c", 13)
    data[frame + 5 : frame + 9] = struct.pack("<HH", width, height)  # the image descriptor
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header declares width × height (at most 16384 each)."""
    data = small("WEBP", lossless=True)
    assert data[12:16] == b"VP8L"
    payload = bytearray(data[20:])
    (bits,) = struct.unpack("<I", payload[1:5])
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    payload[1:5] = struct.pack("<I", bits)
    body = b"WEBP" + b"VP8L" + data[16:20] + bytes(payload)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_declaring(width: int, height: int) -> bytes:
    data = bytearray(small("JPEG"))
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    data = bytearray(small("BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def heic_declaring(width: int, height: int) -> bytes:
    """A HEIC whose image spatial extents ("ispe") declare width × height."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    data = bytearray(small("HEIF"))
    at = data.index(b"ispe")
    data[at + 8 : at + 16] = struct.pack(">II", width, height)  # after version and flags
    return bytes(data)


def tiff_ifds(data: bytes) -> tuple[bytearray, int, int]:
    """A little-endian TIFF's bytes, its first IFD's offset and entry count."""
    tiff = bytearray(data)
    assert tiff[:2] == b"II"
    (first,) = struct.unpack("<I", tiff[4:8])
    (count,) = struct.unpack("<H", tiff[first : first + 2])
    return tiff, first, count


def tiff_declaring(width: int, height: int) -> bytes:
    tiff, first, count = tiff_ifds(small("TIFF"))
    for entry in range(first + 2, first + 2 + 12 * count, 12):
        tag, kind = struct.unpack("<HH", tiff[entry : entry + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            tiff[entry + 8 : entry + 12] = struct.pack("<I" if kind == 4 else "<HH", *(
                (value,) if kind == 4 else (value, 0)))
    return bytes(tiff)


def tiff_looping() -> bytes:
    """A TIFF whose IFD chain comes back to its first IFD: endless pages."""
    tiff, first, count = tiff_ifds(small("TIFF"))
    end = first + 2 + 12 * count
    tiff[end : end + 4] = struct.pack("<I", first)
    return bytes(tiff)


def tiff_with_pages(pages: int) -> bytes:
    """A TIFF of one real page followed by a chain of `pages` more IFDs copied from it."""
    tiff, first, count = tiff_ifds(small("TIFF"))
    size = 2 + 12 * count + 4
    ifd = bytes(tiff[first : first + size - 4])
    end = first + size - 4
    offset = len(tiff)
    tiff[end : end + 4] = struct.pack("<I", offset)
    chain = bytearray()
    for page in range(pages):
        following = offset + size * (page + 1) if page + 1 < pages else 0
        chain += ifd + struct.pack("<I", following)
    return bytes(tiff + chain)


def mp4_with_nested_atoms(depth: int) -> bytes:
    atoms = b""
    for _ in range(depth):
        atoms = struct.pack(">I", 8 + len(atoms)) + b"moov" + atoms
    return struct.pack(">I", 16) + b"ftypisom" + b"\0\0\0\0" + atoms


def measure_in_subprocess(inputs: dict[str, bytes], tmp_path: Path) -> dict[str, dict]:
    """Decode each input in a fresh process: seconds, peak memory growth (MB) and the outcome."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name, data in inputs.items():
        (folder / name).write_bytes(data)
    script = f"""
import json, resource, sys, time
from pathlib import Path
from ex_app.media.errors import MediaError
from ex_app.media.images import decode_image
results = {{}}
for path in sorted(Path({str(folder)!r}).iterdir()):
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    try:
        outcome = "decoded " + "x".join(map(str, decode_image(path, {MAX_SIDE}, {MAX_PIXELS}).pixels.shape))
    except MediaError as error:
        outcome = "MediaError: " + str(error)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    results[path.name] = {{"seconds": time.monotonic() - start, "mb": growth, "outcome": outcome}}
print(json.dumps(results))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=True)
    return json.loads(done.stdout)


# --- Images ----------------------------------------------------------------------------------


def test_bombs_and_huge_dimensions_are_refused_from_the_header_in_no_time_or_memory(tmp_path):
    bombs = {
        "zeros.png": zeros_png(20_000),  # 400 M pixels in 0.4 MB, a complete valid PNG
        "screen.gif": gif_declaring(65_535, 65_535),
        "lossless.webp": webp_declaring(16_384, 16_384),
        "frame.jpg": jpeg_declaring(65_500, 65_500),
        "header.bmp": bmp_declaring(50_000, 50_000),
        "tags.tif": tiff_declaring(60_000, 60_000),
        "ispe.heic": heic_declaring(60_000, 60_000),
    }
    assert len(bombs["zeros.png"]) < 1_000_000
    results = measure_in_subprocess(bombs, tmp_path)
    for name, result in results.items():
        refused = result["outcome"].startswith("MediaError: image too large") or (
            name == "ispe.heic"  # libheif's own limit refuses it first
            and "MediaError: damaged HEIF file" in result["outcome"]
            and "Security limit exceeded" in result["outcome"])
        assert refused, (name, result)
        assert result["seconds"] < 2 and result["mb"] < 50, (name, result)


def test_a_valid_png_just_under_the_pixel_limit_is_decoded_in_bounded_memory(tmp_path):
    """169 M pixels from 190 KB: decoded at full size (PNG has no reduced decoding), but
    downscaled before any full-size RGB copy is made (that copy alone would be 676 MB)."""
    data = zeros_png(13_000)
    assert 13_000**2 < MAX_PIXELS and len(data) < 250_000
    (result,) = measure_in_subprocess({"big.png": data}, tmp_path).values()
    assert result["outcome"] == f"decoded {MAX_SIDE}x{MAX_SIDE}x3", result
    assert result["mb"] < 450, result  # 169 MB of grey pixels + the downscaling


@pytest.mark.parametrize("name", ["looping", "10000 pages"])
def test_endless_and_long_tiff_page_chains_end(name):
    data = tiff_looping() if name == "looping" else tiff_with_pages(10_000)
    start = time.monotonic()
    decoded = decode_image(data, MAX_SIDE, MAX_PIXELS)
    assert decoded.pixels.shape == (12, 16, 3)
    assert read_gps(data) is None
    assert time.monotonic() - start < 5


def test_an_exif_directory_that_points_at_itself_ends(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 1
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)
    data = bytearray(small("JPEG", exif=exif.tobytes()))
    tiff_start = data.index(b"Exif\x00\x00") + 6
    tiff = data[tiff_start:]
    order = "<" if tiff[:2] == b"II" else ">"
    (first,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[first : first + 2])
    pointers = 0
    for entry in range(first + 2, first + 2 + 12 * count, 12):
        if struct.unpack(order + "H", tiff[entry : entry + 2])[0] == 0x8825:  # the GPS IFD…
            data[tiff_start + entry + 8 : tiff_start + entry + 12] = struct.pack(order + "I", first)
            pointers += 1
    assert pointers == 1
    start = time.monotonic()
    assert decode_image(bytes(data), MAX_SIDE, MAX_PIXELS).pixels.shape == (12, 16, 3)
    assert read_gps(bytes(data)) is None  # …is the main directory: no position in it
    assert time.monotonic() - start < 5


REWRITER = """
import sys
path, versions = sys.argv[1], [open(name, "rb").read() for name in sys.argv[2:]]
index = 0
while True:  # in place, as a sync client does, until killed
    index += 1
    with open(path, "r+b", buffering=0) as stream:
        stream.truncate(0)
        stream.write(versions[index % len(versions)])
"""


def test_an_image_rewritten_while_it_is_read_gives_a_result_or_a_media_error(tmp_path):
    path = tmp_path / "changing.jpg"
    whole = PHOTO.read_bytes()
    versions = [whole, whole[: len(whole) // 3], b"", zeros_png(64), b"GIF89a" + os.urandom(500)]
    version_files = []
    for number, content in enumerate(versions):
        version_files.append(tmp_path / f"version-{number}")
        version_files[-1].write_bytes(content)
    path.write_bytes(whole)
    writer = subprocess.Popen([sys.executable, "-c", REWRITER, str(path), *map(str, version_files)])
    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + 120
    try:  # another process rewrites it: reads until the reader has seen it change
        while sum(outcomes.values()) < 300 or (len(outcomes) < 2 and time.monotonic() < deadline):
            try:
                decode_image(path, MAX_SIDE, MAX_PIXELS)
                outcomes["decoded"] = outcomes.get("decoded", 0) + 1
            except MediaError as error:
                key = str(error).split(":")[0]
                outcomes[key] = outcomes.get(key, 0) + 1
    finally:
        writer.kill()
        writer.wait()
    assert len(outcomes) >= 2, outcomes  # the file did change under the reader


# --- Audio and video (FFmpeg) ----------------------------------------------------------------


@pytest.fixture
def listener():
    """A local TCP port that records every connection made to it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    connections: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            with client:
                client.settimeout(1)
                try:
                    connections.append(client.recv(200))
                except OSError:
                    connections.append(b"")

    thread = threading.Thread(target=accept)
    thread.start()
    yield server.getsockname()[1], connections
    stop.set()
    thread.join()
    server.close()


def playlists(folder: Path, port: int) -> dict[str, str]:
    """Media files that are playlists pointing elsewhere: a URL, a local file, themselves."""
    shutil.copy(SONG, folder / "song.mp3")
    url = f"http://127.0.0.1:{port}/segment.ts"
    hls = "#EXTM3U\n#EXT-X-TARGETDURATION:30\n#EXTINF:30,\n{}\n#EXT-X-ENDLIST\n"
    return {
        "hls-url.mp3": hls.format(url),
        "hls-file.mp3": hls.format(SONG),
        "hls-url.mp4": hls.format(url),
        "concat-url.mp3": f"ffconcat version 1.0\nfile '{url}'\n",
        "concat-sibling.mp3": "ffconcat version 1.0\nfile 'song.mp3'\nfile 'song.mp3'\n",
        "concat-itself.m4a": "ffconcat version 1.0\nfile 'concat-itself.m4a'\n",
        "concat-sibling.mkv": "ffconcat version 1.0\nfile 'song.mp3'\n",
    }


def test_playlists_named_as_media_are_refused_and_open_nothing(tmp_path, listener):
    port, connections = listener
    for name, text in playlists(tmp_path, port).items():
        path = tmp_path / name
        path.write_text(text)
        decode = (lambda p: probe_video(p, 10)) if path.suffix in (".mp4", ".mkv") else (
            lambda p: decode_audio(p, 16_000, 30, 10))
        with pytest.raises(MediaError, match="a playlist or another format"):
            decode(path)
    time.sleep(0.3)
    assert connections == []


def test_a_song_still_decodes_through_the_limited_inputs():
    decoded = decode_audio(SONG, 16_000, 30, 60)
    assert 29 < decoded.seconds < 31 and decoded.codec == "mp3"


def test_deeply_nested_mp4_atoms_are_a_media_error(tmp_path):
    path = tmp_path / "deep.mp4"
    path.write_bytes(mp4_with_nested_atoms(20_000))
    start = time.monotonic()
    with pytest.raises(MediaError, match="not a readable video file"):
        probe_video(path, 10)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "dev-urandom"])
def test_endless_special_files_are_refused_at_once(tmp_path, kind):
    path = tmp_path / f"{kind}.mp3"
    if kind == "fifo":
        os.mkfifo(path)  # nothing ever writes: a reader would wait forever
    else:
        path.symlink_to("/dev/" + kind.removeprefix("dev-"))
    start = time.monotonic()
    with pytest.raises(MediaError, match="empty file"):
        decode_audio(path, 16_000, 30, 10)
    with pytest.raises(MediaError, match="empty file"):
        read_video(path, 4, 1.0, 256, 10)
    with pytest.raises(MediaError, match="not a regular file"):
        decode_image(path, 64, 10**6)
    with pytest.raises(MediaError, match="not a regular file"):
        read_gps(path)
    assert time.monotonic() - start < 2


def test_a_file_that_grows_without_end_is_cut_at_max_seconds(tmp_path):
    """A song still being appended to (an upload in progress, a stream captured to disk)."""
    path = tmp_path / "growing.mp3"
    song = SONG.read_bytes()
    path.write_bytes(song)
    stop = threading.Event()

    def grow() -> None:
        with open(path, "ab") as stream:
            while not stop.is_set():
                stream.write(song[len(song) // 2 :])
                stream.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=grow)
    writer.start()
    start = time.monotonic()
    try:
        decoded = decode_audio(path, 16_000, 20, 30)
    except MediaError as error:
        decoded = error
    finally:
        stop.set()
        writer.join()
    assert time.monotonic() - start < 30
    assert isinstance(decoded, MediaError) or decoded.seconds <= 20.01


def test_a_song_cut_short_while_it_is_decoded_is_a_result_or_a_media_error(tmp_path):
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
        path = tmp_path / f"cut-{delay}.mp3"
        shutil.copy(SONG, path)
        cutter = threading.Timer(delay, lambda p=path: os.truncate(p, 5_000))
        cutter.start()
        try:
            decode_audio(path, 16_000, 30, 30)
        except MediaError as error:
            assert "audio" in str(error) or "empty" in str(error)
        finally:
            cutter.join()


def test_decoding_past_its_time_limit_is_killed_and_a_media_error():
    start = time.monotonic()
    with pytest.raises(MediaError, match=r"could not be (read|decoded) within 0.05 s"):
        decode_audio(SONG, 16_000, 30, 0.05)
    assert time.monotonic() - start < 2
