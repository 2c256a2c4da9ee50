"""AppAPI authentication, both ways: ExApp → Nextcloud checks, Nextcloud → ExApp headers."""

from __future__ import annotations

import base64
import binascii
import secrets
import uuid
from collections.abc import Mapping

from .state import NextcloudState


class AuthFailed(Exception):
    """The request's AppAPI credentials are missing or wrong (Nextcloud answers 401)."""


def exapp_user(state: NextcloudState, headers: Mapping[str, str], path: str) -> str:
    """The user an ExApp request acts as ("" for none), checked as AppAPI's validateExAppRequestToNC does."""
    authorization = headers.get("authorization-app-api", "")
    app_id = headers.get("ex-app-id", "")
    if not authorization or app_id != state.app.app_id:
        raise AuthFailed("AppAPI authentication failed")
    try:
        user_id, _, secret = base64.b64decode(authorization, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthFailed("Failed to parse AUTHORIZATION-APP-API") from None
    if secret != state.app.secret:
        raise AuthFailed(f"Invalid signature for ExApp: {app_id} and user: {user_id or 'null'}.")
    if not state.app.enabled and not _exempt_from_enabled_check(state, path):
        raise AuthFailed(f"ExApp with appId {app_id} is disabled")
    version = headers.get("ex-app-version", "")
    if not version:
        raise AuthFailed("Missing EX-APP-VERSION")
    if _version_key(version) > _version_key(state.app.version):  # AppAPI records an upgraded ExApp
        state.app.version = version
    if user_id and user_id not in state.users:
        raise AuthFailed(f"Requested user does not exists: {user_id}")
    return user_id


def _version_key(version: str) -> tuple[int, ...]:
    """Enough of PHP's version_compare for dotted numeric versions."""
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def _exempt_from_enabled_check(state: NextcloudState, path: str) -> bool:
    route = path.replace("/ocs/v1.php", "").replace("/ocs/v2.php", "")
    if route == "/apps/app_api/ex-app/state":
        return True
    return state.app.initializing and route == "/apps/app_api/ex-app/status"


def headers_to_exapp(state: NextcloudState, user_id: str = "", secret: str | None = None) -> dict[str, str]:
    """Headers AppAPI's proxy sends with a request to the ExApp's own routes (buildAppAPIAuthHeaders)."""
    token = f"{user_id}:{state.app.secret if secret is None else secret}".encode()
    return {
        "AA-VERSION": state.aa_version,
        "EX-APP-ID": state.app.app_id,
        "EX-APP-VERSION": state.app.version,
        "AUTHORIZATION-APP-API": base64.b64encode(token).decode(),
        "AA-REQUEST-ID": uuid.uuid4().hex[:20],
    }


def new_secret() -> str:
    """An app secret like the 128 characters AppAPI generates."""
    return secrets.token_urlsafe(96)[:128]
