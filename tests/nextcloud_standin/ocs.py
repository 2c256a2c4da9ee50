"""OCS endpoints (v1 and v2 envelopes) of the Nextcloud core, AppAPI, webhook_listeners and notifications."""

from __future__ import annotations

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

NC_VERSION = {"major": 30, "minor": 0, "micro": 5, "string": "30.0.5", "edition": "", "extendedSupport": False}
RESPOND_UNAUTHORISED = 997
RESPOND_NOT_FOUND = 998


class OcsError(Exception):
    """An OCSException: its ``status`` becomes the envelope's statuscode."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def ocs_response(request: Request, data: Any, status: int = 200, message: str = "") -> Response:
    """Render ``data`` in the OCS envelope of the request's version, as Nextcloud's V1/V2Response do."""
    v2 = request.url.path.startswith("/ocs/v2.php/")
    if v2:
        ocs_status = status
        ok = 200 <= status < 300
        if status == RESPOND_UNAUTHORISED:
            http_status = 401
        elif status == RESPOND_NOT_FOUND:
            http_status = 404
        elif status in (996, 999):
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
    envelope = {"ocs": {"meta": meta, "data": data}}
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

    def routes(self) -> list[Route]:
        table: list[tuple[str, str, str, Handler]] = [
            ("GET", "/cloud/capabilities", "public", self.capabilities),
            ("GET", "/cloud/users", "user", self.users),
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
        return [Route(f"/ocs/v{v}.php{path}", self._endpoint(guard, handler), methods=[method])
                for method, path, guard, handler in table for v in (1, 2)]

    def _endpoint(self, guard: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                user = self._authorize(request, guard)
                params = await _params(request)
                return ocs_response(request, await handler(request, user, params))
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
        return {
            "version": NC_VERSION,
            "capabilities": {
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
                "webhook_listeners": {"enabled": True},
                "app_api": {"loglevel": self.state.loglevel, "version": self.state.aa_version},
            },
        }

    async def users(self, request: Request, user: str, params: dict) -> Any:
        state = self.state
        if not state.users[user].admin:
            return {"users": []}
        ids = [u for u in sorted(state.users) if params.get("search", "").lower() in u.lower()]
        offset = int(params.get("offset") or 0)
        limit = int(params["limit"]) if params.get("limit") else None
        return {"users": ids[offset:None if limit is None else offset + limit]}

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
        return self._store_set(self.state.app_config, None, params)

    async def config_get(self, request: Request, user: str, params: dict) -> Any:
        return self._store_get(self.state.app_config, None, params)

    async def config_delete(self, request: Request, user: str, params: dict) -> Any:
        return self._store_delete(self.state.app_config, None, params)

    async def preference_set(self, request: Request, user: str, params: dict) -> Any:
        return self._store_set(self.state.preferences, _require_user(user), params)

    async def preference_get(self, request: Request, user: str, params: dict) -> Any:
        return self._store_get(self.state.preferences, _require_user(user), params)

    async def preference_delete(self, request: Request, user: str, params: dict) -> Any:
        return self._store_delete(self.state.preferences, _require_user(user), params)

    def _store_set(self, store: dict, user: str | None, params: dict) -> Any:
        key = str(params.get("configKey", ""))
        if not key:
            raise OcsError(400, "Config key cannot be empty")
        value = "" if params.get("configValue") is None else _php_string(params["configValue"])
        with self.state.lock:
            old_sensitive = store.get(_key(user, key), ("", 0))[1]
            sensitive = old_sensitive if params.get("sensitive") is None else int(bool(params["sensitive"]))
            store[_key(user, key)] = (value, sensitive)
        record: dict[str, Any] = {"id": None}  # AppAPI answers with a fresh, unsaved entity
        if user is not None:
            record["user_id"] = user
        record.update(appid=self.state.app.app_id, configkey=key, configvalue=value, sensitive=sensitive)
        return record

    def _store_get(self, store: dict, user: str | None, params: dict) -> Any:
        keys = dict.fromkeys(str(k) for k in params.get("configKeys") or [])
        with self.state.lock:
            return [{"configkey": k, "configvalue": store[_key(user, k)][0]} for k in keys if _key(user, k) in store]

    def _store_delete(self, store: dict, user: str | None, params: dict) -> Any:
        with self.state.lock:
            found = [_key(user, str(k)) for k in params.get("configKeys") or [] if _key(user, str(k)) in store]
            for k in found:
                del store[k]
        if not found:
            raise OcsError(404, "No config values deleted")
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
            "icon": "",
        }
        self.state.notifications.append(notification)
        return {k: v for k, v in notification.items() if k != "notification_id"}

    async def file_action_register(self, request: Request, user: str, params: dict) -> Any:
        name = str(params.get("name", ""))
        for required in ("name", "displayName", "actionHandler"):
            if not params.get(required):
                raise OcsError(400, f"Missing parameter {required}")
        v2 = "/api/v2/" in request.url.path
        self.state.file_actions[name] = {
            "id": self.state.next_id(), "appid": self.state.app.app_id, "name": name,
            "display_name": str(params["displayName"]), "mime": str(params.get("mime", "file")),
            "permissions": _int(params, "permissions", 31), "order": _int(params, "order", 0),
            "icon": str(params.get("icon", "")), "action_handler": str(params["actionHandler"]),
            "version": "2.0" if v2 else "1.0",
        }
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
        if self.state.top_menu.pop(str(params.get("name", "")), None) is None:
            raise OcsError(404, "No such Top Menu entry")
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
        if self.state.ui_resources.pop(self._ui_resource_key(request, params), None) is None:
            raise OcsError(404, "Not found")
        return []

    async def ui_resource_get(self, request: Request, user: str, params: dict) -> Any:
        entry = self.state.ui_resources.get(self._ui_resource_key(request, params))
        if entry is None:
            raise OcsError(404, "Not found")
        return entry

    async def settings_register(self, request: Request, user: str, params: dict) -> Any:
        scheme = params.get("formScheme")
        if not isinstance(scheme, dict) or not scheme.get("id"):
            raise OcsError(400)
        self.state.settings_forms[str(scheme["id"])] = scheme
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
    if not user:
        raise OcsError(996, "Preferences need a user")
    return user


def _render_rich(text: str, params: dict) -> str:
    for name, value in params.items():
        if isinstance(value, dict):
            text = text.replace("{" + name + "}", str(value.get("name", "")))
    return text

