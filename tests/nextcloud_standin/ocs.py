"""OCS endpoints (v1 and v2 envelopes) of the Nextcloud core, AppAPI, webhook_listeners and notifications."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .auth import AuthFailed, exapp_user
from .state import NextcloudState

RESPOND_UNAUTHORISED = 997
RESPOND_NOT_FOUND = 998
RESPOND_SERVER_ERROR = 996
# What ocs/v1.php and ocs/v2.php answer themselves (no controller): a route no app defines, or an
# uncaught error. Their v1 meta has no totalitems/itemsperpage; v2 says 404 or 500 instead.
CORE_FAILURES = {RESPOND_NOT_FOUND: 404, RESPOND_SERVER_ERROR: 500}
NOT_FOUND_MESSAGE = ("Invalid query, please check the syntax. API specifications are here: "
                     "http://www.freedesktop.org/wiki/Specifications/open-collaboration-services.\n")


class OcsError(Exception):
    """An OCSException: its ``status`` becomes the envelope's statuscode."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def ocs_response(request: Request, data: Any, status: int = 200, message: str = "") -> Response:
    """Render ``data`` in the OCS envelope of the request's version, as Nextcloud's V1/V2Response do."""
    v2 = request.url.path.startswith("/ocs/v2.php/")
    if status in CORE_FAILURES:
        return _core_failure(request, status, message, v2)
    if v2:
        ocs_status = status
        ok = 200 <= status < 300
        if status == RESPOND_UNAUTHORISED:
            http_status = 401
        elif status == 999:
            http_status = 500
        elif status < 200 or status > 600:
            http_status = 400
        else:
            http_status = status
    else:
        ocs_status = 100 if status == 200 else status
        ok = ocs_status == 100
        http_status = 401 if status == RESPOND_UNAUTHORISED else 200
    meta: dict[str, Any] = {"status": "ok" if ok else "failure", "statuscode": ocs_status,
                            "message": "OK" if ok else message}
    if not v2:
        meta.update(totalitems="", itemsperpage="")
    return render_envelope(request, {"ocs": {"meta": meta, "data": data}}, http_status)


def _core_failure(request: Request, status: int, message: str, v2: bool) -> Response:
    """ocs/v*.php's own answer (OC_API::respond): data [], no paging fields, v2 with an HTTP status code."""
    ocs_status = CORE_FAILURES[status] if v2 else status
    meta = {"status": "failure", "statuscode": ocs_status, "message": message}
    return render_envelope(request, {"ocs": {"meta": meta, "data": []}}, ocs_status if v2 else 200)


def render_envelope(request: Request, envelope: dict[str, Any], http_status: int) -> Response:
    """The envelope as JSON or XML, as the request asks."""
    if _wants_json(request):
        return Response(json.dumps(envelope), http_status, media_type="application/json; charset=utf-8")
    root = ElementTree.Element("ocs")
    _to_xml(root, envelope["ocs"])
    body = b'<?xml version="1.0"?>\n' + ElementTree.tostring(root, encoding="utf-8")
    return Response(body, http_status, media_type="application/xml; charset=utf-8")


def _wants_json(request: Request) -> bool:
    fmt = request.query_params.get("format")
    if fmt is not None:
        return fmt == "json"
    return "json" in request.headers.get("accept", "").split(",")[0]


def _to_xml(parent: ElementTree.Element, value: Any) -> None:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        parent.text = "" if value is None else str(int(value) if isinstance(value, bool) else value)
        return
    for key, item in items:
        _to_xml(ElementTree.SubElement(parent, "element" if isinstance(key, int) else str(key)), item)


Handler = Callable[[Request, str, dict[str, Any]], Awaitable[Any]]


class OcsApi:
    """The OCS routes, each guarded as its Nextcloud controller is."""

    def __init__(self, state: NextcloudState) -> None:
        self.state = state
        self._row_ids: dict[tuple[int, Any], int] = {}  # (store, key) -> id of its database row

    def routes(self) -> list[Route]:
        table: list[tuple[str, str, str, Handler]] = [
            ("GET", "/cloud/capabilities", "public", self.capabilities),
            ("GET", "/cloud/users", "user", self.users),
            ("GET", "/cloud/user", "user", self.current_user),
            ("POST", "/apps/app_api/api/v1/log", "appapi", self.log),
            ("GET", "/apps/app_api/api/v1/users", "appapi", self.appapi_users),
            ("PUT", "/apps/app_api/ex-app/status", "appapi", self.init_status),
            ("PUT", "/apps/app_api/apps/status/{app_id}", "appapi", self.init_status),
            ("GET", "/apps/app_api/ex-app/state", "appapi", self.enabled_state),
            ("POST", "/apps/app_api/api/v1/ex-app/config", "appapi", self.config_set),
            ("POST", "/apps/app_api/api/v1/ex-app/config/get-values", "appapi", self.config_get),
            ("DELETE", "/apps/app_api/api/v1/ex-app/config", "appapi", self.config_delete),
            ("POST", "/apps/app_api/api/v1/ex-app/preference", "appapi", self.preference_set),
            ("POST", "/apps/app_api/api/v1/ex-app/preference/get-values", "appapi", self.preference_get),
            ("DELETE", "/apps/app_api/api/v1/ex-app/preference", "appapi", self.preference_delete),
            ("POST", "/apps/app_api/api/v1/notification", "appapi", self.notification_send),
            ("POST", "/apps/app_api/api/v1/ui/files-actions-menu", "appapi", self.file_action_register),
            ("POST", "/apps/app_api/api/v2/ui/files-actions-menu", "appapi", self.file_action_register),
            ("DELETE", "/apps/app_api/api/v1/ui/files-actions-menu", "appapi", self.file_action_unregister),
            ("GET", "/apps/app_api/api/v1/ui/files-actions-menu", "appapi", self.file_action_get),
            ("POST", "/apps/app_api/api/v1/ui/top-menu", "appapi", self.top_menu_register),
            ("DELETE", "/apps/app_api/api/v1/ui/top-menu", "appapi", self.top_menu_unregister),
            ("GET", "/apps/app_api/api/v1/ui/top-menu", "appapi", self.top_menu_get),
            ("POST", "/apps/app_api/api/v1/ui/script", "appapi", self.ui_resource_set),
            ("DELETE", "/apps/app_api/api/v1/ui/script", "appapi", self.ui_resource_delete),
            ("GET", "/apps/app_api/api/v1/ui/script", "appapi", self.ui_resource_get),
            ("POST", "/apps/app_api/api/v1/ui/style", "appapi", self.ui_resource_set),
            ("DELETE", "/apps/app_api/api/v1/ui/style", "appapi", self.ui_resource_delete),
            ("GET", "/apps/app_api/api/v1/ui/style", "appapi", self.ui_resource_get),
            ("POST", "/apps/app_api/api/v1/ui/settings", "appapi", self.settings_register),
            ("DELETE", "/apps/app_api/api/v1/ui/settings", "appapi", self.settings_unregister),
            ("GET", "/apps/app_api/api/v1/ui/settings", "appapi", self.settings_get),
            ("GET", "/apps/webhook_listeners/api/v1/webhooks", "admin", self.webhooks_list),
            ("POST", "/apps/webhook_listeners/api/v1/webhooks", "admin", self.webhook_create),
            ("GET", "/apps/webhook_listeners/api/v1/webhooks/{webhook_id:int}", "admin", self.webhook_get),
            ("POST", "/apps/webhook_listeners/api/v1/webhooks/{webhook_id:int}", "admin", self.webhook_update),
            ("DELETE", "/apps/webhook_listeners/api/v1/webhooks/{webhook_id:int}", "admin", self.webhook_delete),
            ("DELETE", "/apps/webhook_listeners/api/v1/webhooks/byappid/{app_id}", "admin", self.webhooks_delete_app),
            ("GET", "/apps/notifications/api/v2/notifications", "user", self.notifications_list),
            ("DELETE", "/apps/notifications/api/v2/notifications/{notification_id:int}", "user",
             self.notification_delete),
        ]
        return [Route(f"/ocs/v{v}.php{path}", self._endpoint(guard, handler, path.startswith("/apps/webhook_listeners/")),
                      methods=[method])
                for method, path, guard, handler in table for v in (1, 2)]

    def _endpoint(self, guard: str, handler: Handler, webhooks: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if webhooks and not self.state.webhook_listeners:  # before Nextcloud 30 no such app: unknown routes
                return ocs_response(request, None, RESPOND_NOT_FOUND, NOT_FOUND_MESSAGE)
            try:
                user = self._authorize(request, guard)
                params = await _params(request)
                data = await handler(request, user, params)
                response = ocs_response(request, data)
                if handler in (self.capabilities, self.notifications_list):  # their controllers set one
                    digest = hashlib.md5(json.dumps(data, sort_keys=True).encode()).hexdigest()
                    response.headers["ETag"] = f'"{digest}"'
                return response
            except OcsError as e:
                return ocs_response(request, [], e.status, e.message)
        return endpoint

    def _authorize(self, request: Request, guard: str) -> str:
        """The acting user; raises as the AppAPI middleware or Nextcloud's security middleware would."""
        if guard == "public":
            try:
                return exapp_user(self.state, request.headers, request.url.path)
            except AuthFailed:
                return ""
        try:
            user = exapp_user(self.state, request.headers, request.url.path)
        except AuthFailed as e:
            if guard == "appapi":
                raise OcsError(RESPOND_UNAUTHORISED, "AppAPI authentication failed") from e
            raise OcsError(RESPOND_UNAUTHORISED, "Current user is not logged in") from e
        if guard == "user" and not user:
            raise OcsError(RESPOND_UNAUTHORISED, "Current user is not logged in")
        if guard == "admin" and user and not self.state.users[user].admin:
            raise OcsError(403, "Logged in account must be an admin")
        return user

    # --- core ----------------------------------------------------------------------------------

    async def capabilities(self, request: Request, user: str, params: dict) -> Any:
        """Without a user (an ExApp's own requests) Nextcloud lists only the public capabilities."""
        major, minor, micro = self.state.nextcloud_version
        version = {"major": major, "minor": minor, "micro": micro, "string": f"{major}.{minor}.{micro}",
                   "edition": "", "extendedSupport": False}
        public = {
            "bruteforce": {"delay": 0, "allow-listed": False},
            "theming": {"name": "Nextcloud", "url": "https://nextcloud.com", "slogan": "a safe home for all your data",
                        "color": "#00679e", "color-text": "#ffffff", "color-element": "#00679e",
                        "color-element-bright": "#00679e", "color-element-dark": "#00679e",
                        "logo": f"{request.base_url}core/img/logo/logo.svg?v=0", "background": "#00679e",
                        "background-plain": True, "background-default": True,
                        "logoheader": f"{request.base_url}core/img/logo/logo.svg?v=0",
                        "favicon": f"{request.base_url}core/img/logo/logo.svg?v=0"},
            "app_api": {"version": self.state.aa_version},
        }
        if not user:
            return {"version": version, "capabilities": public}
        capabilities = public | {
            "core": {"pollinterval": 60, "webdav-root": "remote.php/webdav", "reference-api": True,
                     "reference-regex": "", "mod-rewrite-working": False},
            "dav": {"chunking": "1.0", "bulkupload": "1.0"},
            "files": {"bigfilechunking": True, "blacklisted_files": [".htaccess"], "undelete": True,
                      "versioning": True, "version_labeling": True, "version_deletion": True},
            "systemtags": {"enabled": True},
            "notifications": {"ocs-endpoints": ["list", "get", "delete", "delete-all", "icons", "rich-strings",
                                                "action-web", "user-status", "exists"],
                              "push": ["devices", "object-data", "delete"],
                              "admin-notifications": ["ocs", "cli"]},
            "app_api": {"loglevel": self.state.loglevel, "version": self.state.aa_version},
        }
        # webhook_listeners registers no capability (its lib/ has no Capabilities class): an ExApp
        # learns of it from the server version or from its routes answering
        return {"version": version, "capabilities": capabilities}

    async def users(self, request: Request, user: str, params: dict) -> Any:
        state = self.state
        if not state.users[user].admin:
            return {"users": []}
        ids = [u for u in sorted(state.users) if params.get("search", "").lower() in u.lower()]
        offset = int(params.get("offset") or 0)
        limit = int(params["limit"]) if params.get("limit") else None
        return {"users": ids[offset:None if limit is None else offset + limit]}

    async def current_user(self, request: Request, user: str, params: dict) -> Any:
        """Provisioning API's /cloud/user (the fields Recognize reads, and their neighbours)."""
        account = self.state.users[_require_user(user)]
        return {"enabled": True, "id": account.user_id, "displayname": account.display_name,
                "display-name": account.display_name, "email": None,
                "groups": (["admin"] if account.admin else []) + account.groups, "language": "en", "locale": ""}

    # --- AppAPI ------------------------------------------------------------------------------

    async def log(self, request: Request, user: str, params: dict) -> Any:
        level = _int(params, "level")
        if not 0 <= level <= 4:
            raise OcsError(400, "Invalid log level")
        self.state.logs.append((level, str(params.get("message", ""))))
        return []

    async def appapi_users(self, request: Request, user: str, params: dict) -> Any:
        return sorted(self.state.users)

    async def init_status(self, request: Request, user: str, params: dict) -> Any:
        app = self.state.app
        if request.path_params.get("app_id", app.app_id) != app.app_id:
            raise OcsError(404)
        progress, error = _int(params, "progress"), str(params.get("error", ""))
        with self.state.lock:
            app.progress_history.append((progress, error))
            app.progress, app.error = progress, error
            if error:
                app.initializing = False
            elif progress >= 100:
                app.initializing, app.enabled = False, True
        return []

    async def enabled_state(self, request: Request, user: str, params: dict) -> Any:
        return int(self.state.app.enabled)

    async def config_set(self, request: Request, user: str, params: dict) -> Any:
        return self._store_set(self.state.app_config, None, params, sensitive_field=True)

    async def config_get(self, request: Request, user: str, params: dict) -> Any:
        return self._store_get(self.state.app_config, None, params)

    async def config_delete(self, request: Request, user: str, params: dict) -> Any:
        table = "appconfig_ex" if self.state.release.config_rows else "app config"
        return self._store_delete(self.state.app_config, None, params, table)

    async def preference_set(self, request: Request, user: str, params: dict) -> Any:
        return self._store_set(self.state.preferences, _require_user(user), params,
                               sensitive_field=self.state.aa_major >= 4)

    async def preference_get(self, request: Request, user: str, params: dict) -> Any:
        return self._store_get(self.state.preferences, _require_user(user), params)

    async def preference_delete(self, request: Request, user: str, params: dict) -> Any:
        table = "preferences_ex" if self.state.release.config_rows else "user config"
        return self._store_delete(self.state.preferences, _require_user(user), params, table)

    def _store_set(self, store: dict, user: str | None, params: dict, sensitive_field: bool) -> Any:
        key = str(params.get("configKey", ""))
        if not key:
            raise OcsError(400, "Config key cannot be empty")
        value = "" if params.get("configValue") is None else _php_string(params["configValue"])
        with self.state.lock:
            old_sensitive = store.get(_key(user, key), ("", 0))[1]
            sensitive = old_sensitive if params.get("sensitive") is None else int(bool(params["sensitive"]))
            store[_key(user, key)] = (value, sensitive)
            row_id = self._row_ids.setdefault((id(store), _key(user, key)), len(self._row_ids) + 1)
        # AppAPI before 35 answers with the saved row; from 35 with an entity never stored (IAppConfig)
        record: dict[str, Any] = {"id": row_id if self.state.release.config_rows else None}
        if user is not None:
            record["user_id"] = user
        record.update(appid=self.state.app.app_id, configkey=key, configvalue=value)
        if sensitive_field:
            record["sensitive"] = sensitive
        return record

    def _store_get(self, store: dict, user: str | None, params: dict) -> Any:
        keys = dict.fromkeys(str(k) for k in params.get("configKeys") or [])
        with self.state.lock:
            return [{"configkey": k, "configvalue": store[_key(user, k)][0]} for k in keys if _key(user, k) in store]

    def _store_delete(self, store: dict, user: str | None, params: dict, table: str) -> Any:
        with self.state.lock:
            found = [_key(user, str(k)) for k in params.get("configKeys") or [] if _key(user, str(k)) in store]
            for k in found:
                del store[k]
        if not found:
            raise OcsError(404, f"No {table} values deleted")
        return len(found)

    async def notification_send(self, request: Request, user: str, params: dict) -> Any:
        data = params.get("params") or {}
        subject = data.get("subject_params") or {}
        notification = {
            "notification_id": self.state.next_id(),
            "app": self.state.app.app_id,
            "user": user,
            "datetime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "object_type": str(data.get("object", "")),
            "object_id": str(data.get("object_id", "")),
            "subject": _render_rich(subject.get("rich_subject", ""), subject.get("rich_subject_params") or {}),
            "message": _render_rich(subject.get("rich_message", ""), subject.get("rich_message_params") or {}),
            "link": str(subject.get("link", "")),
            "subjectRich": str(subject.get("rich_subject", "")),
            "subjectRichParameters": subject.get("rich_subject_params") or [],
            "messageRich": str(subject.get("rich_message", "")),
            "messageRichParameters": subject.get("rich_message_params") or [],
            "icon": f"{request.base_url}apps/app_api/img/app-dark.svg",
            "shouldNotify": True,
            "actions": [],
        }
        self.state.notifications.append(notification)
        # AppAPI answers with the notification before the notifier prepared it: no texts, no icon yet
        unprepared = {k: notification[k] for k in ("app", "user", "datetime", "object_type", "object_id")}
        return unprepared | {"subject": "", "message": "", "link": notification["link"], "icon": ""}

    async def file_action_register(self, request: Request, user: str, params: dict) -> Any:
        name = str(params.get("name", ""))
        for required in ("name", "displayName", "actionHandler"):
            if not params.get(required):
                raise OcsError(400, f"Missing parameter {required}")
        v2 = "/api/v2/" in request.url.path
        default_action = str(params.get("defaultAction") or "") if v2 else ""
        if self.state.release.file_action_default and default_action not in ("", "default", "hidden"):
            raise OcsError(400, f"Invalid defaultAction '{default_action}' — must be '', 'default', or 'hidden'")
        self.state.file_actions[name] = {
            "id": self.state.next_id(), "appid": self.state.app.app_id, "name": name,
            "display_name": str(params["displayName"]), "mime": str(params.get("mime", "file")),
            "permissions": str(_int(params, "permissions", 31)), "order": _int(params, "order", 0),
            "icon": str(params.get("icon", "")).lstrip("/"),
            "action_handler": str(params["actionHandler"]).lstrip("/"),
            "version": "2.0" if v2 else "1.0",
        }
        if self.state.release.file_action_default:
            self.state.file_actions[name]["default_action"] = default_action or None
        return []

    async def file_action_unregister(self, request: Request, user: str, params: dict) -> Any:
        if self.state.file_actions.pop(str(params.get("name", "")), None) is None:
            raise OcsError(404, "FileActionMenu not found")
        return []

    async def file_action_get(self, request: Request, user: str, params: dict) -> Any:
        entry = self.state.file_actions.get(str(params.get("name", "")))
        if entry is None:
            raise OcsError(404, "FileActionMenu not found")
        return entry

    async def top_menu_register(self, request: Request, user: str, params: dict) -> Any:
        name = str(params.get("name", ""))
        self.state.top_menu[name] = {
            "id": self.state.next_id(), "appid": self.state.app.app_id, "name": name,
            "display_name": str(params.get("displayName", "")), "icon": str(params.get("icon", "")),
            "admin_required": _int(params, "adminRequired", 0),
        }
        return []

    async def top_menu_unregister(self, request: Request, user: str, params: dict) -> Any:
        """Removes the entry with the scripts and styles registered for it, as AppAPI does."""
        name = str(params.get("name", ""))
        with self.state.lock:
            if self.state.top_menu.pop(name, None) is None:
                raise OcsError(404, "No such Top Menu entry")
            for key in [k for k in self.state.ui_resources if k[1:3] == ("top_menu", name)]:
                del self.state.ui_resources[key]
        return []

    async def top_menu_get(self, request: Request, user: str, params: dict) -> Any:
        entry = self.state.top_menu.get(str(params.get("name", "")))
        if entry is None:
            raise OcsError(404, "No such Top Menu entry")
        return entry

    def _ui_resource_key(self, request: Request, params: dict) -> tuple[str, str, str, str]:
        """(script|style, type, name, path): what AppAPI's ui_scripts / ui_styles rows are keyed by."""
        kind = request.url.path.rpartition("/")[2]
        return kind, str(params.get("type", "")), str(params.get("name", "")), str(params.get("path", ""))

    async def ui_resource_set(self, request: Request, user: str, params: dict) -> Any:
        kind, type_, name, path = self._ui_resource_key(request, params)
        if not (type_ and name and path):
            raise OcsError(400, "Invalid parameters")
        self.state.ui_resources[(kind, type_, name, path)] = {
            "id": self.state.next_id(), "appid": self.state.app.app_id, "type": type_, "name": name,
            "path": path, **({"after_app_id": str(params.get("afterAppId") or "")} if kind == "script" else {}),
        }
        return []

    async def ui_resource_delete(self, request: Request, user: str, params: dict) -> Any:
        key = self._ui_resource_key(request, params)
        if self.state.ui_resources.pop(key, None) is None:
            raise OcsError(404, f"No such {key[0].capitalize()}")
        return []

    async def ui_resource_get(self, request: Request, user: str, params: dict) -> Any:
        key = self._ui_resource_key(request, params)
        entry = self.state.ui_resources.get(key)
        if entry is None:
            raise OcsError(404, f"No such {key[0].capitalize()}")
        return entry

    async def settings_register(self, request: Request, user: str, params: dict) -> Any:
        scheme = params.get("formScheme")
        if not isinstance(scheme, dict) or not scheme.get("id"):
            raise OcsError(400)
        self.state.settings_forms[str(scheme["id"])] = scheme | {"storage_type": "external"}
        return []

    async def settings_unregister(self, request: Request, user: str, params: dict) -> Any:
        if self.state.settings_forms.pop(str(params.get("formId", "")), None) is None:
            raise OcsError(404)
        return []

    async def settings_get(self, request: Request, user: str, params: dict) -> Any:
        scheme = self.state.settings_forms.get(str(params.get("formId", "")))
        if scheme is None:
            raise OcsError(404)
        return scheme

    # --- webhook_listeners ---------------------------------------------------------------------

    async def webhooks_list(self, request: Request, user: str, params: dict) -> Any:
        uri = params.get("uri")
        return [w for w in self.state.webhooks.values() if uri is None or w["uri"] == uri]

    async def webhook_get(self, request: Request, user: str, params: dict) -> Any:
        webhook = self.state.webhooks.get(request.path_params["webhook_id"])
        if webhook is None:
            raise OcsError(404, "Webhook not found")
        return webhook

    async def webhook_create(self, request: Request, user: str, params: dict) -> Any:
        return self._save_webhook(self.state.next_id(), user, params)

    async def webhook_update(self, request: Request, user: str, params: dict) -> Any:
        webhook_id = request.path_params["webhook_id"]
        if webhook_id not in self.state.webhooks:
            raise OcsError(400, "Webhook not found")
        return self._save_webhook(webhook_id, user, params)

    def _save_webhook(self, webhook_id: int, user: str, params: dict) -> dict:
        for required in ("httpMethod", "uri", "event"):
            if not params.get(required):
                raise OcsError(400, f"Missing parameter {required}")
        auth_method = params.get("authMethod") or "none"
        if auth_method not in ("none", "header"):
            raise OcsError(400, "This auth method does not exist")
        if str(params["httpMethod"]).upper() not in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
            raise OcsError(400, "Method not supported")
        webhook = {
            "id": webhook_id, "appId": self.state.app.app_id, "userId": user or None,
            "httpMethod": str(params["httpMethod"]), "uri": str(params["uri"]), "event": str(params["event"]),
            "eventFilter": params.get("eventFilter") or [], "userIdFilter": params.get("userIdFilter") or "",
            "headers": params.get("headers") or None, "authMethod": auth_method,
            "authData": params.get("authData") or None,
        }
        if self.state.release.webhook_token_needed:
            webhook["tokenNeeded"] = params.get("tokenNeeded") or None
        self.state.webhooks[webhook_id] = webhook
        return webhook

    async def webhook_delete(self, request: Request, user: str, params: dict) -> Any:
        return self.state.webhooks.pop(request.path_params["webhook_id"], None) is not None

    async def webhooks_delete_app(self, request: Request, user: str, params: dict) -> Any:
        app_id = request.path_params["app_id"]
        doomed = [i for i, w in self.state.webhooks.items() if w["appId"] == app_id]
        for webhook_id in doomed:
            del self.state.webhooks[webhook_id]
        return len(doomed)

    # --- notifications app -------------------------------------------------------------------

    async def notifications_list(self, request: Request, user: str, params: dict) -> Any:
        return [n for n in self.state.notifications if n["user"] == user]

    async def notification_delete(self, request: Request, user: str, params: dict) -> Any:
        found = [n for n in self.state.notifications
                 if n["user"] == user and n["notification_id"] == request.path_params["notification_id"]]
        if not found:
            raise OcsError(404, "Notification not found")
        self.state.notifications.remove(found[0])
        return []


async def _params(request: Request) -> dict[str, Any]:
    """Request parameters as Nextcloud merges them: query string, then a JSON or form body."""
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if body:
        if "json" in request.headers.get("content-type", ""):
            try:
                decoded = json.loads(body)
            except ValueError:
                raise OcsError(400, "Invalid JSON") from None
            if isinstance(decoded, dict):
                params.update(decoded)
        else:
            params.update((await request.form()).items())
    return params


def _int(params: dict, name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise OcsError(400, f"Parameter {name} must be an integer") from None


def _php_string(value: Any) -> str:
    """(string) of a decoded JSON value, as PHP casts it."""
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, dict | list):
        return "Array"
    return str(value)


def _key(user: str | None, key: str) -> Any:
    return key if user is None else (user, key)


def _require_user(user: str) -> str:
    """AppAPI 3.2 reads the user's preferences with a null user id: a TypeError, answered as a server error."""
    if not user:
        raise OcsError(RESPOND_SERVER_ERROR, "Internal Server Error\n")
    return user


def _render_rich(text: str, params: dict) -> str:
    for name, value in params.items():
        if isinstance(value, dict):
            text = text.replace("{" + name + "}", str(value.get("name", "")))
    return text

