"""Where a photo was taken: the GPS latitude and longitude in its EXIF metadata.

Reads JPEG, HEIC/HEIF, TIFF, WebP and PNG (an ``eXIf`` chunk before the image data, where
libpng and Pillow write it) from the header alone; no pixel is decoded. Most photos
carry no position, and some carry a broken one (zero denominators, values out of range,
unknown hemisphere references, a damaged GPS directory): all of these read as ``None``.
"""

from __future__ import annotations

import io
import logging
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import ExifTags, Image, UnidentifiedImageError

from ex_app.media.errors import MediaError
from ex_app.media.images import FORMATS, open_file

log = logging.getLogger(__name__)

# The signs of each hemisphere reference; a missing reference reads as N or E, as ExifTool does.
_LATITUDE_SIGNS = {"N": 1.0, "S": -1.0}
_LONGITUDE_SIGNS = {"E": 1.0, "W": -1.0}


@dataclass(frozen=True)
class GpsPosition:
    """A point on Earth in decimal degrees (WGS 84): south and west are negative."""

    latitude: float  # -90..90
    longitude: float  # -180..180


def read_gps(source: Path | bytes) -> GpsPosition | None:
    """The position recorded in a photo's EXIF, or None when it has none or a broken one.

    Raises MediaError only when the file cannot be read or is not an image.
    """
    if isinstance(source, bytes):
        return _read(io.BytesIO(source))
    with open_file(source) as stream:
        return _read(stream)


def _read(stream: BinaryIO) -> GpsPosition | None:
    try:
        image = Image.open(stream, formats=FORMATS)
    except UnidentifiedImageError as error:
        raise MediaError("not an image: no GPS position can be read") from error
    except Image.DecompressionBombError:
        # Pillow refuses to open images this large; the decoder's own limit decides about them.
        log.debug("image too large for Pillow to open: no GPS position read")
        return None
    except Exception as error:  # a known format whose decoder rejects the header
        raise MediaError(f"damaged image: its header cannot be read ({error})") from error
    with image:
        if image.format == "PNG" and "exif" not in image.info:
            return None  # reading further would decode the pixels
        try:
            gps = image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        except Exception as error:  # noqa: BLE001  Pillow raises many types on damaged EXIF
            log.debug("unreadable EXIF: %s", error)
            return None
    return _position(gps)


def _position(gps: dict[int, Any]) -> GpsPosition | None:
    """The position in an EXIF GPS directory (tag → value), or None if absent or invalid."""
    if _text(gps.get(ExifTags.GPS.GPSStatus)) == "V":  # the receiver said: no valid fix
        return None
    latitude = _coordinate(
        gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), _LATITUDE_SIGNS, 90
    )
    longitude = _coordinate(gps.get(ExifTags.GPS.GPSLongitude),
                            gps.get(ExifTags.GPS.GPSLongitudeRef), _LONGITUDE_SIGNS, 180)
    # 0, 0 is what cameras without a fix write
    if latitude is None or longitude is None or (latitude == 0 and longitude == 0):
        return None
    return GpsPosition(latitude, longitude)


def _coordinate(value: Any, reference: Any, signs: dict[str, float], limit: float) -> float | None:
    """Signed decimal degrees from EXIF (degrees, minutes, seconds) and a hemisphere letter."""
    degrees = _degrees(value)
    if degrees is None or abs(degrees) > limit:
        return None
    letter = _text(reference)
    if letter is None:
        return degrees
    if letter not in signs:
        return None
    return signs[letter] * abs(degrees)


def _degrees(value: Any) -> float | None:
    """Decimal degrees from 1 to 3 rationals (degrees[, minutes[, seconds]]), None if invalid.

    Signed degrees (SRATIONAL, written by some tools instead of a reference) keep their sign.
    """
    parts = value if isinstance(value, tuple) else (value,)
    if not (1 <= len(parts) <= 3 and all(isinstance(part, numbers.Real) for part in parts)):
        return None
    values = [float(part) for part in parts]  # a rational with a zero denominator gives NaN
    if not all(math.isfinite(v) for v in values):
        return None
    degrees, minutes, seconds = (values + [0.0, 0.0])[:3]
    if not (0 <= minutes < 60 and 0 <= seconds < 60):
        return None
    return math.copysign(abs(degrees) + minutes / 60 + seconds / 3600, degrees)


def _text(value: Any) -> str | None:
    """An EXIF ASCII value as upper-case text without padding, or None if absent or empty."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ").upper() or None
