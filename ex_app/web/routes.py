"""Routes Nextcloud calls besides the life cycle: the Files menu action and progress.

Every route here sits behind AppAPI's authentication (see :mod:`ex_app.main`); the user a
request acts for is the one AppAPI authenticated.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from nc_py_api.files import ActionFileInfoEx

from ex_app.work.nextcloud_service import RecognizeService
from ex_app.work.progress import measure_progress

router = APIRouter(prefix="/api")

FILES_ACTION_ROUTE = "/api/files-action"


def service_of(request: Request) -> RecognizeService:
    return request.app.state.service


@router.post("/files-action")
async def files_action(request: Request, selection: ActionFileInfoEx) -> dict:
    """Queue the selected files (folders recursively) for analysis, for the calling user."""
    user = request.scope.get("username", "")
    if not user:
        raise HTTPException(status_code=400, detail="the action needs a user")
    queued = await service_of(request).queue_selection(user, selection.files)
    return {"queued": queued}


@router.get("/progress")
async def progress(request: Request) -> dict:
    """Per analyzer: done, pending, failed, throughput and time left; and the loop's state."""
    service = service_of(request)
    with service.current_engine.sessions() as session:
        analyzers = [p.as_dict() for p in measure_progress(session)]
    cycle = service.last_cycle
    return {
        "running": service.running,
        "cycles": service.cycles,
        "last_error": service.last_error,
        "last_cycle": None if cycle is None else {
            "quiet": cycle.quiet,
            "processed": cycle.processed,
            "persons": cycle.persons,
            "sync": None if cycle.sync is None else vars(cycle.sync),
        },
        "analyzers": analyzers,
    }
