"""The image decoder on real photos, re-encoded in tmp_path into each format, mode and defect."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pillow_heif
import pytest
from PIL import Image

from conftest import REPO, SHARED_DATA
from ex_app.media.errors import MediaError
from ex_app.media.images import DecodedImage, decode_image

PHOTO = SHARED_DATA / "images" / "n01491361_tiger_shark.JPEG"  # 500×313
OTHER_PHOTO = SHARED_DATA / "images" / "n01534433_junco.JPEG"  # 500×375
NO_LIMIT = 10**9
SIDE = 4096

# For each EXIF orientation, the transpose that stores an upright picture so that a viewer
# applying the orientation shows it upright again (the inverse of what the viewer applies).
STORED_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # the viewer turns it 90° clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # the viewer turns it 90° anticlockwise
}


def rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def decode(source: Path | bytes, max_side: int = SIDE, max_pixels: int = NO_LIMIT) -> DecodedImage:
    return decode_image(source, max_side=max_side, max_pixels=max_pixels)


def assert_rgb_array(image: DecodedImage, width: int, height: int) -> None:
    assert image.pixels.shape == (height, width, 3)
    assert image.pixels.dtype == np.uint8
    assert image.pixels.flags.c_contiguous


def with_orientation(image: Image.Image, orientation: int) -> tuple[Image.Image, bytes]:
    """The stored pixels and EXIF block that a camera would write for this upright picture."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    transpose = STORED_AS[orientation]
    stored = image.copy() if transpose is None else image.transpose(transpose)
    return stored, exif.tobytes()


def peak_memory_growth_mb(path: Path, max_side: int, max_pixels: int) -> tuple[float, str]:
    """How far above its resident memory a fresh process peaks while it decodes path (Linux),
    and the MediaError it got, if any."""
    script = f"""
import json, re
from pathlib import Path
from ex_app.media.errors import MediaError
from ex_app.media.images import decode_image
def kilobytes(field):
    return int(re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])
resident, error = kilobytes("VmRSS"), ""
try:
    decode_image(Path({str(path)!r}), max_side={max_side}, max_pixels={max_pixels})
except MediaError as caught:
    error = str(caught)
print(json.dumps([(kilobytes("VmHWM") - resident) / 1024, error]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    growth_mb, error = json.loads(done.stdout)
    return growth_mb, error


def write_png_bomb(path: Path, side: int = 30_000) -> None:
    """A valid greyscale PNG of side × side black pixels, every row present, in a few MB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)

    thousand_rows = bytes((side + 1) * 1000)  # each row: filter type 0, then black pixels
    deflate = zlib.compressobj(1)
    idat = b"".join(deflate.compress(thousand_rows) for _ in range(side // 1000)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return rgb(PHOTO)


@pytest.fixture(scope="module")
def png_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30,000 × 30,000 pixels: 900 MB as greyscale, 3.6 GB in Pillow's RGB."""
    path = tmp_path_factory.mktemp("bomb") / "huge.png"
    write_png_bomb(path)
    return path


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory, photo: Image.Image) -> Path:
    """A 6000×3756 JPEG (22.5 megapixels) upscaled from a real photo."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    photo.resize((6000, 3756), Image.Resampling.BICUBIC).save(path, quality=90)
    return path


# Formats: shape, dtype and colours ------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "save_options", "tolerance"),
    [
        (".png", {}, 0.0),
        (".webp", {"lossless": True}, 0.0),
        (".tiff", {}, 0.0),
        (".tif", {"compression": "tiff_lzw"}, 0.0),
        (".bmp", {}, 0.0),
        (".gif", {}, 12.0),  # 256-colour palette
        (".webp", {"quality": 90}, 6.0),
        (".jpg", {"quality": 92}, 4.0),
        (".heic", {"quality": 90}, 6.0),
    ],
)
def test_each_format_decodes_to_the_photos_colours(
    tmp_path: Path, photo: Image.Image, suffix: str, save_options: dict, tolerance: float
) -> None:
    path = tmp_path / f"photo{suffix}"
    photo.save(path, **save_options)
    image = decode(path)
    assert_rgb_array(image, *photo.size)
    assert image.original_size == photo.size
    assert image.scale == 1.0
    assert mean_abs_diff(image.pixels, np.asarray(photo)) <= tolerance
    assert image.format == Image.registered_extensions()[suffix]


def test_the_original_jpeg_matches_pillows_own_decode(photo: Image.Image) -> None:
    image = decode(PHOTO)
    assert image.format == "JPEG"
    assert np.array_equal(image.pixels, np.asarray(photo))
    assert image.pixels.flags.writeable


@pytest.mark.parametrize("mode", ["L", "P", "1", "CMYK", "LA"])
def test_other_modes_become_rgb(tmp_path: Path, photo: Image.Image, mode: str) -> None:
    converted = photo.convert(mode)
    path = tmp_path / ("photo.jpg" if mode == "CMYK" else "photo.png")
    converted.save(path, quality=95)
    image = decode(path)
    assert_rgb_array(image, *photo.size)
    expected = np.asarray(converted.convert("RGB"))
    assert mean_abs_diff(image.pixels, expected) <= (3.0 if mode == "CMYK" else 0.0)


def test_transparency_lies_over_white(tmp_path: Path, photo: Image.Image) -> None:
    rgba = photo.convert("RGBA")
    alpha = np.full((photo.height, photo.width), 255, np.uint8)
    alpha[:, : photo.width // 2] = 0  # left half fully transparent
    alpha[:, photo.width // 2 :: 2] = 128  # half the right half's columns half transparent
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "alpha.png")
    pixels = decode(tmp_path / "alpha.png").pixels.astype(np.int16)
    original = np.asarray(photo).astype(np.int16)
    half = photo.width // 2
    assert (pixels[:, :half] == 255).all()
    assert np.abs(pixels[:, half + 1 :: 2] - original[:, half + 1 :: 2]).max() == 0
    over_white = (original[:, half::2] * 128.0 + 255 * 127) / 255
    assert np.abs(pixels[:, half::2] - over_white).max() <= 1.0


def test_transparent_palette_gif_lies_over_white(tmp_path: Path, photo: Image.Image) -> None:
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    palette.paste(255, (0, 0, 50, 50))  # an index no colour uses, declared transparent
    palette.save(tmp_path / "transparent.gif", transparency=255)
    pixels = decode(tmp_path / "transparent.gif").pixels
    assert (pixels[:50, :50] == 255).all()
    assert mean_abs_diff(pixels[50:, 50:], np.asarray(photo)[50:, 50:]) < 12


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_images_are_scaled_not_clipped(
    tmp_path: Path, photo: Image.Image, suffix: str, channels: int
) -> None:
    eight_bit = np.asarray(photo if channels == 3 else photo.convert("L"))
    sixteen_bit = eight_bit.astype(np.uint16) * 257  # 255 → 65535
    path = tmp_path / f"deep{suffix}"
    assert cv2.imwrite(str(path), sixteen_bit[..., ::-1] if channels == 3 else sixteen_bit)
    image = decode(path)
    expected = eight_bit if channels == 3 else np.repeat(eight_bit[..., None], 3, axis=2)
    assert mean_abs_diff(image.pixels, expected) == 0.0


def test_gif_gives_the_first_frame(tmp_path: Path, photo: Image.Image) -> None:
    second = rgb(OTHER_PHOTO).resize(photo.size)
    photo.save(tmp_path / "animated.gif", save_all=True, append_images=[second], duration=500)
    with Image.open(tmp_path / "animated.gif") as written:
        assert written.n_frames == 2
    pixels = decode(tmp_path / "animated.gif").pixels
    to_first = mean_abs_diff(pixels, np.asarray(photo))
    assert to_first < 12
    assert mean_abs_diff(pixels, np.asarray(second)) > 3 * to_first


def test_heic_round_trip_through_pillow_heif(tmp_path: Path, photo: Image.Image) -> None:
    path = tmp_path / "photo.heic"
    pillow_heif.from_pillow(photo).save(path, quality=85)
    assert pillow_heif.is_supported(path.read_bytes())
    image = decode(path)
    assert image.format == "HEIF"
    assert_rgb_array(image, *photo.size)
    assert mean_abs_diff(image.pixels, np.asarray(photo)) < 6


# EXIF orientation -----------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(
    tmp_path: Path, photo: Image.Image, orientation: int
) -> None:
    stored, exif = with_orientation(photo, orientation)
    path = tmp_path / f"orientation{orientation}.jpg"
    stored.save(path, quality=95, exif=exif)
    image = decode(path)
    upright = np.asarray(photo)
    assert image.original_size == photo.size
    assert mean_abs_diff(image.pixels, upright) < 3
    # OpenCV applies EXIF orientation on its own: an independent reading of the same file.
    opencv = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
    assert mean_abs_diff(image.pixels, opencv) < 3


def test_the_orientation_photo_is_far_from_its_mirror_images(photo: Image.Image) -> None:
    """Else the orientation tests could not tell a flip or a half turn from the upright photo."""
    upright = np.asarray(photo)
    same_shape = (
        Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_180
    )
    for transpose in same_shape:
        assert mean_abs_diff(np.asarray(photo.transpose(transpose)), upright) > 10


@pytest.mark.parametrize(
    ("suffix", "save_options"),
    [(".png", {}), (".webp", {"lossless": True}), (".tiff", {}), (".heic", {"quality": 90})],
)
def test_orientation_is_read_in_other_formats(
    tmp_path: Path, photo: Image.Image, suffix: str, save_options: dict
) -> None:
    stored, exif = with_orientation(photo, 6)
    path = tmp_path / f"turned{suffix}"
    if suffix == ".tiff":
        stored.save(path, tiffinfo={0x0112: 6})
    else:
        stored.save(path, exif=exif, **save_options)
    image = decode(path)
    assert image.original_size == photo.size
    assert mean_abs_diff(image.pixels, np.asarray(photo)) < 6


# Downscaling ----------------------------------------------------------------------------------


def test_large_jpeg_is_downscaled_to_max_side(big_jpeg: Path) -> None:
    image = decode(big_jpeg, max_side=1000)
    assert image.original_size == (6000, 3756)
    assert image.scale == pytest.approx(1000 / 6000)
    assert_rgb_array(image, 1000, 626)
    reference = rgb(big_jpeg).resize((1000, 626), Image.Resampling.LANCZOS)
    assert mean_abs_diff(image.pixels, np.asarray(reference)) < 2


def test_large_jpeg_decodes_at_reduced_size(big_jpeg: Path) -> None:
    """JPEG draft mode: the 67 MB of full-size RGB pixels are never allocated."""
    growth_mb, error = peak_memory_growth_mb(big_jpeg, max_side=500, max_pixels=NO_LIMIT)
    assert error == ""
    assert growth_mb < 40


def test_downscaling_keeps_the_orientation_and_original_size(
    tmp_path: Path, photo: Image.Image
) -> None:
    stored, exif = with_orientation(photo, 8)
    stored.save(tmp_path / "turned.png", exif=exif)
    image = decode(tmp_path / "turned.png", max_side=250)
    assert image.original_size == (500, 313)
    assert image.scale == 0.5
    assert_rgb_array(image, 250, 156)
    reference = photo.resize((250, 156), Image.Resampling.LANCZOS)
    assert mean_abs_diff(image.pixels, np.asarray(reference)) < 2


def test_small_images_are_not_enlarged(photo: Image.Image) -> None:
    image = decode(PHOTO, max_side=5000)
    assert image.scale == 1.0
    assert_rgb_array(image, *photo.size)


def test_bytes_decode_like_the_path(tmp_path: Path, photo: Image.Image) -> None:
    stored, exif = with_orientation(photo, 6)
    stored.save(tmp_path / "turned.jpg", exif=exif)
    from_path = decode(tmp_path / "turned.jpg", max_side=300)
    from_bytes = decode((tmp_path / "turned.jpg").read_bytes(), max_side=300)
    assert np.array_equal(from_path.pixels, from_bytes.pixels)
    assert (from_path.original_size, from_path.scale, from_path.format) == (
        from_bytes.original_size, from_bytes.scale, from_bytes.format
    )


# Bad files ------------------------------------------------------------------------------------


def expect_error(source: Path | bytes, *words: str, max_pixels: int = NO_LIMIT) -> str:
    with pytest.raises(MediaError) as caught:
        decode(source, max_pixels=max_pixels)
    message = str(caught.value)
    for word in words:
        assert word in message
    return message


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").touch()
    expect_error(tmp_path / "empty.jpg", "empty file")
    expect_error(b"", "empty file")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("Shopping list: eggs, flour, milk.\n" * 20)
    expect_error(tmp_path / "notes.jpg", "not an image", "JPEG, PNG")


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "gone.jpg", "cannot read file", "No such file")


def test_first_half_of_a_real_jpeg_is_truncated_not_grey() -> None:
    data = PHOTO.read_bytes()
    expect_error(data[: len(data) // 2], "truncated JPEG file")
    expect_error(data[:-2], "truncated JPEG file")  # only the end marker missing


@pytest.mark.parametrize(
    ("suffix", "words"),
    [
        (".png", ("truncated PNG file",)),
        (".gif", ("truncated GIF file",)),
        (".tiff", ("truncated TIFF file",)),
        (".bmp", ("truncated BMP file",)),
        (".webp", ("damaged",)),
        (".heic", ("damaged HEIF file",)),
    ],
)
def test_first_half_of_other_formats(
    tmp_path: Path, photo: Image.Image, suffix: str, words: tuple[str, ...]
) -> None:
    path = tmp_path / f"photo{suffix}"
    photo.save(path)
    data = path.read_bytes()
    expect_error(data[: len(data) // 2], *words)


def test_png_with_valid_header_and_corrupt_data(tmp_path: Path, photo: Image.Image) -> None:
    photo.save(tmp_path / "photo.png")
    data = bytearray((tmp_path / "photo.png").read_bytes())
    start = data.index(b"IDAT") + 4 + 100
    data[start : start + 4000] = np.random.default_rng(7).bytes(4000)
    (tmp_path / "corrupt.png").write_bytes(bytes(data))
    expect_error(tmp_path / "corrupt.png", "damaged PNG file", "cannot decode")


def test_the_bomb_is_a_complete_png(tmp_path: Path) -> None:
    """The same construction, small enough to decode: all its rows are there."""
    write_png_bomb(tmp_path / "small.png", side=2000)
    image = decode(tmp_path / "small.png")
    assert_rgb_array(image, 2000, 2000)
    assert not image.pixels.any()


def test_pixel_bomb_is_refused_from_its_header(png_bomb: Path) -> None:
    data = png_bomb.read_bytes()
    assert len(data) < 5_000_000
    assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (30_000, 30_000)
    expect_error(
        png_bomb,
        "image too large: 30000×30000 pixels exceeds the limit of 178,956,970",
        max_pixels=178_956_970,
    )


def test_pixel_bomb_costs_no_memory(png_bomb: Path) -> None:
    growth_mb, error = peak_memory_growth_mb(png_bomb, max_side=1920, max_pixels=178_956_970)
    assert error.startswith("image too large")
    assert growth_mb < 200  # decoding it would take 900 MB, then 3.6 GB


def test_limit_is_max_pixels_whatever_pillows_global_limit(
    png_bomb: Path, photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert_rgb_array(decode(PHOTO, max_pixels=500 * 313), *photo.size)  # Pillow would refuse
    expect_error(png_bomb, "image too large: 30000×30000", max_pixels=10**6)
    assert Image.MAX_IMAGE_PIXELS == 1000
    expect_error(PHOTO, "image too large: 500×313 pixels", max_pixels=500 * 313 - 1)

