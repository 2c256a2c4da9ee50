"""The admin and personal forms on each maintained Nextcloud, as the settings pages show and save them.

The ExApp registers its forms through AppAPI (nc_py_api, real HTTP to the stand-in); the test then
reads and saves them through the settings app's declarative API as the settings page's script does,
and reads the admin's choices back as the ExApp does.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from nc_py_api import AsyncNextcloudApp
from nextcloud_standin.declarative import listed_sections
from nextcloud_standin.fixture import Nextcloud

from ex_app.config import Settings
from ex_app.main import register_ui
from ex_app.service import nextcloud_settings
from ex_app.web import admin_settings, personal_settings

OCS = {"OCS-APIRequest": "true", "Accept": "application/json"}


@pytest.fixture
def registered(nextcloud_each: Nextcloud, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Nextcloud:
    """A stand-in of each maintained release with the ExApp's UI registered as on enabling it."""
    for name, value in nextcloud_each.app_env().items():
        monkeypatch.setenv(name, value)
    asyncio.run(register_ui(AsyncNextcloudApp(), Settings(data_dir=tmp_path / "data")))
    return nextcloud_each


def _forms(nc: Nextcloud, user: str) -> dict[str, dict]:
    response = httpx.get(f"{nc.url}/ocs/v2.php/settings/api/declarative/forms", headers=OCS, auth=(user, user))
    assert response.status_code == 200, response.text
    return {form["id"]: form for form in response.json()["ocs"]["data"]}


def _save(nc: Nextcloud, user: str, form: dict, field_id: str, value: object) -> httpx.Response:
    """What the settings page posts: the form id with the app's prefix taken off, as its script does."""
    form_id = form["id"].replace(form["app"] + "_", "", 1)
    return httpx.post(f"{nc.url}/ocs/v2.php/settings/api/declarative/value", headers=OCS, auth=(user, user),
                      json={"app": form["app"], "formId": form_id, "fieldId": field_id, "value": value})


def test_forms_are_listed_in_sections_the_server_has(registered: Nextcloud) -> None:
    assert listed_sections(registered.state, "admin", "admin") == ["ai"]
    assert listed_sections(registered.state, "alice", "personal") == ["declarative_settings"]
    assert listed_sections(registered.state, "alice", "admin") == []  # admin forms: admins only
    assert admin_settings.FORM_ID not in _forms(registered, "alice")


def test_the_selects_show_and_store_labels(registered: Nextcloud) -> None:
    form = _forms(registered, "admin")[admin_settings.FORM_ID]
    fields = {field["id"]: field for field in form["fields"]}
    # NcSelect shows string options as they are and the value as the selected option.
    sensitivity, embedder = fields["face_sensitivity"], fields["face_embedder"]
    assert sensitivity["type"] == "select" and sensitivity["options"] == list(nextcloud_settings.SENSITIVITY)
    assert sensitivity["value"] == "Balanced"
    assert embedder["options"] == list(nextcloud_settings.EMBEDDERS) and embedder["value"] == "SFace (recommended)"

    assert _save(registered, "admin", form, "face_sensitivity", "Strict (fewer mix-ups)").status_code == 200
    assert _save(registered, "admin", form, "face_embedder", "dlib ResNet").status_code == 200
    assert _save(registered, "admin", form, "faces_enabled", 0).status_code == 200  # a switch sends 0/1
    assert _save(registered, "admin", form, "max_image_side", "1200").status_code == 200
    values = {f["id"]: f["value"] for f in _forms(registered, "admin")[admin_settings.FORM_ID]["fields"]}
    assert values["face_sensitivity"] == "Strict (fewer mix-ups)" and values["face_embedder"] == "dlib ResNet"
    assert values["faces_enabled"] == "0" and values["max_image_side"] == "1200"

    async def read_back() -> Settings:
        base = Settings(data_dir=registered.storage)
        return await nextcloud_settings.admin_settings(AsyncNextcloudApp(), base, admin_settings.settings_form(base))

    settings = asyncio.run(read_back())
    assert settings.faces.sensitivity == "strict" and settings.faces.embedder == "dlib"
    assert settings.faces.enabled is False and settings.images.max_side == 1200


@pytest.mark.parametrize(("saved", "sensitivity"), [('"0.6"', "loose"), ("0.45", "strict"), ('"0.55"', "balanced")])
def test_sensitivity_saved_by_an_earlier_version_still_applies(registered: Nextcloud, saved, sensitivity) -> None:
    registered.state.app_config["face_cluster_distance"] = (saved, 0)  # the old numeric option, maybe quoted

    async def read_back() -> Settings:
        base = Settings(data_dir=registered.storage)
        return await nextcloud_settings.admin_settings(AsyncNextcloudApp(), base, admin_settings.settings_form(base))

    settings = asyncio.run(read_back())
    assert settings.faces.sensitivity == sensitivity
    assert settings.faces.cluster_distance is None  # a dlib distance: never applied to another embedder


def test_personal_choice_round_trips_and_a_plain_user_cannot_save(registered: Nextcloud) -> None:
    form = _forms(registered, "admin")[personal_settings.FORM_ID]
    analyze = next(f for f in form["fields"] if f["id"] == personal_settings.ANALYZE)
    assert analyze["value"] is True  # the admin's default, shown switched on

    # The settings app answers 403 to a user who is neither admin nor subadmin (see README.md).
    denied = _save(registered, "alice", form, personal_settings.ANALYZE, 0)
    assert denied.status_code == 403
    assert ("alice", personal_settings.ANALYZE) not in registered.state.preferences

    assert _save(registered, "admin", form, personal_settings.ANALYZE, 0).status_code == 200

    async def choice_of(user: str) -> nextcloud_settings.UserChoice:
        nc = AsyncNextcloudApp()
        await nc.set_user(user)
        return await nextcloud_settings.user_choice(nc, enabled_by_default=True)

    assert asyncio.run(choice_of("admin")).enabled is False
    assert asyncio.run(choice_of("alice")).enabled is True
