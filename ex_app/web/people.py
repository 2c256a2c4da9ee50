"""The People page's JSON routes: persons, faces, thumbnails and the user's corrections.

Each route acts for the signed-in user (:mod:`ex_app.web.access` lets no request without
one through), on that user's persons and faces only (:mod:`ex_app.people.operations` with
``owner``): another user's ids raise NotFound, which :func:`ex_app.main.create_app` answers
with 404 as if they did not exist. Every correction can be undone once: the state before the
user's last action is kept in memory per user (lost when the ExApp restarts).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from fastapi import Path as FastApiPath
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from nc_py_api import AsyncNextcloudApp
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from ex_app.engine import Engine
from ex_app.media.errors import MediaError
from ex_app.people import operations, thumbnails
from ex_app.people.clustering import QualityGate
from ex_app.people.distances import face_distances
from ex_app.people.undo import Snapshot
from ex_app.service.nextcloud_settings import save_choice, user_choice
from ex_app.sources.fetch import FileGone, TransientError
from ex_app.sources.nextcloud import NextcloudFetcher
from ex_app.store import schema
from ex_app.store.outbox import person_tag_changes
from ex_app.store.progress import measure_user_progress
from ex_app.web.dependencies import CurrentEngine, Service, UndoLog, User, UserClient

router = APIRouter(prefix="/api/people")

MAX_ID = 2**63 - 1  # SQLite's integers are 64-bit: a larger id is refused, not a server error
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]  # a database id in a request body
PathId = Annotated[int, FastApiPath(ge=1, le=MAX_ID)]  # a database id in the route (also contacts)
Limit = Annotated[int, Query(ge=1, le=5000)]  # how many faces a listing gives at most

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
    """Regular files inside one folder; any file of a folder not built yet answers 404. A link
    leading out of the folder answers 404 too (Starlette's own check); a path with a dot
    segment never gets here (:mod:`ex_app.web.access` refuses it for every route)."""

    async def check_config(self) -> None:
        if self.directory is not None and Path(self.directory).is_dir():
            await super().check_config()


def mount_assets(app: FastAPI) -> None:
    """Serve js/, css/ and img/ (AppAPI's proxy asks for the page's script, style and icon
    there; PUBLIC routes in info.xml); a folder not built yet is served empty rather than
    failing the start."""
    for folder in ("js", "css", "img"):
        app.mount(f"/{folder}", Assets(directory=ASSETS / folder, check_dir=False), name=folder)


@dataclass
class Corrections:
    """The signed-in user's corrections: each is kept for undo (once)."""

    owner: str
    sessions: sessionmaker[Session]
    undo_log: dict[str, Snapshot]

    def act(self, label: str, persons: set[int], faces: set[int], action: Callable[..., Any],
            *args: Any) -> Any:
        """Run one correction, action(session, *args, owner=the user), keeping what it changes
        for undo (files whose person names change are marked for the tag sink); ids that are
        not the user's raise NotFound."""
        with self.sessions.begin() as session, person_tag_changes(session, self.owner):
            snapshot = Snapshot.take(session, label, persons, faces)
            result = action(session, *args, owner=self.owner)
            if isinstance(result, int) and result not in persons:
                snapshot.created.add(result)
        self.undo_log[self.owner] = snapshot
        return result

    def persons_of_face(self, face_id: int) -> set[int]:
        """The person the face is in, if any (the action checks whose face it is)."""
        with self.sessions() as session:
            found = operations.face_owner_of(session, face_id)
        return {found[0].person_id} if found and found[0].person_id is not None else set()


def corrections(owner: User, engine: CurrentEngine, undo_log: UndoLog) -> Corrections:
    return Corrections(owner, engine.sessions, undo_log)


Correct = Annotated[Corrections, Depends(corrections)]


def _faces_json(faces: list[operations.FaceView]) -> list[dict]:
    return [asdict(face) for face in faces]


@router.get("/persons")
def persons(owner: User, engine: CurrentEngine, undo_log: UndoLog, hidden: bool = False) -> dict:
    """The user's persons (named first, then by size; hidden ones too when asked), the
    names in use and the action undo would take back."""
    with engine.sessions() as session:
        everyone = operations.list_persons(session, include_hidden=True, owner=owner)
    listing = everyone if hidden else [p for p in everyone if not p.hidden]
    undo = undo_log.get(owner)
    return {
        "persons": [asdict(p) for p in listing],
        "names": sorted({p.name for p in everyone if p.name}, key=str.lower),
        "undo": None if undo is None else undo.label,
    }


@router.get("/persons/{person_id}/faces")
def person_faces(person_id: PathId, owner: User, engine: CurrentEngine) -> dict:
    """A person's faces with their boxes, grouped by photo by the page."""
    gate = QualityGate.from_settings(engine.settings)
    with engine.sessions() as session:
        faces = operations.person_faces(session, person_id, gate, owner=owner)
        person = session.get(schema.Person, person_id)
        summary = {"id": person.id, "name": person.name, "hidden": person.hidden}
    return {"person": summary, "faces": _faces_json(faces)}


@router.get("/faces/unassigned")
def unassigned_faces(owner: User, engine: CurrentEngine, limit: Limit = 500) -> dict:
    """Faces in no person."""
    gate = QualityGate.from_settings(engine.settings)
    with engine.sessions() as session:
        faces = operations.unassigned_faces(session, gate, limit, owner=owner)
    return {"faces": _faces_json(faces)}


@router.get("/faces/unsure")
def unsure_faces(owner: User, engine: CurrentEngine, limit: Limit = 500) -> dict:
    """Faces the grouping placed that lie far from their person's mean face."""
    gate, join = QualityGate.from_settings(engine.settings), face_distances(engine.settings).join
    with engine.sessions() as session:
        faces = operations.unsure_faces(session, gate, join, limit, owner=owner)
    return {"faces": _faces_json(faces)}


@router.get("/progress")
def progress(owner: User, service: Service, engine: CurrentEngine) -> dict:
    """What is analyzed and still to do in the user's files, per analyzer, with the time left."""
    with engine.sessions() as session:
        mine = measure_user_progress(session).get(owner, [])
    return {"running": service.running, "analyzers": [p.as_dict() for p in mine]}


class ChoiceBody(BaseModel):
    """The user's choice, as in the personal settings form."""

    analyze: bool
    delete_faces: bool = False


@router.get("/choice")
async def get_choice(nc: UserClient, engine: CurrentEngine) -> dict:
    """Whether the user's files are analyzed (the personal settings' choice, also offered on
    this page: Nextcloud 29 lets only admins save personal forms of apps)."""
    saved = await user_choice(nc, engine.settings.nextcloud.users_enabled_by_default)
    return {"analyze": saved.enabled, "delete_faces": saved.delete_faces}


@router.post("/choice")
async def set_choice(
    body: ChoiceBody, owner: User, nc: UserClient, service: Service, engine: CurrentEngine
) -> dict:
    """Save the user's choice; the work follows at once (stopped, or face data deleted)."""
    await save_choice(nc, body.analyze, body.delete_faces)
    service.choice_changed(owner)
    return await get_choice(nc, engine)


@router.get("/suggestions")
def suggestions(owner: User, engine: CurrentEngine) -> dict:
    """Pairs of the user's persons that may be the same human, closest first."""
    distance, embedder = face_distances(engine.settings).suggestion, engine.settings.faces.embedder
    with engine.sessions() as session:
        found = operations.suggest_merges(session, distance, owner=owner, embedder=embedder)
    return {"suggestions": [asdict(s) for s in found]}


class NameBody(BaseModel):
    name: str | None = Field(default=None, max_length=200)


@router.post("/persons/{person_id}/name")
def rename(person_id: PathId, body: NameBody, corrections: Correct) -> dict:
    corrections.act("rename", {person_id}, set(), operations.rename, person_id, body.name)
    return {}


class HiddenBody(BaseModel):
    hidden: bool = True


@router.post("/persons/{person_id}/hidden")
def hide(person_id: PathId, body: HiddenBody, corrections: Correct) -> dict:
    corrections.act("hide" if body.hidden else "show", {person_id}, set(), operations.set_hidden,
                    person_id, body.hidden)
    return {}


class MergeBody(BaseModel):
    into: RowId
    others: list[RowId] = Field(min_length=1, max_length=1000)


@router.post("/merge")
def merge(body: MergeBody, corrections: Correct) -> dict:
    merged = {body.into, *body.others}
    corrections.act("merge", merged, set(), operations.merge, body.into, body.others)
    return {"person_id": body.into}


class MoveBody(BaseModel):
    person_id: RowId | None = None  # None: a new person


@router.post("/faces/{face_id}/move")
def move_face(face_id: PathId, body: MoveBody, corrections: Correct) -> dict:
    persons = corrections.persons_of_face(face_id)  # the person it leaves
    if body.person_id is not None:
        persons.add(body.person_id)
    person_id = corrections.act("move", persons, {face_id}, operations.move_face, face_id,
                                body.person_id)
    return {"person_id": person_id}


@router.post("/faces/{face_id}/remove")
def remove_face(face_id: PathId, corrections: Correct) -> dict:
    corrections.act("remove", corrections.persons_of_face(face_id), {face_id},
                    operations.remove_face, face_id)
    return {}


class DistinctBody(BaseModel):
    person_id: RowId
    other_id: RowId


@router.post("/distinct")
def distinct(body: DistinctBody, corrections: Correct) -> dict:
    corrections.act("distinct", {body.person_id, body.other_id}, set(), operations.mark_distinct,
                    body.person_id, body.other_id)
    return {}


@router.post("/undo")
def undo(corrections: Correct) -> dict:
    """Undo the user's last correction (once); 409 when there is none."""
    snapshot = corrections.undo_log.pop(corrections.owner, None)
    if snapshot is None:
        raise HTTPException(status_code=409, detail="nothing to undo")
    with corrections.sessions.begin() as session, person_tag_changes(session, corrections.owner):
        snapshot.restore(session)
    return {"undone": snapshot.label}


@router.get("/faces/{face_id}/thumbnail")
async def face_thumbnail(
    face_id: PathId, owner: User, engine: CurrentEngine, size: int = 128
) -> FileResponse:
    """A square JPEG of the face (size 64, 128 or 256)."""
    if size not in THUMBNAIL_SIZES:
        raise HTTPException(status_code=422, detail=f"size is one of {THUMBNAIL_SIZES}")
    with engine.sessions() as session:
        face = operations.face_owner_of(session, face_id)
        if face is None or face[1] != owner:
            raise HTTPException(status_code=404, detail=f"no face {face_id}")
        cached = thumbnails.thumbnail_path(face[0], engine.settings.cache_dir, size)
        file = face[0].file.path, face[0].file.size

    def make(local: Path) -> Path:
        with engine.sessions() as session:
            return thumbnails.face_thumbnail(
                session, face_id, engine.settings.cache_dir, lambda _row: local, size,
                engine.settings.images.max_pixels, engine.settings.video.decode_timeout_seconds,
            )

    return await _image(engine, cached, owner, file, make)


@router.get("/photos/{file_id}/preview")
async def photo_preview(
    file_id: PathId, owner: User, engine: CurrentEngine, size: int = 1024
) -> FileResponse:
    """A JPEG of the whole photo, its longer side at most size (512, 1024 or 2048)."""
    if size not in PREVIEW_SIDES:
        raise HTTPException(status_code=422, detail=f"size is one of {PREVIEW_SIDES}")
    with engine.sessions() as session:
        row = operations.check_file(session, file_id, owner)
        cached = thumbnails.preview_path(row, engine.settings.cache_dir, size)
        file = row.path, row.size

    def make(local: Path) -> Path:
        with engine.sessions() as session:
            return thumbnails.photo_preview(
                session.get(schema.File, file_id), engine.settings.cache_dir, local, size,
                engine.settings.images.max_pixels,
            )

    return await _image(engine, cached, owner, file, make)


async def _image(
    engine: Engine, cached: Path, owner: str, file: tuple[str, int], make: Callable[[Path], Path]
) -> FileResponse:
    """The cached JPEG; made first when missing, from owner's photo (path, size) downloaded
    by the workers' fetcher."""
    if not cached.exists():
        fetcher = NextcloudFetcher(engine.settings.nextcloud.max_download_bytes)
        with tempfile.TemporaryDirectory(prefix="recognize-") as folder:
            try:
                local = await fetcher.download(owner, file[0], Path(folder), file[1])
                cached = await asyncio.to_thread(make, local)
            except FileGone:
                raise HTTPException(status_code=404, detail="the photo is gone") from None
            except MediaError as error:
                raise HTTPException(422, f"the photo cannot be shown: {error}") from None
            except TransientError as error:
                raise HTTPException(status_code=503, detail=f"try again later: {error}") from None
    return FileResponse(cached, media_type="image/jpeg", headers={"Cache-Control": IMAGE_CACHE})
