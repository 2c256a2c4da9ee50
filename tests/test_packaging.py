"""Packaging: the Dockerfile passes hadolint; appinfo and pyproject agree."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parents[1]


def test_the_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_builds_each_device_from_one_argument():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG DEVICE=cpu" in dockerfile
    for device in ("cpu", "cuda", "rocm"):
        assert f" AS base-{device}" in dockerfile
    assert "FROM base-${DEVICE} AS app" in dockerfile


def test_appinfo_names_the_image_and_the_version_of_the_package():
    info = ElementTree.parse(REPO / "appinfo" / "info.xml").getroot()
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert info.findtext("version") == version
    install = info.find("external-app/docker-install")
    assert install.findtext("image-tag") == version
    assert install.findtext("image") and install.findtext("registry")
    assert info.find("external-app/scopes") is None  # AppAPI 3 needs none


def test_the_image_starts_the_exapp_through_its_entry_script_and_checks_its_heartbeat():
    """start.sh (frpc under HaRP, then the ExApp) and healthcheck.py are tested in test_harp."""
    import importlib

    dockerfile = (REPO / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.*)$", dockerfile, re.MULTILINE).group(1))
    assert entrypoint == ["/app/docker/start.sh", "python3", "-m", "ex_app.main"]
    assert "WORKDIR /app" in dockerfile and "COPY docker ./docker" in dockerfile
    healthcheck = re.search(r"^HEALTHCHECK .*\n.*CMD (.*)$", dockerfile, re.MULTILINE).group(1)
    assert json.loads(healthcheck) == ["python3", "/app/docker/healthcheck.py"]
    for script in ("start.sh", "healthcheck.py"):
        assert (REPO / "docker" / script).stat().st_mode & 0o111, script
    assert callable(importlib.import_module("ex_app.main").main)


def test_the_image_carries_frpc_pinned_by_checksum_for_each_architecture():
    """The FRP client HaRP needs, as Nextcloud's app-skeleton-python and HaRP's README fetch it."""
    dockerfile = (REPO / "Dockerfile").read_text()
    pins = dict(re.findall(r"^ARG (FRP_\w+)=(\S+)$", dockerfile, re.MULTILINE))
    assert set(pins) == {"FRP_VERSION", "FRP_AMD64_SHA256", "FRP_ARM64_SHA256"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["FRP_VERSION"])
    assert all(re.fullmatch("[0-9a-f]{64}", pins[name]) for name in pins if name.endswith("SHA256"))
    assert ("https://github.com/fatedier/frp/releases/download/v${FRP_VERSION}/"
            "frp_${FRP_VERSION}_linux_${arch}.tar.gz") in dockerfile
    assert "sha256sum --check --strict" in dockerfile
    assert "COPY --from=frpc /frp/bin/ /usr/local/bin/" in dockerfile


def test_every_declared_route_exists_in_the_exapp_with_its_verbs():
    import re

    from starlette.routing import Mount

    from ex_app.config import Settings
    from ex_app.main import create_app

    app = create_app(Settings())
    app_routes = {
        (path, method.upper())
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    } | {(route.path + "/{path}", "GET") for route in app.routes if isinstance(route, Mount)}
    info = ElementTree.parse(REPO / "appinfo" / "info.xml").getroot()
    declared = info.findall("external-app/routes/route")
    assert declared
    for route in declared:
        pattern = re.compile(route.findtext("url"))
        assert route.findtext("access_level") in {"PUBLIC", "USER", "ADMIN"}
        for verb in route.findtext("verb").split(","):
            assert any(pattern.search(path) and method == verb for path, method in app_routes), (
                route.findtext("url"),
                verb,
            )


def _declared() -> list[tuple[str, str, str]]:
    info = ElementTree.parse(REPO / "appinfo" / "info.xml").getroot()
    return [(r.findtext("url"), r.findtext("verb"), r.findtext("access_level"))
            for r in info.findall("external-app/routes/route")]


def test_route_patterns_survive_appapis_slash_delimiters():
    """AppAPI 3.2 matches a route as preg_match('/' . url . '/i'): an unescaped '/' ends the
    pattern early (PHP warning, every request 404s). A leading '\\/?' matches the path with
    and without its slash (AppAPI 3 passes it without, 4 with)."""
    for url, _verb, _level in _declared():
        assert re.search(r"(?<!\\)/", url) is None, url
        pattern = re.compile(url, re.IGNORECASE)
        example = re.sub(r"\[\^\\/\]\+", "7", url.strip("^$")).replace("\\/?", "/").replace("\\/", "/")
        example = re.sub(r"\(([^|)]+)[^)]*\)", r"\1", example).replace(".+", "app.js")
        assert pattern.search(example) and pattern.search(example.lstrip("/")), (url, example)


def test_make_register_declares_the_same_routes_as_info_xml():
    makefile = (REPO / "Makefile").read_text()
    routes = json.loads(re.search(r"^ROUTES := (.*)$", makefile, re.MULTILINE).group(1).replace("$$", "$"))
    levels = {"PUBLIC": 0, "USER": 1, "ADMIN": 2}
    assert [(r["url"], r["verb"], r["access_level"]) for r in routes] == [
        (url, verb, levels[level]) for url, verb, level in _declared()
    ]


def _satisfies(version: str, requirement: str) -> bool:
    """Whether a Node version meets an `engines.node` range of the forms the lock file uses:
    alternatives joined by `||`, each of comparators (all must hold) such as `*`, `14`,
    `^22.18.0`, `>=24.11`, `>= 6`."""
    have = tuple(int(part) for part in version.split("."))

    def holds(comparator: str) -> bool:
        if comparator == "*":
            return True
        match = re.fullmatch(r"(\^|>=)?(\d+)(?:\.(\d+))?(?:\.(\d+))?", comparator)
        assert match, f"a range this test does not read: {requirement!r}"
        operator, *parts = match.groups()
        given = tuple(int(part) for part in parts if part is not None)
        want = given + (0,) * (3 - len(given))
        if operator == ">=":
            return have >= want
        if operator == "^":
            return have >= want and have[0] == want[0]
        return have[: len(given)] == given  # a bare version: any release of it

    return any(
        all(holds(c) for c in re.sub(r"(>=|\^)\s+", r"\1", alternative).split())
        for alternative in requirement.split("||")
    )


def test_the_node_that_builds_the_people_page_meets_every_locked_packages_engines():
    """`make ui` runs npm on NODE_VERSION when the system's node is older than package.json's
    engines, and the image's ui stage on its node image: neither gets an EBADENGINE warning."""
    engines = json.loads((REPO / "package.json").read_text())["engines"]["node"]
    lock = json.loads((REPO / "package-lock.json").read_text())
    assert lock["packages"][""]["engines"]["node"] == engines
    makefile = (REPO / "Makefile").read_text()
    node_version = re.search(r"^NODE_VERSION := (\S+)$", makefile, re.MULTILINE).group(1)
    floor = re.fullmatch(r"\^(\d+\.\d+\.\d+) \|\| >=(\d+\.\d+\.\d+)", engines)
    assert floor, engines
    image = re.search(r"^FROM node:(\d+)-\S+ AS ui$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert image and int(image.group(1)) == int(node_version.split(".")[0])
    assert _satisfies(node_version, engines)
    for path, package in lock["packages"].items():
        required = package.get("engines", {}).get("node")
        if not path or not required:
            continue
        assert _satisfies(node_version, required), (path, required)
        if not package.get("optional"):  # installed on every platform
            for lowest in floor.groups():
                assert _satisfies(lowest, required), (path, required, lowest)
    assert not _satisfies("20.20.2", engines) and _satisfies("22.22.0", engines)
