"""What routes are given through FastAPI's ``Depends``: the signed-in user, a Nextcloud client
acting as that user, whether that user is an admin, the service, its engine and the People
page's undo log.

:func:`ex_app.main.create_app`'s lifespan puts the service and the undo log on ``app.state``;
:class:`ex_app.web.access.AppApiAccess` leaves the user AppAPI signed for in the request's
scope. Tests replace any of these with ``app.dependency_overrides``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from nc_py_api import AsyncNextcloudApp, NextcloudException

from ex_app.engine import Engine
from ex_app.people.undo import Snapshot
from ex_app.service.recognize import RecognizeService


def signed_in_user(request: Request) -> str:
    """The user a USER route acts for (the access middleware lets none through without one)."""
    user = request.scope.get("username", "")
    if not user:
        raise HTTPException(status_code=401, detail="this route needs a signed-in user")
    return user


User = Annotated[str, Depends(signed_in_user)]


def user_client(user: User) -> AsyncNextcloudApp:
    """A Nextcloud client acting as the signed-in user."""
    return AsyncNextcloudApp(user=user)


UserClient = Annotated[AsyncNextcloudApp, Depends(user_client)]


async def user_is_admin(nc: UserClient) -> bool:
    """Whether the signed-in user is in Nextcloud's admin group, as Nextcloud says; False
    when Nextcloud cannot say."""
    try:
        return "admin" in (await nc.users.get_user()).groups
    except NextcloudException:  # say, AppAPI refusing a disabled app's calls
        return False


IsAdmin = Annotated[bool, Depends(user_is_admin)]


def the_service(request: Request) -> RecognizeService:
    """The ExApp's service (its crawl loop and workers)."""
    return request.app.state.service


Service = Annotated[RecognizeService, Depends(the_service)]


def current_engine(service: Service) -> Engine:
    """The service's engine: its settings, store and queue (no Nextcloud call)."""
    return service.current_engine


CurrentEngine = Annotated[Engine, Depends(current_engine)]


def undo_log(request: Request) -> dict[str, Snapshot]:
    """Each user's last People page correction, to undo (kept in memory)."""
    return request.app.state.people_undo


UndoLog = Annotated[dict[str, Snapshot], Depends(undo_log)]
