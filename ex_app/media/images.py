"""Image decoding: any photo Recognize reads, as an upright 8-bit RGB array no larger than asked.

Every failure, whatever the file holds, is a ``MediaError`` whose message says what is wrong
with the file. Size limits are checked on the declared size, before any pixel is decoded.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError
from pillow_heif import register_heif_opener

from ex_app.media.errors import MediaError

register_heif_opener()

# Pillow's names of the formats Recognize reads (JPEG also opens MPO, a JPEG with extra frames);
# any other content is "not an image", so no exotic or external decoder is ever reached.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF")
_FORMATS_IN_WORDS = "JPEG, PNG, WebP, GIF, TIFF, BMP or HEIC/HEIF"

# The transpose that turns the stored pixels upright, for each EXIF orientation but 1.
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})
# Modes that Pillow resamples as they are (RGBA with premultiplied alpha), so downscaling can
# come before the conversion to RGB.
_RESIZES_AS_IS = frozenset({"L", "RGB", "RGBA"})

# Guards the moment Pillow's process-wide bomb limit is lifted so that max_pixels rules alone.
_pillow_limit_lock = threading.Lock()


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for the analyzers."""

    pixels: np.ndarray  # H×W×3 uint8 RGB, C-contiguous
    original_size: tuple[int, int]  # (width, height) after EXIF orientation, before downscaling
    scale: float  # pixels size / original size (≤ 1)
    format: str  # Pillow's name of the file format: "JPEG", "PNG", "HEIF", ...


def decode_image(source: Path | bytes, max_side: int, max_pixels: int) -> DecodedImage:
    """Decode a file (or its bytes) upright, in RGB, downscaled so its longer side ≤ max_side.

    Raises MediaError for anything that is not a readable image of at most max_pixels pixels.
    """
    if isinstance(source, bytes):
        return _decode(io.BytesIO(source), max_side, max_pixels)
    with open_file(source) as stream:
        return _decode(stream, max_side, max_pixels)


def open_file(path: Path) -> BinaryIO:
    """The file opened for reading; MediaError if it cannot be, or is no regular file (a FIFO
    or a device would block the reader or never end)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise MediaError(f"cannot read file: {error.strerror or error}") from error
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise MediaError("not a regular file: a pipe, a device or a socket")
    return os.fdopen(descriptor, "rb")


def _decode(stream: BinaryIO, max_side: int, max_pixels: int) -> DecodedImage:
    if stream.seek(0, io.SEEK_END) == 0:  # the position at the end is the size
        raise MediaError("empty file")
    with _open_header(stream) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise MediaError(f"image too large: {width}×{height} pixels exceeds the limit of "
                             f"{max_pixels:,}")
        try:
            return _upright_rgb(image, max_side)
        except Exception as error:  # Pillow's decoders raise many types on damaged data
            raise _damage(image.format, error) from error


def _open_header(stream: BinaryIO) -> ImageFile.ImageFile:
    """Identify the format and read the header, not the pixels.

    Pillow's own bomb check is off meanwhile: the caller applies max_pixels, which may differ.
    """
    with _pillow_limit_lock:
        pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(stream, formats=FORMATS)
        except UnidentifiedImageError as error:
            raise MediaError(f"not an image: the content is not {_FORMATS_IN_WORDS}") from error
        except Exception as error:  # a known format whose decoder rejects the header
            message = f"damaged image: its header cannot be read ({_describe(error)})"
            raise MediaError(message) from error
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit


def _upright_rgb(image: ImageFile.ImageFile, max_side: int) -> DecodedImage:
    """Decode the opened image at reduced size, convert to RGB, downscale, then turn upright."""
    width, height = image.size
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1:
        image.draft(None, size)  # JPEG decodes at 1/2, 1/4 or 1/8; HEIF may use a thumbnail
    image.load()
    # Read after loading: some decoders (TIFF, HEIF) turn the pixels themselves and drop the tag.
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    # Downscale before converting where the result is the same, so that no full-size copy is
    # made: a large PNG decodes at full size, and its RGB copy would double that memory.
    resizes_as_is = image.mode in _RESIZES_AS_IS and "transparency" not in image.info
    rgb = image if resizes_as_is else _to_rgb(image)
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    rgb = _to_rgb(rgb) if resizes_as_is else rgb
    if orientation in _UPRIGHT:
        rgb = rgb.transpose(_UPRIGHT[orientation])
    return DecodedImage(
        pixels=np.array(rgb),  # a writable, C-contiguous copy
        original_size=(height, width) if orientation in _SWAPS_SIDES else (width, height),
        scale=scale,
        format=image.format or "unknown")


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit greyscale scaled down (not clipped), transparency laid over white."""
    if image.mode.startswith("I"):  # I;16, I;16B, ... and I: 16-bit greyscale
        high_bytes = np.clip(np.asarray(image), 0, 65535) >> 8
        image = Image.fromarray(high_bytes.astype(np.uint8))
    if image.has_transparency_data:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _damage(image_format: str | None, error: Exception) -> MediaError:
    """The MediaError for a file whose header was read but whose pixels could not be."""
    kind = image_format or "image"
    if isinstance(error, OSError) and "truncated" in str(error):
        return MediaError(f"truncated {kind} file: the image data ends early ({error})")
    return MediaError(f"damaged {kind} file: cannot decode the image data ({_describe(error)})")


def _describe(error: Exception) -> str:
    """The decoder's own words, or the error's type when it has none."""
    return str(error).strip() or type(error).__name__
