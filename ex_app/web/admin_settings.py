"""The declarative admin settings form.

The form sits in Administration → "Artificial Intelligence" (section ``ai`` of Nextcloud's
settings app, where Nextcloud's Context Agent ExApp puts its own): a form in a section the server
does not have is listed in no navigation. Its field ids are the flat names of
:class:`~ex_app.config.Settings` fields (:data:`~ex_app.config.FLAT_NAMES`, kept so that saved
values stay); there is one switch per analyzer of the registry.
:mod:`ex_app.service.nextcloud_settings` reads what an admin saved.
"""

from __future__ import annotations

from nc_py_api.ex_app.ui.settings import SettingsField, SettingsFieldType, SettingsForm

from ex_app.analyzers.registry import ANALYZERS
from ex_app.config import Settings
from ex_app.service.nextcloud_settings import EMBEDDERS, SENSITIVITY, label_of

FORM_ID = "recognize_admin"

FORM_SECTION = "ai"

INTRO = "Private tagging of your media on this server: faces into persons, objects, scenes, places and genres."


def settings_form(defaults: Settings, progress: str | None = None) -> SettingsForm:
    """The admin form, showing the ExApp's own settings as defaults, and a line on the
    work's progress (the service registers the form again after each cycle)."""
    field = SettingsField
    return SettingsForm(
        id=FORM_ID,
        section_type="admin",
        section_id=FORM_SECTION,
        title="Recognize",
        description=INTRO if progress is None else f"{INTRO}\n{progress}",
        fields=[
            *(field(f"{a.name}_enabled", a.title, SettingsFieldType.CHECKBOX, a.enabled(defaults),
                    label=a.label) for a in ANALYZERS),
            field("sensitive_tag", "Tag of sensitive photos", SettingsFieldType.TEXT,
                  defaults.sensitive.tag,
                  description="A restricted tag: see the README for who sees it."),
            field("face_sensitivity", "Face grouping sensitivity", SettingsFieldType.SELECT,
                  label_of(SENSITIVITY, defaults.faces.sensitivity), options=list(SENSITIVITY),
                  description="How alike faces must be to become one person."),
            field("face_embedder", "Face recognition model", SettingsFieldType.SELECT,
                  label_of(EMBEDDERS, defaults.faces.embedder), options=list(EMBEDDERS),
                  description="Changing it recognizes the stored faces again in the background."),
            field("face_min_faces_per_person", "Minimum faces per person",
                  SettingsFieldType.NUMBER, defaults.faces.min_faces_per_person,
                  description="Fewer similar faces do not make a person (at least 2)."),
            field("max_image_side", "Largest image side analyzed (pixels)",
                  SettingsFieldType.NUMBER, defaults.images.max_side,
                  description="Larger photos are scaled down first; smaller is faster."),
            field("threads", "CPU threads per analysis", SettingsFieldType.NUMBER,
                  defaults.inference.threads),
            field("jobs", "Files handled at once", SettingsFieldType.NUMBER, defaults.nextcloud.jobs,
                  description="Downloads in parallel; analysis stays one file at a time."),
            field("quiet_hours", "Quiet hours", SettingsFieldType.TEXT, defaults.worker.quiet_hours,
                  placeholder="22-6",
                  description="No analysis between these hours (server time); empty: none."),
            field("person_names_as_tags", "Names as tags", SettingsFieldType.CHECKBOX,
                  defaults.nextcloud.person_names_as_tags,
                  label="Tag photos with the names of their persons"),
        ],
    )

