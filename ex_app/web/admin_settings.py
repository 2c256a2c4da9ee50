"""The declarative admin settings form and the settings it yields.

The form sits in Administration → "Artificial Intelligence" (section ``ai`` of Nextcloud's
settings app, where Nextcloud's Context Agent ExApp puts its own): a form in a section the server
does not have is listed in no navigation. Nextcloud stores the form's values in the ExApp's app
config under the field ids, which are the names of :class:`~ex_app.config.Settings` fields;
they override the ExApp's own. A select stores the option it shows, so the selects
offer their labels and :data:`SENSITIVITY` and :data:`EMBEDDERS` map a chosen label to its value.
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

FORM_SECTION = "ai"
# A select stores the option it shows: these map each label to the setting's value.
# Face grouping sensitivity: a factor on the embedder's grouping distances (see config.py).
SENSITIVITY = {"Strict (fewer mix-ups)": "strict", "Balanced": "balanced", "Loose (fewer splits)": "loose"}
EMBEDDERS = {"SFace (recommended)": "sface", "dlib ResNet": "dlib"}
# What the sensitivity select of an earlier version stored: a dlib grouping distance.
EARLIER_SENSITIVITY = {0.45: "strict", 0.55: "balanced", 0.6: "loose"}


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
        section_id=FORM_SECTION,
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
            field("sensitive_enabled", "Sensitive photos", SettingsFieldType.CHECKBOX,
                  defaults.sensitive_enabled,
                  label="Tag photos showing nudity, with a tag users cannot assign (NudeNet)"),
            field("sensitive_tag", "Tag of sensitive photos", SettingsFieldType.TEXT,
                  defaults.sensitive_tag,
                  description="A restricted tag: see the README for who sees it."),
            field("face_sensitivity", "Face grouping sensitivity", SettingsFieldType.SELECT,
                  label_of(SENSITIVITY, defaults.face_sensitivity), options=list(SENSITIVITY),
                  description="How alike faces must be to become one person."),
            field("face_embedder", "Face recognition model", SettingsFieldType.SELECT,
                  label_of(EMBEDDERS, defaults.face_embedder), options=list(EMBEDDERS),
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


async def admin_settings(nc: AsyncNextcloudApp, base: Settings) -> Settings:
    """base with the values an admin saved in the form; base alone if they do not validate."""
    ids = [f.id for f in settings_form(base).fields] + ["face_cluster_distance"]
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
