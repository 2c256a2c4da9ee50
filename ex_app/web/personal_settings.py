"""The personal settings form: each user opts in or out.

It sits in Personal settings → "ExApps Settings" (section ``declarative_settings``, which
AppAPI registers for ExApps' forms; the server's own personal sections have no place for AI
apps, and its "Additional settings" is listed only when legacy settings fill it).

Nextcloud stores a user's answers in the ExApp's per-user preferences under the field ids;
:mod:`ex_app.service.nextcloud_settings` reads them.
"""

from __future__ import annotations

from nc_py_api.ex_app.ui.settings import SettingsField, SettingsFieldType, SettingsForm

from ex_app.service.nextcloud_settings import ANALYZE, DELETE_FACES

FORM_ID = "recognize_personal"
FORM_SECTION = "declarative_settings"


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
