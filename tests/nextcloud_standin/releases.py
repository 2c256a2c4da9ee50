"""The Nextcloud releases the stand-in answers as, and what differs between them for an ExApp.

Maintained today: 33, 34 and 35 (32 reached its end of life in 2026-09). 29 stays for the
"no webhook_listeners" behaviour that a real 29 was compared with. Since Nextcloud 32, AppAPI is
versioned with the server (tag ``v33.0.8`` of nextcloud/app_api carries AppAPI ``33.0.0``); its
version is what AppAPI puts into ``AA_VERSION``, the ``AA-VERSION`` header and the ``app_api``
capability. What each entry says is read from the sources named in README.md.
"""

from __future__ import annotations

from dataclasses import dataclass

# Sections a declarative form may name, listed by the settings navigation once a form is in them.
# Server: lib/private/Settings/Manager.php (built-in), apps/settings/appinfo/info.xml (settings app);
# AppAPI: appinfo/info.xml <settings> (app_api, ai_integration_team, declarative_settings).
_ADMIN_SECTIONS = frozenset({
    "overview", "server", "sharing", "security", "groupware", "additional",  # built-in
    "ai",  # settings app: "Artificial Intelligence"
    "app_api", "ai_integration_team", "declarative_settings",  # AppAPI
})
_PERSONAL_SECTIONS = frozenset({
    "personal-info", "security", "availability", "sync-clients",  # settings app
    "ai_integration_team", "declarative_settings",  # AppAPI: "AI Integration Team", "ExApps Settings"
})


@dataclass(frozen=True)
class Release:
    """One Nextcloud release with the AppAPI it ships, as an ExApp meets them."""

    server: tuple[int, int, int]
    app_api: str
    source: str  # where its answers come from (see README.md)
    config_rows: bool = True
    """AppAPI keeps appconfig_ex / preferences_ex tables: a saved value answers with its row's integer
    ``id`` and a missing key's delete says "No appconfig_ex values deleted". From 35 the values live in
    the server's IAppConfig / IUserConfig: ``id`` is null, "No app config values deleted"."""
    webhook_token_needed: bool = True
    """webhook_listeners 1.5 (Nextcloud 33) added the ``tokenNeeded`` column to each listener."""
    file_action_default: bool = False
    """AppAPI 35: a v2 Files action may be the ``defaultAction`` ('', 'default' or 'hidden'; anything
    else 400) and each entry carries ``default_action`` (null unless set)."""
    personal_save_needs_subadmin: bool = True
    """The settings app's SubadminMiddleware guards DeclarativeSettingsController::setValue, which has
    no @NoSubAdminRequired: a user who is neither admin nor subadmin gets 403 saving a personal form."""
    admin_sections: frozenset[str] = _ADMIN_SECTIONS
    personal_sections: frozenset[str] = _PERSONAL_SECTIONS

    @property
    def major(self) -> int:
        return self.server[0]

    @property
    def version_string(self) -> str:
        return ".".join(map(str, self.server))


RELEASES: dict[int, Release] = {
    29: Release((29, 0, 1), "3.2.3", "compared with a real 29.0.1 (README.md)",
                webhook_token_needed=False),
    33: Release((33, 0, 8), "33.0.0", "nextcloud/app_api v33.0.8 (branch stable33)"),
    34: Release((34, 0, 3), "34.0.0", "nextcloud/app_api v34.0.3 (branch stable34)"),
    35: Release((35, 0, 0), "35.0.0-dev.1", "nextcloud/app_api v35.0.0beta4 (main)", config_rows=False,
                file_action_default=True),
}
MAINTAINED: tuple[int, ...] = (33, 34, 35)
DEFAULT = 33
"""The release of the plain ``nextcloud`` fixture: the oldest maintained one."""


def release_of(version: tuple[int, int, int]) -> Release:
    """The release a server version belongs to: its major's entry, else the newest one below it."""
    known = [major for major in RELEASES if major <= version[0]]
    return RELEASES[max(known) if known else min(RELEASES)]
