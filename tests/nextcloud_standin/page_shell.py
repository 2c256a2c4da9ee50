"""The page Nextcloud renders around an ExApp's top menu entry, per release.

``GET /index.php/apps/app_api/embedded/<appid>/<name>`` is AppAPI's
``TopMenuController::viewExAppPage`` (nextcloud/app_api ``lib/Controller/TopMenuController.php``,
the same on stable33, stable34 and main): a ``TemplateResponse`` of ``templates/embedded.php``
(``<div id="content"></div>``), rendered as a user page. So the server wraps it in
``core/templates/layout.user.php`` with what ``OC\\TemplateLayout`` gathers:

- the initial states, each an ``<input type="hidden" id="initial-state-<app>-<key>">`` holding
  base64 of its JSON, first in ``<body>``. ``core/apps`` is the top menu:
  ``array_values($navigationManager->getAll())`` (a JSON list) since Nextcloud 30; before, the
  array keyed by entry id (a JSON object), which @nextcloud/vue 9's ``NcAppContent`` cannot
  read (``apps.find is not a function``, seen on a real 29.0.6). ``core/active-app`` is the entry
  ``ExAppUiMiddleware`` makes active: ``app_api_<appid>_<name>``. ``JSConfigHelper`` adds
  ``core/config`` and ``core/capabilities`` (and, inline, the ``_oc_*`` globals core's script
  turns into ``window.OC``; ``OC.config.version`` is what @nextcloud/vue reads to pick its
  styles for the release).
- ``<head data-user data-user-displayname data-requesttoken>`` (@nextcloud/auth reads these),
  the stylesheets, then every script with ``defer`` and a nonce, core's first; the inline
  ``_oc_*`` script last (not deferred, so it runs before all of them).
- the ExApp's registered scripts and styles: AppAPI adds them as ``app_api/js/proxy_js/<i>`` and
  ``app_api/css/proxy/<appid>/<path>``, and ``ExAppUiMiddleware::beforeOutput`` rewrites both to
  ``/index.php/apps/app_api/proxy/<appid>/<path>.js|.css``, keeping the ``?v=`` suffix.
- ``<main id="content" class="app-app_api">`` around the template's own ``<div id="content">``
  (two elements with that id: ``#content`` finds the ``<main>``), ``#skip-actions`` (where
  ``NcContent`` teleports its keyboard help) and the header's empty mount points.

Sources read: nextcloud/app_api stable33, stable34 and main (controller, middleware, scripts and
styles services, the navigation entry of LoadMenuEntriesListener); nextcloud/server's
``lib/private/TemplateLayout.php``, ``lib/private/legacy/template/functions.php`` and
``core/templates/layout.user.php`` as a 30.x/31.x tree and a 32.0.8 tree have them (the
``array_values`` of ``core/apps`` is in both; no 33, 34 or 35 server tree could be read file by
file, and @nextcloud/vue's changelog names the list format "core.apps format in Nextcloud 30").

What is not Nextcloud's: core's own scripts and stylesheets are not served here. At their paths
this module serves stand-ins: a script that builds ``window.OC`` from the inline globals, as
core's does, and the few layout and theme rules the page relies on.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import secrets
from dataclasses import dataclass
from typing import Any

from PIL import Image
from starlette.responses import Response
from starlette.routing import Route

CORE_SCRIPTS = ("/dist/core-common.js", "/dist/core-main.js")
CORE_STYLES = ("/core/css/server.css", "/apps/theming/theme/default.css")
FAVICON = "/core/img/favicon.ico"  # image_path('app_api', 'favicon.ico'): AppAPI has none, core's


@dataclass(frozen=True)
class Page:
    """What one rendering of the embedded page needs."""

    server_version: tuple[int, int, int]
    app_id: str
    entry: str  # the top menu entry's name
    entry_display_name: str
    entry_icon: str
    user: str
    user_display_name: str
    admin: bool
    request_token: str
    scripts: tuple[str, ...]  # paths the ExApp registered for the entry, without ".js"
    styles: tuple[str, ...]  # without ".css"
    capabilities: dict[str, Any]  # the user's (JSConfigHelper: getCapabilities(false, true))
    app_version: str = "0.1.0"
    webroot: str = ""

    @property
    def active_entry(self) -> str:
        return f"app_api_{self.app_id}_{self.entry}"

    @property
    def proxy(self) -> str:
        return f"{self.webroot}/index.php/apps/app_api/proxy/{self.app_id}"


def navigation(page: Page) -> list[dict[str, Any]]:
    """The top menu as ``getAll()`` returns it: Files, then the ExApp's entry (active here)."""
    entries = [
        {"id": "files", "order": 0, "href": f"{page.webroot}/index.php/apps/files/",
         "icon": f"{page.webroot}/apps/files/img/app.svg", "type": "link", "name": "Files",
         "app": "files", "default": True},
        {"id": page.active_entry, "type": "link", "app": "app_api",
         "href": f"{page.webroot}/index.php/apps/app_api/embedded/{page.app_id}/{page.entry}",
         "icon": f"{page.proxy}/{page.entry_icon.lstrip('/')}", "name": page.entry_display_name,
         "default": False},
    ]
    for entry in entries:  # NavigationManager::add
        entry.update(active=entry["id"] == page.active_entry, classes="", unread=0)
        entry.setdefault("order", 100)
    return entries


def core_apps(page: Page) -> list[dict[str, Any]] | dict[str, dict[str, Any]]:
    """``core/apps``: a list since Nextcloud 30, an object keyed by entry id before."""
    entries = navigation(page)
    return entries if page.server_version >= (30, 0, 0) else {e["id"]: e for e in entries}


def _config(page: Page) -> dict[str, Any]:
    major, minor, micro = page.server_version
    return {
        "auto_logout": False, "blacklist_files_regex": "\\.(part|filepart)$", "loglevel": 2,
        "lost_password_link": None, "modRewriteWorking": False,
        "no_unsupported_browser_warning": False, "session_keepalive": True,
        "session_lifetime": 1440, "sharing.maxAutocompleteResults": 25,
        "sharing.minSearchStringLength": 0, "version": f"{major}.{minor}.{micro}.1",
        "versionstring": f"{major}.{minor}.{micro}", "enable_non-accessible_features": True,
    }


def initial_states(page: Page) -> dict[str, Any]:
    """Every initial state of the page, ``app-key`` → value, in the order the server provides them."""
    settings = [{"id": "settings", "order": 3, "href": f"{page.webroot}/index.php/settings/user",
                 "name": "Personal settings" if page.admin else "Settings", "type": "settings",
                 "icon": f"{page.webroot}/apps/settings/img/personal.svg", "active": False,
                 "classes": "", "unread": 0}]
    states: dict[str, Any] = {
        "core-active-app": page.active_entry,
        "core-apps": core_apps(page),
    }
    if page.server_version >= (32, 0, 0):  # from core's config lexicon
        states["unified-search-min-search-length"] = 1
    return states | {
        "core-settingsNavEntries": {entry["id"]: entry for entry in settings},
        "core-projects_enabled": False,
        "core-config": _config(page),
        "core-capabilities": page.capabilities,
        "core-versionHash": _version_hash(page),
    }


def _version_hash(page: Page) -> str:
    """TemplateLayout's cache buster: 8 hex digits of an md5 over the installed versions."""
    versions = ",".join((".".join(map(str, page.server_version)), page.app_version))
    return hashlib.md5(versions.encode()).hexdigest()[:8]


def _inline_globals(page: Page) -> str:
    """JSConfigHelper::getConfig: the legacy ``var`` globals (only those core's script reads)."""
    values = {
        "_oc_debug": "false",
        "_oc_isadmin": "true" if page.admin else "false",
        "backendAllowsPasswordConfirmation": "true",
        "oc_dataURL": "false",
        "_oc_webroot": json.dumps(page.webroot),
        "_oc_appswebroots": json.dumps({"files": f"{page.webroot}/apps/files",
                                        "app_api": f"{page.webroot}/apps/app_api"}),
        "_oc_config": json.dumps(_config(page)),
        "_theme": json.dumps({"entity": "Nextcloud", "name": "Nextcloud", "productName": "Nextcloud",
                              "title": "Nextcloud", "slogan": "a safe home for all your data"}),
    }
    return "".join(f"var {name}={value};\n" for name, value in values.items())


def render(page: Page) -> str:
    """The HTML the server answers for the embedded page."""
    nonce = base64.b64encode(secrets.token_bytes(16)).decode()
    suffix = f"?v={_version_hash(page)}-0"
    styles = [f"{page.webroot}{path}{suffix}" for path in CORE_STYLES]
    styles += [f"{page.proxy}/{path.lstrip('/')}.css{suffix}" for path in page.styles]
    scripts = [f"{page.webroot}{path}{suffix}" for path in CORE_SCRIPTS]
    scripts += [f"{page.proxy}/{path.lstrip('/')}.js{suffix}" for path in page.scripts]
    attr = html.escape
    states = "\n".join(
        f'<input type="hidden" id="initial-state-{attr(key)}" '
        f'value="{base64.b64encode(json.dumps(value).encode()).decode()}">'
        for key, value in initial_states(page).items()
    )
    head_links = "\n".join(f'<link rel="stylesheet" href="{attr(url)}">' for url in styles)
    head_scripts = "\n".join(f'<script nonce="{nonce}" defer src="{attr(url)}"></script>' for url in scripts)
    modern = page.server_version >= (30, 0, 0)
    start, end = ("header-start", "header-end") if modern else ("header-left", "header-right")
    return f"""<!DOCTYPE html>
<html class="ng-csp" data-placeholder-focus="false" lang="en" data-locale="en" translate="no" dir="ltr">
<head data-user="{attr(page.user)}" data-user-displayname="{attr(page.user_display_name)}" data-requesttoken="{attr(page.request_token)}">
<meta charset="utf-8">
<title>{attr(page.entry_display_name)} - Nextcloud</title>
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<meta name="apple-mobile-web-app-capable" content="yes">
<meta name="theme-color" content="#00679e">
<link rel="icon" href="{page.webroot}{FAVICON}">
{head_links}
{head_scripts}
<script nonce="{nonce}">
{_inline_globals(page)}</script>
</head>
<body id="body-user" data-theme-default data-themes="default">
<noscript><div id="nojavascript"><div>This application requires JavaScript for correct operation.</div></div></noscript>
{states}
<div id="skip-actions">
<a href="#app-content" class="button primary skip-navigation skip-content">Skip to main content</a>
<a href="#app-navigation" class="button primary skip-navigation">Skip to navigation of app</a>
</div>
<header id="header">
<div class="{start}"><a href="{page.webroot}/index.php" aria-label="Go to Files" id="nextcloud"><div class="logo logo-icon"></div></a>
<nav id="{start}__appmenu"></nav></div>
<div class="{end}"><div id="unified-search"></div><div id="notifications"></div><div id="user-menu"></div></div>
</header>
<main id="content" class="app-app_api">
<h1 class="hidden-visually" id="page-heading-level-1">{attr(page.entry_display_name)}</h1>

<div id="content"></div>
</main>
<div id="profiler-toolbar"></div>
</body>
</html>
"""


# Stand-ins for core's own files (Nextcloud's are not part of this repository).
_CORE_MAIN = """/* stand-in for core-main.js: window.OC from the inline globals, as core builds it */
window.OC = Object.assign(window.OC || {}, {
    config: window._oc_config, webroot: window._oc_webroot, appswebroots: window._oc_appswebroots,
    debug: window._oc_debug, isUserAdmin: () => window._oc_isadmin,
    coreApps: ['', 'admin', 'log', 'core/search', 'core', '3rdparty'],
    theme: window._theme,
});
"""
_CORE_COMMON = "/* stand-in for core-common.js: the shared libraries core's pages load */\n"
_SERVER_CSS = """/* stand-in for core/css/server.css: the user layout's frame */
html, body { margin: 0; height: 100%; }
a { color: inherit; text-decoration: none; cursor: pointer; }
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif;
  font-size: var(--default-font-size); line-height: 1.5; color: var(--color-main-text);
  background-color: var(--color-background-plain); }
#header { position: fixed; inset-block-start: 0; inset-inline: 0; height: var(--header-height);
  display: flex; justify-content: space-between; align-items: center; z-index: 2000;
  background-color: var(--color-primary-element); }
#header .logo { width: 62px; height: 44px; margin-inline: 12px; }
#skip-actions { position: absolute; overflow: hidden; z-index: 9999; top: -999px; inset-inline-start: 3px; }
.hidden-visually { position: absolute; inset-inline-start: -10000px; width: 1px; height: 1px; overflow: hidden; }
#content { box-sizing: border-box; position: relative; display: flex; overflow: clip;
  margin: var(--body-container-margin); margin-top: var(--header-height);
  width: calc(100% - 2 * var(--body-container-margin));
  height: calc(100% - var(--header-height) - var(--body-container-margin));
  border-radius: var(--body-container-radius); background-color: var(--color-main-background); }
#content-vue { position: relative; display: flex; width: 100%; height: 100%; }
"""
_THEME_CSS = """/* stand-in for the theming app's default theme: the variables the components use */
:root, [data-theme-default] {
  --color-main-background: #ffffff; --color-main-background-blur: rgba(255,255,255,.8);
  --color-background-plain: #00679e; --color-main-text: #222222;
  --color-text-maxcontrast: #6b6b6b; --color-background-hover: #f5f5f5;
  --color-background-dark: #ededed; --color-border: #ededed; --color-border-dark: #dbdbdb;
  --color-border-maxcontrast: #7d7d7d; --color-primary-element: #00679e;
  --color-primary-element-hover: #1a769f; --color-primary-element-text: #ffffff;
  --color-primary-element-light: #e5eff5; --color-primary-element-light-hover: #dbe4ea;
  --color-primary-element-light-text: #00293f; --color-error: #db0606; --color-success: #2d7b41;
  --color-box-shadow: rgba(77,77,77,.5); --default-clickable-area: 34px;
  --default-grid-baseline: 4px; --border-radius-element: 8px; --border-radius-large: 12px;
  --border-radius-container-large: 16px; --default-font-size: 15px; --font-size-small: 13px;
  --header-height: 50px; --animation-quick: 100ms; --animation-slow: 300ms;
  --border-width-input-focused: 2px; --body-container-margin: 4px;
  --body-container-radius: 12px; --app-navigation-padding: 8px;
}
"""


def _favicon() -> bytes:
    """A 16 × 16 icon in the theme's primary colour."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 103, 158)).save(out, format="ICO")
    return out.getvalue()


def core_routes() -> list[Route]:
    """Routes serving the stand-ins for core's scripts and stylesheets at their paths."""
    files = {
        FAVICON: (_favicon(), "image/x-icon"),
        CORE_SCRIPTS[0]: (_CORE_COMMON, "text/javascript"),
        CORE_SCRIPTS[1]: (_CORE_MAIN, "text/javascript"),
        CORE_STYLES[0]: (_SERVER_CSS, "text/css"),
        CORE_STYLES[1]: (_THEME_CSS, "text/css"),
    }

    def serve(path: str):
        body, media_type = files[path]

        async def endpoint(request) -> Response:
            return Response(body, media_type=media_type)
        return endpoint

    return [Route(path, serve(path)) for path in files]
