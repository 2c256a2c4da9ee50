"""The settings app's declarative settings API, as the settings page's script calls it, over the
forms an ExApp registered with AppAPI (storage "external": AppAPI's listeners get and set values).

- ``GET /ocs/v2.php/settings/api/declarative/forms``: the forms with each field's ``value``
  (DeclarativeManager::getFormsWithValues; AppAPI's GetValueListener gives the saved value, else the
  field's default, JSON-encoded when it is numeric or an array).
- ``POST /ocs/v2.php/settings/api/declarative/value`` ``{app, formId, fieldId, value}``: saves one value
  (AppAPI's SetValueListener casts it to a string into the ExApp's app config or the user's
  preferences). The settings app's SubadminMiddleware answers 403 to a user who is neither admin nor
  subadmin, on every release read (``Release.personal_save_needs_subadmin``).

A browser's session stands in as HTTP Basic auth with the user's password (``User.checks``).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .ocs import RESPOND_UNAUTHORISED, OcsError, _params, _php_string, ocs_response
from .state import NextcloudState

FORBIDDEN_PAGE = "<!DOCTYPE html><html><body><h2>Access forbidden</h2></body></html>"


class DeclarativeSettingsApi:
    """The two OCS routes of the settings app's DeclarativeSettingsController."""

    def __init__(self, state: NextcloudState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        return [route for v in (1, 2) for route in (
            Route(f"/ocs/v{v}.php/settings/api/declarative/forms", self.forms, methods=["GET"]),
            Route(f"/ocs/v{v}.php/settings/api/declarative/value", self.set_value, methods=["POST"]),
        )]

    def _user(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            user_id, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user_id = password = ""
        account = self.state.users.get(user_id)
        if scheme.lower() != "basic" or account is None or not account.checks(password):
            raise OcsError(RESPOND_UNAUTHORISED, "Current user is not logged in")
        return user_id

    async def forms(self, request: Request) -> Response:
        try:
            user = self._user(request)
        except OcsError as e:
            return ocs_response(request, [], e.status, e.message)
        return ocs_response(request, forms_with_values(self.state, user))

    async def set_value(self, request: Request) -> Response:
        try:
            user = self._user(request)
            if self.state.release.personal_save_needs_subadmin and not self.state.users[user].admin:
                return HTMLResponse(FORBIDDEN_PAGE, 403)  # SubadminMiddleware's core/403 page
            params = await _params(request)
            app, form_id, field_id = (str(params.get(k, "")) for k in ("app", "formId", "fieldId"))
            form = _form_with_field(self.state, app, field_id)
            if form is None:
                raise OcsError(400, "")  # DeclarativeManager: Unknown fieldId, logged; OCSBadRequestException
            if form["section_type"] == "admin" and not self.state.users[user].admin:
                raise OcsError(403, "Logged in user does not have permission to access these settings.")
            _save(self.state, user, app, form_id, field_id, params.get("value"))
        except OcsError as e:
            return ocs_response(request, [], e.status, e.message)
        return ocs_response(request, None)


def forms_with_values(state: NextcloudState, user: str) -> list[dict[str, Any]]:
    """The forms ``user`` may see, each field with the value AppAPI's GetValueListener gives it."""
    admin = state.users[user].admin
    forms = []
    for form in state.settings_forms.values():
        if form["section_type"] == "admin" and not admin:
            continue
        fields = [field | {"value": field_value(state, user, form, field)} for field in form["fields"]]
        forms.append(form | {"app": state.app.app_id, "fields": fields})
    return sorted(forms, key=lambda f: -int(f.get("priority", 50)))


def listed_sections(state: NextcloudState, user: str, section_type: str) -> list[str]:
    """The sections of the settings navigation that show one of the ExApp's forms to ``user``
    (CommonSettingsTrait::formatSections: a section the server has, holding a form)."""
    release = state.release
    known = release.admin_sections if section_type == "admin" else release.personal_sections
    return sorted({f["section_id"] for f in forms_with_values(state, user)
                   if f["section_type"] == section_type and f["section_id"] in known})


def field_value(state: NextcloudState, user: str, form: dict, field: dict) -> Any:
    """AppAPI's GetValueListener: the stored string, else the default (JSON when numeric or an array)."""
    with state.lock:
        if form["section_type"] == "admin":
            stored = state.app_config.get(field["id"])
        else:
            stored = state.preferences.get((user, field["id"]))
    if stored is not None:
        return stored[0]
    default = field.get("default")
    if default is None:
        return None
    if isinstance(default, list | dict) or _php_is_numeric(default):
        return json.dumps(default, separators=(",", ":"))
    return default


def _php_is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value).strip())
    except ValueError:
        return False
    return str(value).strip() != ""


def _form_with_field(state: NextcloudState, app: str, field_id: str) -> dict | None:
    """DeclarativeManager::getSectionType: the first of the app's forms with this field id."""
    if app != state.app.app_id:
        return None
    for form in state.settings_forms.values():
        if any(field["id"] == field_id for field in form["fields"]):
            return form
    return None


def _save(state: NextcloudState, user: str, app: str, form_id: str, field_id: str, value: Any) -> None:
    """AppAPI's SetValueListener: nothing when no form has that id, else the value as a PHP string."""
    form = state.settings_forms.get(form_id)
    if form is None:
        return
    text = "" if value is None else _php_string(value)
    with state.lock:
        if form["section_type"] == "admin":
            state.app_config[field_id] = (text, state.app_config.get(field_id, ("", 0))[1])
        else:
            state.preferences[(user, field_id)] = (text, state.preferences.get((user, field_id), ("", 0))[1])
