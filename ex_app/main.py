"""Recognize as a Nextcloud ExApp: the FastAPI app AppAPI talks to.

Routes: ``/heartbeat`` (public), ``/init`` (fetch the enabled models, reporting progress
to AppAPI), ``/enabled`` (register or unregister the Files menu action, the admin
settings form and the file event webhooks; start or stop the work), and
:mod:`ex_app.web.routes`. Who may call what is decided for every request by
:mod:`ex_app.web.access`. Run it with ``python -m ex_app.main``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse
from nc_py_api import AsyncNextcloudApp, NextcloudExceptionNotFound
from nc_py_api.ex_app import run_app, set_handlers

from ex_app.analyzers.registry import needed_models
from ex_app.config import Settings
from ex_app.engine import Engine
from ex_app.models.runtime import Processor, resolve_engine
from ex_app.models.store import ModelUnavailable
from ex_app.people.operations import NotFound
from ex_app.service.recognize import RecognizeService
from ex_app.web import personal_settings
from ex_app.web.access import AppApiAccess
from ex_app.web.admin_settings import FORM_ID, settings_form
from ex_app.web.contacts import ContactsReader, router as contacts_router
from ex_app.web.people import mount_assets, register_page, router as people_router, unregister_page
from ex_app.web.routes import FILE_EVENTS, FILE_EVENTS_ROUTE, FILES_ACTION_ROUTE, router

log = logging.getLogger(__name__)

FILES_ACTION_NAME = "recognize_analyze"
FILES_ACTION_MIMES = "image,audio,video,httpd/unix-directory"
INIT_POLL_SECONDS = 0.5


async def fetch_models(nc: AsyncNextcloudApp, settings: Settings) -> None:
    """Fetch the enabled models, telling AppAPI the percentage of bytes done, or the error.

    A model only an optional analyzer needs (actions, landmarks) that cannot be had is
    logged, not an error: that analyzer waits until it is there.
    """
    store = Engine(settings).models
    required, optional = needed_models(settings)
    names = required + optional
    sizes = {name: max(store.manifest[name].size, 1) for name in names}
    done = dict.fromkeys(names, 0)

    def percent() -> int:
        return min(99, sum(done.values()) * 100 // sum(sizes.values()))

    def fetch_all() -> None:
        for name in names:
            try:
                store.fetch(name, lambda count, _total, name=name: done.__setitem__(name, count))
            except ModelUnavailable as error:
                if name in required:
                    raise
                log.warning("optional model %s is not available: %s", name, error)
            done[name] = sizes[name]

    fetching = asyncio.create_task(asyncio.to_thread(fetch_all))
    reported = -1
    while not fetching.done():
        if percent() != reported:
            reported = percent()
            await nc.set_init_status(reported)
        await asyncio.wait([fetching], timeout=INIT_POLL_SECONDS)
    try:
        fetching.result()
    except Exception as error:
        log.exception("fetching the models failed")
        await nc.set_init_status(percent(), f"Recognize could not fetch its models: {error}")
        return
    await nc.set_init_status(100)


async def has_webhooks(nc: AsyncNextcloudApp) -> bool:
    """Whether this Nextcloud's webhook_listeners app answers: it came with Nextcloud 30, an admin
    may disable it, and it registers no capability, so its own route is asked."""
    try:
        await nc.webhooks.get_list()
    except NextcloudExceptionNotFound:
        return False
    return True


async def register_ui(nc: AsyncNextcloudApp, settings: Settings) -> None:
    """The Files menu action (v2: the whole selection in one call), the admin and personal
    forms and the file event listeners."""
    await nc.ui.files_dropdown_menu.register_ex(FILES_ACTION_NAME, "Analyze with Recognize",
                                                FILES_ACTION_ROUTE, mime=FILES_ACTION_MIMES)
    await nc.ui.settings.register_form(settings_form(settings))
    await nc.ui.settings.register_form(
        personal_settings.settings_form(settings.nextcloud.users_enabled_by_default)
    )
    await register_page(nc)
    if await has_webhooks(nc):
        await nc.webhooks.unregister_all()  # none twice, whatever an earlier run left
        for event in FILE_EVENTS:
            await nc.webhooks.register("POST", FILE_EVENTS_ROUTE, event)
    else:
        log.info("no webhook_listeners app (disabled, or Nextcloud before 30): "
                 "new files wait for the periodic crawl")


async def unregister_ui(nc: AsyncNextcloudApp) -> None:
    await nc.ui.files_dropdown_menu.unregister(FILES_ACTION_NAME)
    await nc.ui.settings.unregister_form(FORM_ID)
    await unregister_page(nc)
    await nc.ui.settings.unregister_form(personal_settings.FORM_ID)
    if await has_webhooks(nc):
        await nc.webhooks.unregister_all()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ExApp, working with these settings (default: from the environment)."""
    settings = settings or Settings()
    service = RecognizeService(settings, settings_form)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = service  # for the routes' dependencies (ex_app.web.dependencies)
        app.state.people_undo = {}
        app.state.contacts_reader = ContactsReader()
        try:  # after a restart, resume the work when AppAPI has the app enabled
            if await AsyncNextcloudApp().enabled_state:
                service.start()
        except Exception:  # Nextcloud not reachable yet: /enabled will start the work
            log.warning("could not ask Nextcloud whether Recognize is enabled", exc_info=True)
        yield
        await service.stop()

    async def enabled_handler(enabled: bool, nc: AsyncNextcloudApp) -> str:
        try:
            if enabled:
                await register_ui(nc, settings)
                service.start()
            else:
                await service.stop()
                await unregister_ui(nc)
        except Exception as error:
            log.exception("switching Recognize %s failed", "on" if enabled else "off")
            return f"Recognize could not be {'enabled' if enabled else 'disabled'}: {error}"
        return ""

    app = FastAPI(lifespan=lifespan, title="Recognize", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(AppApiAccess)  # AppAPI's signature and each route's access level
    set_handlers(app, enabled_handler, default_init=False, map_app_static=False)

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, error: NotFound) -> JSONResponse:
        """Another user's person, face or file answers as if it did not exist."""
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.post("/init")
    async def init(tasks: BackgroundTasks) -> dict:
        """Start fetching the models; progress and errors go to AppAPI."""
        tasks.add_task(fetch_models, AsyncNextcloudApp(), settings)
        return {}

    app.include_router(router)
    app.include_router(people_router)
    app.include_router(contacts_router)
    mount_assets(app)
    return app


def main() -> None:
    """Serve the ExApp where AppAPI says (APP_HOST/APP_PORT, or its socket)."""
    logging.basicConfig(level=logging.INFO)
    settings = Settings()
    log.info("inference engine: %s on %s", resolve_engine(settings.inference.engine),
             Processor.this().describe())
    run_app(create_app(settings), log_level="info")


if __name__ == "__main__":
    main()
