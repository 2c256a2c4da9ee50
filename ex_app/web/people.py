"""The People page's JSON routes: persons, faces, thumbnails and the user's corrections.

Each route acts for the signed-in user (:mod:`ex_app.web.access` lets no request without
one through), on that user's persons and faces only (:mod:`ex_app.people.operations` with
``owner``): another user's ids answer 404 as if they
did not exist. Every correction can be undone once: the state before the user's last
action is kept in memory per user (lost when the ExApp restarts).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope
from nc_py_api import AsyncNextcloudApp, NextcloudExceptionNotFound
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from ex_app.engine import Engine
from ex_app.media.errors import MediaError
from ex_app.people import operations, thumbnails
from ex_app.people.clustering import QualityGate
from ex_app.people.distances import face_distances
from ex_app.people.operations import NotFound
from ex_app.people.undo import Snapshot
from ex_app.sources.nextcloud import NextcloudFile, NextcloudSource, TooLarge
from ex_app.store import schema
from ex_app.web.access import has_dot_segment, signed_in_user
from ex_app.web.personal_settings import ANALYZE, DELETE_FACES, user_choice
from ex_app.work.nextcloud_scan import stored_file
from ex_app.work.progress import measure_user_progress

router = APIRouter(prefix="/api/people")

MAX_ID = 2**63 - 1  # SQLite's integers are 64-bit: a larger id is refused, not a server error
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]  # a database id in a request body
PathId = Annotated[int, FastApiPath(ge=1, le=MAX_ID)]  # a database id in the route

PAGE = "people"  # the top menu entry: /index.php/apps/app_api/embedded/<appid>/people
SCRIPT = "js/recognize_ex-main"  # AppAPI adds ".js" / ".css"; built by `make ui`
STYLE = "css/recognize_ex-main"
ICON = "img/people.svg"
ASSETS = Path(__file__).resolve().parent / "static"  # js/ and css/ from `make ui`, img/

THUMBNAIL_SIZES = (64, 128, 256)
PREVIEW_SIDES = (512, 1024, 2048)
IMAGE_CACHE = "private, max-age=86400"  # ids and content hashes name the images


async def register_page(nc: AsyncNextcloudApp) -> None:
    """The "People" entry of Nextcloud's top menu, with the page's script and style."""
    await nc.ui.resources.set_script("top_menu", PAGE, SCRIPT)
    await nc.ui.resources.set_style("top_menu", PAGE, STYLE)
    await nc.ui.top_menu.register(PAGE, "People", ICON)


async def unregister_page(nc: AsyncNextcloudApp) -> None:
    """Remove the top menu entry (AppAPI removes its script and style with it)."""
    await nc.ui.top_menu.unregister(PAGE)


class Assets(StaticFiles):
    """Regular files inside one folder: a path with a dot segment (raw or percent-encoded)
    answers 404, and so does a link leading out of the folder (Starlette's own check) and
    any file of a folder not built yet."""

    async def check_config(self) -> None:
        if self.directory is not None and Path(self.directory).is_dir():
            await super().check_config()

    def get_path(self, scope: Scope) -> str:
        raw = scope.get("raw_path", b"").decode("latin-1")
        if has_dot_segment(scope["path"]) or has_dot_segment(raw):
            raise HTTPException(status_code=404)
        return super().get_path(scope)


def mount_assets(app: FastAPI) -> None:
    """Serve js/, css/ and img/ (AppAPI's proxy asks for the page's script, style and icon
    there; PUBLIC routes in info.xml); a folder not built yet is served empty rather than
    failing the start."""
    for folder in ("js", "css", "img"):
        app.mount(f"/{folder}", Assets(directory=ASSETS / folder, check_dir=False), name=folder)


def _engine(request: Request) -> Engine:
    return request.app.state.service.current_engine


def _undo_log(request: Request) -> dict[str, Snapshot]:
    state = request.app.state
    if not hasattr(state, "people_undo"):
        state.people_undo = {}
    return state.people_undo


def _act(
    request: Request,
    label: str,
    persons: set[int],
    faces: set[int],
    action: Callable[[Session, str], Any],
) -> Any:
    """Run one correction for the user, keeping what it changes for undo; 404 for ids that
    are not the user's."""
    owner = signed_in_user(request)
    try:
        with _engine(request).sessions.begin() as session:
            snapshot = Snapshot.take(session, label, persons, faces)
            result = action(session, owner)
            if isinstance(result, int) and result not in persons:
                snapshot.created.add(result)
    except NotFound as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    _undo_log(request)[owner] = snapshot
    return result


def _faces_json(faces: list[operations.FaceView]) -> list[dict]:
    return [asdict(face) for face in faces]


@router.get("/persons")
def persons(request: Request, hidden: bool = False) -> dict:
    """The user's persons (named first, then by size; hidden ones too when asked), the
    names in use and the action undo would take back."""
    owner = signed_in_user(request)
    with _engine(request).sessions() as session:
        everyone = operations.list_persons(session, include_hidden=True, owner=owner)
    listing = everyone if hidden else [p for p in everyone if not p.hidden]
    undo = _undo_log(request).get(owner)
    return {
        "persons": [asdict(p) for p in listing],
        "names": sorted({p.name for p in everyone if p.name}, key=str.lower),
        "undo": None if undo is None else undo.label,
    }


@router.get("/persons/{person_id}/faces")
def person_faces(request: Request, person_id: PathId) -> dict:
    """A person's faces with their boxes, grouped by photo by the page."""
    owner = signed_in_user(request)
    engine = _engine(request)
    with engine.sessions() as session:
        try:
            faces = operations.person_faces(
                session, person_id, QualityGate.from_settings(engine.settings), owner=owner
            )
        except NotFound as error:
            raise HTTPException(status_code=404, detail=str(error)) from None
        person = session.get(schema.Person, person_id)
        summary = {"id": person.id, "name": person.name, "hidden": person.hidden}
    return {"person": summary, "faces": _faces_json(faces)}


@router.get("/faces/unassigned")
def unassigned_faces(request: Request, limit: int = Query(500, ge=1, le=5000)) -> dict:
    """Faces in no person."""
    owner = signed_in_user(request)
    engine = _engine(request)
    with engine.sessions() as session:
        gate = QualityGate.from_settings(engine.settings)
        faces = operations.unassigned_faces(session, gate, limit, owner=owner)
    return {"faces": _faces_json(faces)}


@router.get("/faces/unsure")
def unsure_faces(request: Request, limit: int = Query(500, ge=1, le=5000)) -> dict:
    """Faces the grouping placed that lie far from their person's mean face."""
    owner = signed_in_user(request)
    engine = _engine(request)
    with engine.sessions() as session:
        gate = QualityGate.from_settings(engine.settings)
        faces = operations.unsure_faces(
            session, gate, face_distances(engine.settings).join, limit, owner=owner
        )
    return {"faces": _faces_json(faces)}


@router.get("/progress")
def progress(request: Request) -> dict:
    """What is analyzed and still to do in the user's files, per analyzer, with the time left."""
    owner = signed_in_user(request)
    service = request.app.state.service
    with _engine(request).sessions() as session:
        mine = measure_user_progress(session).get(owner, [])
    return {"running": service.running, "analyzers": [p.as_dict() for p in mine]}


class ChoiceBody(BaseModel):
    """The user's choice, as in the personal settings form."""

    analyze: bool
    delete_faces: bool = False


@router.get("/choice")
async def get_choice(request: Request) -> dict:
    """Whether the user's files are analyzed (the personal settings' choice, also offered on
    this page: Nextcloud 29 lets only admins save personal forms of apps)."""
    service = request.app.state.service
    nc = AsyncNextcloudApp(user=signed_in_user(request))
    saved = await user_choice(nc, service.current_engine.settings.users_enabled_by_default)
    return {"analyze": saved.enabled, "delete_faces": saved.delete_faces}


@router.post("/choice")
async def set_choice(request: Request, body: ChoiceBody) -> dict:
    """Save the user's choice; the work follows at once (stopped, or face data deleted)."""
    nc = AsyncNextcloudApp(user=signed_in_user(request))
    await nc.preferences_ex.set_value(ANALYZE, "1" if body.analyze else "0")
    await nc.preferences_ex.set_value(DELETE_FACES, "1" if body.delete_faces else "0")
    request.app.state.service.choice_changed(signed_in_user(request))
    return await get_choice(request)


@router.get("/suggestions")
def suggestions(request: Request) -> dict:
    """Pairs of the user's persons that may be the same human, closest first."""
    owner = signed_in_user(request)
    engine = _engine(request)
    with engine.sessions() as session:
        found = operations.suggest_merges(
            session, face_distances(engine.settings).suggestion, owner=owner,
            embedder=engine.settings.face_embedder,
        )
    return {"suggestions": [asdict(s) for s in found]}


class NameBody(BaseModel):
    name: str | None = Field(default=None, max_length=200)


@router.post("/persons/{person_id}/name")
def rename(request: Request, person_id: PathId, body: NameBody) -> dict:
    _act(request, "rename", {person_id}, set(),
         lambda s, owner: operations.rename(s, person_id, body.name, owner=owner))
    return {}


class HiddenBody(BaseModel):
    hidden: bool = True


@router.post("/persons/{person_id}/hidden")
def hide(request: Request, person_id: PathId, body: HiddenBody) -> dict:
    _act(request, "hide" if body.hidden else "show", {person_id}, set(),
         lambda s, owner: operations.set_hidden(s, person_id, body.hidden, owner=owner))
    return {}


class MergeBody(BaseModel):
    into: RowId
    others: list[RowId] = Field(min_length=1, max_length=1000)


@router.post("/merge")
def merge(request: Request, body: MergeBody) -> dict:
    _act(request, "merge", {body.into, *body.others}, set(),
         lambda s, owner: operations.merge(s, body.into, body.others, owner=owner))
    return {"person_id": body.into}


class MoveBody(BaseModel):
    person_id: RowId | None = None  # None: a new person


@router.post("/faces/{face_id}/move")
def move_face(request: Request, face_id: PathId, body: MoveBody) -> dict:
    persons = {body.person_id} if body.person_id is not None else set()
    with _engine(request).sessions() as session:
        found = operations.face_owner_of(session, face_id)
        if found is not None and found[0].person_id is not None:
            persons.add(found[0].person_id)  # the person it leaves
    person_id = _act(request, "move", persons, {face_id},
                     lambda s, owner: operations.move_face(s, face_id, body.person_id, owner=owner))
    return {"person_id": person_id}


@router.post("/faces/{face_id}/remove")
def remove_face(request: Request, face_id: PathId) -> dict:
    with _engine(request).sessions() as session:
        found = operations.face_owner_of(session, face_id)
        persons = {found[0].person_id} if found and found[0].person_id is not None else set()
    _act(request, "remove", persons, {face_id},
         lambda s, owner: operations.remove_face(s, face_id, owner=owner))
    return {}


class DistinctBody(BaseModel):
    person_id: RowId
    other_id: RowId


@router.post("/distinct")
def distinct(request: Request, body: DistinctBody) -> dict:
    _act(request, "distinct", {body.person_id, body.other_id}, set(),
         lambda s, owner: operations.mark_distinct(s, body.person_id, body.other_id, owner=owner))
    return {}


@router.post("/undo")
def undo(request: Request) -> dict:
    """Undo the user's last correction (once); 409 when there is none."""
    owner = signed_in_user(request)
    snapshot = _undo_log(request).pop(owner, None)
    if snapshot is None:
        raise HTTPException(status_code=409, detail="nothing to undo")
    with _engine(request).sessions.begin() as session:
        snapshot.restore(session)
    return {"undone": snapshot.label}


@router.get("/faces/{face_id}/thumbnail")
async def face_thumbnail(request: Request, face_id: PathId, size: int = 128) -> FileResponse:
    """A square JPEG of the face (size 64, 128 or 256)."""
    if size not in THUMBNAIL_SIZES:
        raise HTTPException(status_code=422, detail=f"size is one of {THUMBNAIL_SIZES}")
    owner = signed_in_user(request)
    engine = _engine(request)
    with engine.sessions() as session:
        face = operations.face_owner_of(session, face_id)
        if face is None or face[1] != owner:
            raise HTTPException(status_code=404, detail=f"no face {face_id}")
        cached = thumbnails.thumbnail_path(face[0], engine.settings.cache_dir, size)
        file = stored_file(owner, face[0].file)
    if not cached.exists():

        def make(local: Path) -> Path:
            with engine.sessions() as session:
                return thumbnails.face_thumbnail(
                    session, face_id, engine.settings.cache_dir, lambda _row: local, size,
                    engine.settings.max_image_pixels, engine.settings.video_decode_timeout_seconds,
                )

        cached = await _with_download(engine, owner, file, make)
    return FileResponse(cached, media_type="image/jpeg", headers={"Cache-Control": IMAGE_CACHE})


@router.get("/photos/{file_id}/preview")
async def photo_preview(request: Request, file_id: PathId, size: int = 1024) -> FileResponse:
    """A JPEG of the whole photo, its longer side at most size (512, 1024 or 2048)."""
    if size not in PREVIEW_SIDES:
        raise HTTPException(status_code=422, detail=f"size is one of {PREVIEW_SIDES}")
    owner = signed_in_user(request)
    engine = _engine(request)
    with engine.sessions() as session:
        try:
            row = operations.check_file(session, file_id, owner)
        except NotFound as error:
            raise HTTPException(status_code=404, detail=str(error)) from None
        cached = thumbnails.preview_path(row, engine.settings.cache_dir, size)
        file = stored_file(owner, row)
    if not cached.exists():

        def make(local: Path) -> Path:
            with engine.sessions() as session:
                return thumbnails.photo_preview(
                    session.get(schema.File, file_id), engine.settings.cache_dir, local, size,
                    engine.settings.max_image_pixels,
                )

        cached = await _with_download(engine, owner, file, make)
    return FileResponse(cached, media_type="image/jpeg", headers={"Cache-Control": IMAGE_CACHE})


async def _with_download(
    engine: Engine, owner: str, file: NextcloudFile, make: Callable[[Path], Path]
) -> Path:
    """Download the user's photo into a temporary folder and make an image from it there."""
    source = NextcloudSource(engine.settings.max_download_bytes)
    engine.settings.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=engine.settings.cache_dir) as folder:
        try:
            local = await source.download(file, Path(folder))
            return await asyncio.to_thread(make, local)
        except NextcloudExceptionNotFound:
            raise HTTPException(status_code=404, detail="the photo is gone") from None
        except (MediaError, TooLarge) as error:
            raise HTTPException(
                status_code=422, detail=f"the photo cannot be shown: {error}"
            ) from None
