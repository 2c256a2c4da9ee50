"""Face thumbnails (a square crop around a face) and photo previews, made on first request
and cached on disk by file content. A video's face is cropped from the frame it was found in."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from sqlalchemy.orm import Session

from ex_app.media.errors import MediaError
from ex_app.media.images import decode_image
from ex_app.media.kinds import MediaKind
from ex_app.media.video import read_frame
from ex_app.store import schema

MARGIN = 0.35  # share of the face box added on each side, so the crop shows the whole head
JPEG_QUALITY = 88


class FaceMissing(LookupError):
    """No face with that id."""


def face_thumbnail(
    session: Session, face_id: int, cache_dir: Path, local_file: Callable[[schema.File], Path],
    size: int = 256, max_pixels: int = 178_956_970, video_timeout: float = 120,
) -> Path:
    """The path of a size×size JPEG of the face; cached by file content, face and size.

    ``local_file`` gives a readable path for a file row (the local file, or a download).
    Raises FaceMissing, or MediaError when the photo or the video's frame can no longer be
    decoded (also for a video face found before frame times were recorded).
    """
    face = session.get(schema.Face, face_id)
    if face is None:
        raise FaceMissing(f"no face {face_id}")
    target = thumbnail_path(face, cache_dir, size)
    if target.exists():
        return target
    # Decode only as large as the crop needs to fill the thumbnail (cheap for big JPEGs).
    original_side = max(face.file.width or 0, face.file.height or 0, 1)
    needed_scale = min(1.0, size / (max(face.w, face.h) * (1 + 2 * MARGIN)))
    max_side = max(math.ceil(original_side * needed_scale), size)
    if face.file.kind == MediaKind.VIDEO:
        if face.frame_time is None:
            raise MediaError("the face's frame is not known: the video was analyzed before "
                             "frame times were recorded")
        image = read_frame(local_file(face.file), face.frame_time, max_side, video_timeout)
    else:
        image = decode_image(local_file(face.file), max_side=max_side, max_pixels=max_pixels)
    crop = _square_around(face, image.scale, image.pixels.shape[1], image.pixels.shape[0])
    thumbnail = Image.fromarray(image.pixels).crop(crop).resize((size, size), Image.Resampling.LANCZOS)
    _save_jpeg(thumbnail, target)
    return target


def thumbnail_path(face: schema.Face, cache_dir: Path, size: int) -> Path:
    """Where the thumbnail of a face at this size is cached (it may not exist yet)."""
    return cache_dir / "faces" / f"{face.file.content_hash[:16]}-{face.id}-{size}.jpg"


def preview_path(file: schema.File, cache_dir: Path, max_side: int) -> Path:
    """Where the preview of a photo at this size is cached (it may not exist yet)."""
    return cache_dir / "previews" / f"{file.content_hash[:16]}-{file.id}-{max_side}.jpg"


def photo_preview(file: schema.File, cache_dir: Path, local_path: Path, max_side: int = 1024,
                  max_pixels: int = 178_956_970) -> Path:
    """The path of a JPEG of the whole photo, at most max_side pixels on its longer side, in
    the orientation face boxes are measured in; cached. Raises MediaError."""
    target = preview_path(file, cache_dir, max_side)
    if not target.exists():
        image = decode_image(local_path, max_side=max_side, max_pixels=max_pixels)
        _save_jpeg(Image.fromarray(image.pixels), target)
    return target


def _save_jpeg(image: Image.Image, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
    with os.fdopen(handle, "wb") as stream:
        image.save(stream, "JPEG", quality=JPEG_QUALITY)
    os.replace(temporary, target)


def _square_around(face: schema.Face, scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A square (left, top, right, bottom) around the face box, in decoded pixels, inside the image."""
    side = max(face.w, face.h) * (1 + 2 * MARGIN) * scale
    side = min(side, width, height)
    centre_x, centre_y = (face.x + face.w / 2) * scale, (face.y + face.h / 2) * scale
    left = min(max(centre_x - side / 2, 0), width - side)
    top = min(max(centre_y - side / 2, 0), height - side)
    return round(left), round(top), round(left + side), round(top + side)
