"""What admins and users chose in Nextcloud, read (a user's choice also saved) through AppAPI.

The admin form's values are in the ExApp's app config under the field ids, names of
:class:`~ex_app.config.Settings` fields that override the ExApp's own; a select stores the
label it shows (:data:`SENSITIVITY`, :data:`EMBEDDERS` map it to the value). Each user's choice
is in their preferences of the ExApp; a user who never chose gets ``users_enabled_by_default``.
The forms themselves are :mod:`ex_app.web.admin_settings` and :mod:`ex_app.web.personal_settings`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nc_py_api import AsyncNextcloudApp
from nc_py_api.ex_app.ui.settings import SettingsForm
from pydantic import ValidationError

from ex_app.config import Settings

log = logging.getLogger(__name__)

# A select stores the option it shows: these map each label to the setting's value.
# Face grouping sensitivity: a factor on the embedder's grouping distances (see config.py).
SENSITIVITY = {"Strict (fewer mix-ups)": "strict", "Balanced": "balanced", "Loose (fewer splits)": "loose"}
EMBEDDERS = {"SFace (recommended)": "sface", "dlib ResNet": "dlib"}
# What the sensitivity select of an earlier version stored: a dlib grouping distance.
EARLIER_SENSITIVITY = {0.45: "strict", 0.55: "balanced", 0.6: "loose"}

ANALYZE = "analyze_my_files"  # a user's preferences: their choice, "1" or "0"
DELETE_FACES = "delete_my_face_data"
TRUE_VALUES = {"1", "true", "yes", "on"}


def label_of(options: dict[str, str], value: str) -> str:
    """The label a select shows for a setting's value."""
    return next(label for label, option in options.items() if option == value)


def _chosen(options: dict[str, str], saved: str) -> str:
    """The setting's value of a saved label (a value saved as it is stays; anything else is
    left to fail validation)."""
    return options.get(saved, saved.strip().strip('"'))


def _earlier_sensitivity(saved: str) -> str | None:
    """The sensitivity an earlier version's saved distance (possibly JSON-quoted) stands for."""
    try:
        distance = float(saved.strip().strip('"'))
    except ValueError:
        return None
    return EARLIER_SENSITIVITY[min(EARLIER_SENSITIVITY, key=lambda known: abs(known - distance))]


async def admin_settings(nc: AsyncNextcloudApp, base: Settings, form: SettingsForm) -> Settings:
    """base with the values an admin saved in the form; base alone if they do not validate."""
    ids = [field.id for field in form.fields] + ["face_cluster_distance"]
    saved = {record.key: record.value for record in await nc.appconfig_ex.get_values(ids)}
    saved = {key: value for key, value in saved.items() if value not in (None, "")}
    earlier = saved.pop("face_cluster_distance", None)  # an earlier version's select
    if "face_sensitivity" in saved:
        saved["face_sensitivity"] = _chosen(SENSITIVITY, saved["face_sensitivity"])
    elif earlier is not None and (sensitivity := _earlier_sensitivity(earlier)):
        saved["face_sensitivity"] = sensitivity
    if "face_embedder" in saved:
        saved["face_embedder"] = _chosen(EMBEDDERS, saved["face_embedder"])
    try:
        return Settings(**(base.model_dump() | saved))
    except ValidationError as error:
        log.warning("ignoring the admin settings, they are invalid: %s", error)
        return base


@dataclass(frozen=True)
class UserChoice:
    """What a user chose: whether their files are analyzed, and whether to delete their
    face data while they are not."""

    enabled: bool
    delete_faces: bool = False


def _flag(value: str | None, default: bool) -> bool:
    """A saved checkbox value ("1"/"0", "true"/"false"; "" is PHP's false); default when unset."""
    return default if value is None else value.strip().lower() in TRUE_VALUES


async def user_choice(nc: AsyncNextcloudApp, enabled_by_default: bool) -> UserChoice:
    """The choice of the user nc acts as."""
    saved = {r.key: r.value for r in await nc.preferences_ex.get_values([ANALYZE, DELETE_FACES])}
    enabled = _flag(saved.get(ANALYZE), enabled_by_default)
    return UserChoice(enabled, not enabled and _flag(saved.get(DELETE_FACES), False))


async def save_choice(nc: AsyncNextcloudApp, analyze: bool, delete_faces: bool) -> None:
    """Save the choice of the user nc acts as, as the personal form does."""
    await nc.preferences_ex.set_value(ANALYZE, "1" if analyze else "0")
    await nc.preferences_ex.set_value(DELETE_FACES, "1" if delete_faces else "0")
