"""Places: gazetteer load time, reverse-geocoding lookups per second, GPS reads per second.

Run from the project root: ``.venv/bin/python bench/places_speed.py [--lookups N]``.
Lookups are timed on positions about 3 km from real places (photos are mostly taken where people
live) and on positions drawn uniformly over the globe (mostly sea: the early "no place" path).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from ex_app.analyzers.places import ReverseGeocoder, gazetteer_file
from ex_app.media.gps import read_gps

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"


@functools.cache
def gazetteer_positions() -> np.ndarray:
    """(latitude, longitude) of every place in the gazetteer's data file."""
    places = json.loads(gzip.decompress(gazetteer_file("geocode.gz").read_bytes()))
    return np.array([(p["latitude"], p["longitude"]) for p in places])


def lookups_per_second(geocoder: ReverseGeocoder, positions: np.ndarray) -> tuple[float, float]:
    """(lookups per second, share of positions that got a place)."""
    start = time.perf_counter()
    found = sum(geocoder.find(float(lat), float(lon)) is not None for lat, lon in positions)
    return len(positions) / (time.perf_counter() - start), found / len(positions)


def photo_with_gps(path: Path) -> bytes:
    """A real JPEG re-saved in memory with a GPS position in its EXIF."""
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (IFDRational(48), IFDRational(51), IFDRational(2376, 100)),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (IFDRational(2), IFDRational(21), IFDRational(792, 100)),
    }
    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    geocoder = ReverseGeocoder()
    start = time.perf_counter()
    paris = geocoder.find(48.8566, 2.3522)  # the first lookup loads the gazetteer
    print(f"load (first lookup): {time.perf_counter() - start:.2f} s → {paris}")

    towns = gazetteer_positions()[rng.integers(0, len(gazetteer_positions()), args.lookups)]
    jitter = rng.normal(0, 0.03, towns.shape)  # about 3 km
    near = np.column_stack((
        np.clip(towns[:, 0] + jitter[:, 0], -90, 90),
        (towns[:, 1] + jitter[:, 1] + 180) % 360 - 180,
    ))
    rate, share = lookups_per_second(geocoder, near)
    print(f"near towns: {rate:,.0f} lookups/s ({share:.0%} got a place)")

    anywhere = np.column_stack((
        np.degrees(np.arcsin(rng.uniform(-1, 1, args.lookups))),
        rng.uniform(-180, 180, args.lookups),
    ))
    rate, share = lookups_per_second(geocoder, anywhere)
    print(f"anywhere on Earth: {rate:,.0f} lookups/s ({share:.0%} got a place)")

    photos = [photo_with_gps(path) for path in sorted(IMAGES.glob("*.JPEG"))]
    start = time.perf_counter()
    read = sum(read_gps(photo) is not None for photo in photos)
    elapsed = time.perf_counter() - start
    print(f"GPS reads: {len(photos) / elapsed:,.0f} photos/s ({read} of {len(photos)} real JPEGs)")


if __name__ == "__main__":
    main()
