"""The personal settings form: each user opts in or out.

It sits in Personal settings → "ExApps Settings" (section ``declarative_settings``, which
AppAPI registers for ExApps' forms; the server's own personal sections have no place for AI
apps, and its "Additional settings" is listed only when legacy settings fill it).

Nextcloud stores a user's answers in the ExApp's per-user preferences under the field ids.
A user who never answered gets the admin's default (``users_enabled_by_default``).
"""

from __future__ import annotations

from dataclasses import dataclass

from nc_py_api import AsyncNextcloudApp
from nc_py_api.ex_app.ui.settings import SettingsField, SettingsFieldType, SettingsForm

FORM_ID = "recognize_personal"
FORM_SECTION = "declarative_settings"
ANALYZE = "analyze_my_files"
DELETE_FACES = "delete_my_face_data"
TRUE_VALUES = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class UserChoice:
    """What a user chose: whether their files are analyzed, and whether to delete their
    face data while they are not."""

    enabled: bool
    delete_faces: bool = False


def settings_form(enabled_by_default: bool) -> SettingsForm:
    """The personal form, showing the admin's default."""
    return SettingsForm(
        id=FORM_ID,
        section_type="personal",
        section_id=FORM_SECTION,
        title="Recognize",
        description="Recognize tags your photos, music and videos on this server; "
        "nothing leaves it.",
        fields=[
            SettingsField(ANALYZE, "Analyze my files", SettingsFieldType.CHECKBOX,
                          enabled_by_default,
                          label="Find faces, objects, places and genres in my files"),
            SettingsField(DELETE_FACES, "When my files are not analyzed",
                          SettingsFieldType.CHECKBOX, False,
                          label="Delete the faces and persons found in my files"),
        ],
    )


def _flag(value: str | None, default: bool) -> bool:
    """A saved checkbox value ("1"/"0", "true"/"false"; "" is PHP's false); default when unset."""
    if value is None:
        return default
    return value.strip().lower() in TRUE_VALUES


async def user_choice(nc: AsyncNextcloudApp, enabled_by_default: bool) -> UserChoice:
    """The choice of the user nc acts as."""
    saved = {r.key: r.value for r in await nc.preferences_ex.get_values([ANALYZE, DELETE_FACES])}
    enabled = _flag(saved.get(ANALYZE), enabled_by_default)
    return UserChoice(enabled, not enabled and _flag(saved.get(DELETE_FACES), False))
