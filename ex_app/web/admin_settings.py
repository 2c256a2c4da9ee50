"""The declarative admin settings form (section "Recognize") and the settings it yields.

Nextcloud stores the form's values in the ExApp's app config under the field ids, which
are the names of :class:`~ex_app.config.Settings` fields; they override the ExApp's own.
"""

from __future__ import annotations

import logging

from nc_py_api import AsyncNextcloudApp
from nc_py_api.ex_app.ui.settings import SettingsField, SettingsFieldType, SettingsForm
from pydantic import ValidationError

from ex_app.config import Settings
from ex_app.work.progress import AnalyzerProgress

log = logging.getLogger(__name__)

FORM_ID = "recognize_admin"

# Face grouping sensitivity: a factor on the embedder's grouping distances (see config.py).
SENSITIVITY = {"Strict (fewer mix-ups)": "strict", "Balanced": "balanced", "Loose (fewer splits)": "loose"}
EMBEDDERS = {"SFace (recommended)": "sface", "dlib ResNet": "dlib"}


INTRO = "Private tagging of your media on this server: faces into persons, objects, scenes, places and genres."


def progress_text(progress: list[AnalyzerProgress]) -> str:
    """The work's state for the form's description (the form is registered again after
    each cycle, so an admin sees it when opening the settings)."""
    if not progress:
        return "Progress: nothing analyzed yet."
    return "Progress: " + "; ".join(p.line() for p in progress) + "."


def settings_form(defaults: Settings, progress: list[AnalyzerProgress] | None = None) -> SettingsForm:
    """The admin form, showing the ExApp's own settings as defaults, and the progress."""
    field = SettingsField
    return SettingsForm(
        id=FORM_ID,
        section_type="admin",
        section_id="recognize",
        title="Recognize",
        description=INTRO if progress is None else f"{INTRO}\n{progress_text(progress)}",
        fields=[
            field("faces_enabled", "Faces", SettingsFieldType.CHECKBOX, defaults.faces_enabled,
                  label="Find faces and group them into persons"),
            field("objects_enabled", "Objects and scenes", SettingsFieldType.CHECKBOX,
                  defaults.objects_enabled, label="Tag photos with objects and scenes"),
            field("places_enabled", "Places", SettingsFieldType.CHECKBOX, defaults.places_enabled,
                  label="Tag photos with the place their GPS position names"),
            field("music_enabled", "Music", SettingsFieldType.CHECKBOX, defaults.music_enabled,
                  label="Tag songs with their genres"),
            field("video_enabled", "Videos", SettingsFieldType.CHECKBOX, defaults.video_enabled,
                  label="Find faces, objects and music in videos"),
            field("actions_enabled", "Actions in videos", SettingsFieldType.CHECKBOX,
                  defaults.actions_enabled,
                  label="Tag videos with what people do in them (MoViNet)"),
            field("landmarks_enabled", "Landmarks", SettingsFieldType.CHECKBOX,
                  defaults.landmarks_enabled,
                  label="Tag photos of buildings and monuments with the landmark"),
            field("face_sensitivity", "Face grouping sensitivity", SettingsFieldType.SELECT,
                  defaults.face_sensitivity, options=SENSITIVITY),
            field("face_embedder", "Face recognition model", SettingsFieldType.SELECT,
                  defaults.face_embedder, options=EMBEDDERS,
                  description="Changing it recognizes the stored faces again in the background."),
            field("face_min_faces_per_person", "Minimum faces per person",
                  SettingsFieldType.NUMBER, defaults.face_min_faces_per_person,
                  description="Fewer similar faces do not make a person (at least 2)."),
            field("max_image_side", "Largest image side analyzed (pixels)",
                  SettingsFieldType.NUMBER, defaults.max_image_side,
                  description="Larger photos are scaled down first; smaller is faster."),
            field("threads", "CPU threads per analysis", SettingsFieldType.NUMBER,
                  defaults.threads),
            field("jobs", "Files handled at once", SettingsFieldType.NUMBER, defaults.jobs,
                  description="Downloads in parallel; analysis stays one file at a time."),
            field("quiet_hours", "Quiet hours", SettingsFieldType.TEXT, defaults.quiet_hours,
                  placeholder="22-6",
                  description="No analysis between these hours (server time); empty: none."),
            field("person_names_as_tags", "Names as tags", SettingsFieldType.CHECKBOX,
                  defaults.person_names_as_tags,
                  label="Tag photos with the names of their persons"),
        ],
    )


async def admin_settings(nc: AsyncNextcloudApp, base: Settings) -> Settings:
    """base with the values an admin saved in the form; base alone if they do not validate."""
    ids = [f.id for f in settings_form(base).fields]
    saved = {record.key: record.value for record in await nc.appconfig_ex.get_values(ids)}
    saved = {key: value for key, value in saved.items() if value not in (None, "")}
    try:
        return Settings(**(base.model_dump() | saved))
    except ValidationError as error:
        log.warning("ignoring the admin settings, they are invalid: %s", error)
        return base
