"""Routes Nextcloud calls besides the life cycle: the Files menu action, file events
(webhooks) and progress.

Who may call them is decided in :mod:`ex_app.web.access`: the Files menu action and progress
need a signed-in user and act for that user; the webhooks are Nextcloud's own calls (signed
with no user or the user who enabled the app), never reachable through AppAPI's proxy.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException
from nc_py_api.files import ActionFileInfoEx
from pydantic import BaseModel

from ex_app.service.recognize import OptedOut
from ex_app.store.progress import measure_progress, measure_user_progress
from ex_app.web.dependencies import CurrentEngine, IsAdmin, Service, User

router = APIRouter(prefix="/api")

FILES_ACTION_ROUTE = "/api/files-action"
FILE_EVENTS_ROUTE = "/api/webhooks/files"
NODE_CREATED = "OCP\\Files\\Events\\Node\\NodeCreatedEvent"
NODE_WRITTEN = "OCP\\Files\\Events\\Node\\NodeWrittenEvent"
NODE_RENAMED = "OCP\\Files\\Events\\Node\\NodeRenamedEvent"
NODE_DELETED = "OCP\\Files\\Events\\Node\\NodeDeletedEvent"
FILE_EVENTS = (NODE_CREATED, NODE_WRITTEN, NODE_RENAMED, NODE_DELETED)


@router.post("/files-action")
async def files_action(selection: ActionFileInfoEx, user: User, service: Service) -> dict:
    """Queue the selected files (folders recursively) for analysis ahead of the backlog, for
    the calling user, who is notified when they are done. The selection's own ``userId`` is
    ignored: its paths are looked up in the signed-in user's files, as that user."""
    paths = [f"{item.directory.strip('/')}/{item.name}" for item in selection.files]
    if any(part in ("..", ".") for path in paths for part in path.split("/")):
        raise HTTPException(status_code=400, detail="a selected path leaves its folder")
    try:
        return {"queued": await service.queue(user, paths, request=True)}
    except OptedOut as error:
        raise HTTPException(status_code=403, detail=str(error)) from error
    except FileNotFoundError as error:  # not the user's to ask for, or gone
        raise HTTPException(status_code=404, detail=str(error)) from error


class WebhookCall(BaseModel):
    """What webhook_listeners posts: the event serialized, the acting user and the time."""

    event: dict[str, Any]
    user: dict[str, Any] | None = None
    time: int = 0


@router.post("/webhooks/files")
async def file_event(call: WebhookCall, service: Service) -> dict:
    """A file event from webhook_listeners: queue new and changed media, follow moves,
    forget deleted files (their faces and results). The files' owner is read from their
    paths (the owner's view); the acting user in the payload decides nothing."""
    event = call.event
    if event.get("class") == NODE_RENAMED:
        source, target = _owner_path(event["source"]["path"]), _owner_path(event["target"]["path"])
        if source and target and source[0] == target[0]:
            await service.moved(source[0], source[1], target[1])
            return {"queued": 0}
    else:
        target = _owner_path(event["node"]["path"]) if "node" in event else None
    if target is None:  # trash bin, versions: not media of anyone's files
        return {"queued": 0}
    owner, path = target
    if event.get("class") == NODE_DELETED:
        return {"forgotten": await service.deleted(owner, path, int(event["node"].get("id", 0)))}
    try:
        return {"queued": await service.queue(owner, [path])}
    except (OptedOut, FileNotFoundError):  # gone again since the event
        return {"queued": 0}


def _owner_path(path: str) -> tuple[str, str] | None:
    """("alice", "Photos/a.jpg") from "/alice/files/Photos/a.jpg" (the owner's view); None
    for paths outside a user's files or with a dot segment."""
    if any(part in (".", "..") for part in path.split("/")):
        return None
    owner, _, rest = path.strip("/").partition("/")
    if not owner or rest != "files" and not rest.startswith("files/"):
        return None
    return owner, rest[len("files"):].strip("/")


@router.get("/progress")
def progress(user: User, admin: IsAdmin, service: Service, engine: CurrentEngine) -> dict:
    """Per analyzer: done, pending, failed, throughput and time left, and the loop's state.

    An admin (as Nextcloud says) gets the instance's figures and each user's; any other user
    their own only.
    """
    with engine.sessions() as session:
        per_user = measure_user_progress(session)
        instance = measure_progress(session) if admin else per_user.get(user, [])
    users = per_user if admin else {user: per_user.get(user, [])}
    return {
        "running": service.running,
        "cycles": service.cycles,
        "last_error": service.last_error if admin else None,
        "last_cycle": asdict(service.last_cycle) if admin and service.last_cycle else None,
        "analyzers": [p.as_dict() for p in instance],
        "users": {name: [p.as_dict() for p in rows] for name, rows in users.items()},
    }
