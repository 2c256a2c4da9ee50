"""Faces found in videos on the People page: the time of each face's frame is stored, its
thumbnail is cropped from that frame, and a person's page lists the video with that time and
a link that opens the video in Nextcloud's Files / Viewer.

Videos are made here with FFmpeg from the real face photos (``test_video.slideshow``: one photo
a second). The Nextcloud path is the real one: the stand-in's WebDAV crawl and downloads, the
real models, the ExApp over HTTP, the built page in headless Chromium (``test_people_page``'s
front and browser).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest
from conftest import REPO, SHARED_DATA, SHARED_MODELS, export_json, run_cli
from nextcloud_standin.auth import headers_to_exapp, new_secret
from nextcloud_standin.releases import MAINTAINED, RELEASES
from nextcloud_standin.server import BackgroundServer, build_app
from nextcloud_standin.state import NextcloudState
from PIL import Image
from playwright.sync_api import expect
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from test_people_page import (  # noqa: F401  (browser: the module's Chromium fixture)
    APP_ID,
    Front,
    _environment,
    _free_port,
    _serve,
    browser,
    errors_of,
    exapp_environment,
    new_page,
    open_page,
    scan_through_nextcloud,
    shot,
)
from test_video import slideshow

from ex_app.analyzers.faces import FaceAnalyzer, SFaceEmbedder
from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.main import create_app
from ex_app.media.errors import MediaError
from ex_app.people import thumbnails
from ex_app.analyzers.video import appearance_distance
from ex_app.people.distances import face_distances
from ex_app.store import schema
from ex_app.web import people

FACES = SHARED_DATA / "faces"
POWELL = sorted((FACES / "Colin_Powell").glob("*.jpg"))
RIDGE = sorted((FACES / "Tom_Ridge").glob("*.jpg"))
# Powell's photos first (0-4 s), then Ridge's (4-8 s); Powell's person comes from other photos.
CLIP_FRAMES = POWELL[:4] + RIDGE[:4]
VIDEO_FACES = {"objects_enabled": False, "places_enabled": False, "music_enabled": False}
SETTINGS = Settings()


@pytest.fixture(scope="module")
def face_analyzer(model_store) -> FaceAnalyzer:
    return FaceAnalyzer(
        detector_path=model_store.path("face_detection_yunet"),
        embedder=SFaceEmbedder(model_store.path("face_recognition_sface")),
        min_score=SETTINGS.faces.min_score,
        min_size=SETTINGS.faces.min_size,
    )


def the_face_in(jpeg: bytes, analyzer: FaceAnalyzer) -> np.ndarray:
    """The embedding of the one face the detector finds in a JPEG thumbnail."""
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    found = analyzer.analyze(np.asarray(image.convert("RGB")))
    assert len(found) == 1, f"{len(found)} faces in the thumbnail"
    x, y, w, h = found[0].box  # the face fills the middle of the crop, as a photo face's does
    assert w >= image.width / 3 and abs(x + w / 2 - image.width / 2) < image.width / 6
    return found[0].embedding


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


def test_a_scanned_videos_faces_keep_their_frame_and_show_it(tmp_path, face_analyzer):
    tree = tmp_path / "tree"
    (tree / "photos").mkdir(parents=True)
    for photo in POWELL[6:12]:
        shutil.copy(photo, tree / "photos" / photo.name)
    slideshow(tmp_path / "frames", CLIP_FRAMES, tree / "clip.mp4")
    data_dir = tmp_path / "state"
    run_cli(data_dir, "scan", str(tree))
    files = {f["path"]: f for f in export_json(data_dir)["files"]}
    video = files["clip.mp4"]
    assert video["status"] == "done", video["error"]
    assert all(face["frame_time"] is None for f in files.values() if f["kind"] == "image"
               for face in f["faces"])
    faces = sorted(video["faces"], key=lambda face: face["frame_time"])
    assert len(faces) == 2
    powell, ridge = faces
    assert 0 <= powell["frame_time"] < 4 <= ridge["frame_time"] < 8  # the frames they are in
    powell_person = {face["person"] for f in files.values() if f["kind"] == "image"
                     for face in f["faces"]}
    assert powell_person == {powell["person"]} and ridge["person"] != powell["person"]

    shown = {}
    for face in faces:
        path = Path(run_cli(data_dir, "face", "thumbnail", str(face["id"])).stdout.strip())
        shown[face["id"]] = the_face_in(path.read_bytes(), face_analyzer)
    engine = Engine(Settings(data_dir=data_dir, model_mirror=SHARED_MODELS))
    with engine.sessions() as session:
        stored = {face["id"]: np.frombuffer(session.get(schema.Face, face["id"]).embedding, np.float32)
                  for face in faces}
    near = appearance_distance(SETTINGS)
    for face in faces:  # each thumbnail shows its own face, not the other one
        other = next(f["id"] for f in faces if f["id"] != face["id"])
        assert distance(shown[face["id"]], stored[face["id"]]) < near
        assert distance(shown[face["id"]], stored[face["id"]]) < distance(shown[face["id"]], stored[other])

    with engine.sessions.begin() as session:  # found before frame times were recorded
        session.get(schema.Face, powell["id"]).frame_time = None
    with engine.sessions() as session, pytest.raises(MediaError, match="frame is not known"):
        thumbnails.face_thumbnail(session, powell["id"], tmp_path / "cache",
                                  lambda row: tree / row.path, size=128)
    engine.sessions.kw["bind"].dispose()


# --- over HTTP and in the browser, against the stand-in -------------------------------------


class FilesFront(Front):
    """The front of test_people_page, with what Nextcloud's Files app answers to the link.

    As nextcloud/server apps/files/lib/Controller/ViewController.php does (``showFile`` for the
    route ``/f/{fileid}`` of apps/files/appinfo/routes.php, then ``redirectToFile``): the file
    the signed-in user can see under that id is answered with a redirect to its folder in Files,
    ``/index.php/apps/files/files/FILEID?dir=PARENT&openfile=true`` (the Viewer opens it); an id
    the user cannot see goes to the Files app with that id alone. The Files page itself is a
    placeholder saying which file it opened."""

    def __init__(self, state: NextcloudState, nextcloud_url: str):
        super().__init__(state, nextcloud_url)
        self.app.router.routes[:0] = [
            Route("/index.php/f/{fileid:int}", self.show_file),
            Route("/index.php/apps/files/files/{fileid:int}", self.files_page),
        ]

    async def show_file(self, request: Request) -> Response:
        fileid = request.path_params["fileid"]
        entry = self.state.entry_by_id(request.cookies.get("nc_user", ""), fileid)
        if entry is None or entry.node.is_dir:
            return RedirectResponse(f"/index.php/apps/files/files/{fileid}", status_code=303)
        parent = "/" + entry.path.rpartition("/")[0]
        return RedirectResponse(
            f"/index.php/apps/files/files/{fileid}?dir={parent}&openfile=true", status_code=303)

    async def files_page(self, request: Request) -> Response:
        entry = self.state.entry_by_id(request.cookies.get("nc_user", ""),
                                       request.path_params["fileid"])
        name = entry.node.name if entry else "not found"
        return HTMLResponse(f"<!DOCTYPE html><html lang='en'><head><title>Files</title></head>"
                            f"<body><h1>Files</h1><p class='viewer'>{name}</p></body></html>")


@dataclass
class VideoStack:
    state: NextcloudState
    engine: Engine
    exapp_url: str
    front_url: str
    video_id: int  # the clip's Nextcloud file id

    def get(self, route: str, user: str = "alice") -> httpx.Response:
        """A request to the ExApp as AppAPI's proxy sends it for user."""
        return httpx.get(self.exapp_url + route, headers=headers_to_exapp(self.state, user),
                         timeout=120)


@pytest.fixture(scope="module")
def video_stack(tmp_path_factory) -> Iterator[VideoStack]:
    """alice has six photos of Powell and Videos/clip.mp4 (Powell, then Ridge); bob has
    nothing. Scanned through the real Nextcloud path, then served: the ExApp and the front."""
    assert (REPO / "ex_app/web/static" / f"{people.SCRIPT}.js").exists(), "run `make ui` first"
    release = RELEASES[MAINTAINED[0]]
    state = NextcloudState(APP_ID, "0.1.0", new_secret(), release.app_api, release.server)
    state.add_user("alice", "Alice")
    state.add_user("bob", "Bob")
    for photo in POWELL[6:12]:
        state.put_file("alice", f"Photos/{photo.name}", photo.read_bytes())
    root = tmp_path_factory.mktemp("video-faces")
    clip = slideshow(root / "frames", CLIP_FRAMES, root / "clip.mp4")
    video_id = state.put_file("alice", "Videos/clip.mp4", clip.read_bytes()).fileid
    state.app.enabled = True
    server = BackgroundServer(build_app(state))
    server.start()
    env = exapp_environment(state, server.url, root)
    settings = Settings(data_dir=root / "data", model_mirror=SHARED_MODELS, **VIDEO_FACES)
    engine = scan_through_nextcloud(settings, env, ["alice", "bob"])
    try:
        front = FilesFront(state, server.url)
        exapp_port, front_port = _free_port(), _free_port()
        with _environment(env), _serve(create_app(settings), exapp_port):
            front.exapp_url = f"http://127.0.0.1:{exapp_port}"
            with _serve(front.app, front_port):
                yield VideoStack(state, engine, front.exapp_url, f"http://127.0.0.1:{front_port}",
                                 video_id)
    finally:
        engine.sessions.kw["bind"].dispose()
        server.stop()


def powell_person(stack: VideoStack) -> int:
    """The person of alice's Powell photos."""
    with stack.engine.sessions() as session:
        persons = set(session.scalars(
            select(schema.Face.person_id).join(schema.File)
            .where(schema.File.path.like("Photos/%"), schema.Face.person_id.is_not(None))
        ))
    assert len(persons) == 1
    return persons.pop()


def test_the_persons_page_lists_the_video_with_its_time_link_and_thumbnail(video_stack,
                                                                            face_analyzer):
    person = powell_person(video_stack)
    answer = video_stack.get(f"/api/people/persons/{person}/faces")
    assert answer.status_code == 200
    faces = answer.json()["faces"]
    photos = [f for f in faces if f["kind"] == "image"]
    videos = [f for f in faces if f["kind"] == "video"]
    assert len(photos) == 6 and all(f["frame_time"] is None for f in photos)
    assert len(videos) == 1
    video = videos[0]
    assert video["path"] == "Videos/clip.mp4" and 0 <= video["frame_time"] < 4
    assert video["open_url"] == f"/index.php/f/{video_stack.video_id}"
    assert all(f["open_url"] == f"/index.php/f/{video_stack.state.own_node('alice', f['path']).fileid}"
               for f in photos)

    thumbnail = video_stack.get(f"/api/people/faces/{video['id']}/thumbnail?size=256")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumbnail.content)).size == (256, 256)
    shown = the_face_in(thumbnail.content, face_analyzer)
    with video_stack.engine.sessions() as session:
        powell_faces = [np.frombuffer(f.embedding, np.float32) for f in session.scalars(
            select(schema.Face).join(schema.File).where(schema.File.path.like("Photos/%")))]
        ridge = session.scalars(select(schema.Face).where(
            schema.Face.file_id == video["file_id"], schema.Face.id != video["id"])).one()
    nearest_powell = min(distance(shown, e) for e in powell_faces)
    assert nearest_powell < face_distances(SETTINGS).join
    assert nearest_powell < distance(shown, np.frombuffer(ridge.embedding, np.float32))
    assert video_stack.get(f"/api/people/faces/{video['id']}/thumbnail", user="bob").status_code == 404


def test_the_page_shows_the_video_appearance_and_opens_the_video(browser, video_stack):
    person = powell_person(video_stack)
    with video_stack.engine.sessions() as session:
        at = session.scalars(select(schema.Face.frame_time).join(schema.File).where(
            schema.File.path == "Videos/clip.mp4", schema.Face.person_id == person)).one()
    shown_time = f"0:{int(at):02d}"

    page = open_page(browser, video_stack, "alice")
    page.locator(f'li.person-card[data-person-id="{person}"]').get_by_role("button").first.click()
    expect(page.get_by_text("6 photos, 1 video")).to_be_visible()
    videos = page.get_by_role("list", name="Videos of this person").get_by_role("listitem")
    expect(videos).to_have_count(1)
    expect(videos.first).to_contain_text(f"at {shown_time}")
    thumbnail = videos.first.get_by_role("img", name=f"Face in video clip.mp4 at {shown_time}")
    expect(thumbnail).to_have_js_property("complete", True)
    assert thumbnail.evaluate("img => img.naturalWidth") > 0
    link = videos.first.get_by_role("link", name="Open video clip.mp4")
    expect(link).to_have_attribute("href", f"/index.php/f/{video_stack.video_id}")
    expect(page.get_by_role("list", name="Photos of this person").get_by_role("listitem")).to_have_count(6)
    expect(page.get_by_role("heading", name="Videos")).to_be_visible()
    videos.first.scroll_into_view_if_needed()
    shot(page, "person-with-video")
    assert errors_of(page) == []

    link.click()
    page.wait_for_url("**/index.php/apps/files/files/**")
    opened = urlsplit(page.url)
    assert opened.path == f"/index.php/apps/files/files/{video_stack.video_id}"
    assert parse_qs(opened.query) == {"dir": ["/Videos"], "openfile": ["true"]}
    expect(page.locator("p.viewer")).to_have_text("clip.mp4")
