"""A local stand-in of the Nextcloud + AppAPI endpoints Recognize uses, served over real HTTP.

Fixtures: ``nextcloud`` answers as Nextcloud 33 (the oldest maintained release), ``nextcloud_each``
once per maintained release (33, 34, 35), ``nextcloud29`` as Nextcloud 29 with AppAPI 3.2.3;
``serve_release`` serves any entry of ``releases.RELEASES`` (see README.md for what each is based on).

Use it from a test module::

    from nextcloud_standin.fixture import nextcloud  # noqa: F401 - the fixture

    def test_something(nextcloud, monkeypatch):
        for name, value in nextcloud.app_env().items():   # NEXTCLOUD_URL, APP_ID, APP_SECRET, ...
            monkeypatch.setenv(name, value)
        nextcloud.state.put_file("alice", "Photos/a.jpg", data)   # users: admin (admin), alice, bob
        nextcloud.state.share("alice", "Photos", "bob")
        ...  # AsyncNextcloudApp() now talks to the stand-in; assert on nextcloud.state afterwards

Modules: ``releases`` (what differs per release), ``state`` (everything the server knows, thread-safe,
inspectable), ``declarative`` (the settings app's declarative forms API), ``server`` (the ASGI app,
faults, ``BackgroundServer`` that also serves an ExApp), ``ocs`` (OCS envelopes and endpoints),
``webdav`` (files), ``carddav`` and ``addressbooks`` (contacts), ``systemtags``, ``davxml`` (sabre-style XML), ``auth`` (AppAPI both ways),
``webhook_events`` (calls webhook_listeners makes to the ExApp), ``proxy`` (AppAPI's proxy to the
ExApp's routes, per AppAPI release: ``nextcloud.proxy``), ``fixture``.
"""
