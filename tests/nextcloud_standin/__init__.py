"""A local stand-in of the Nextcloud 30 + AppAPI endpoints Recognize uses, served over real HTTP
(fixture ``nextcloud``; ``nextcloud29`` answers as Nextcloud 29 with AppAPI 3.2.3; see README.md).

Use it from a test module::

    from nextcloud_standin.fixture import nextcloud  # noqa: F401 - the fixture

    def test_something(nextcloud, monkeypatch):
        for name, value in nextcloud.app_env().items():   # NEXTCLOUD_URL, APP_ID, APP_SECRET, ...
            monkeypatch.setenv(name, value)
        nextcloud.state.put_file("alice", "Photos/a.jpg", data)   # users: admin (admin), alice, bob
        nextcloud.state.share("alice", "Photos", "bob")
        ...  # AsyncNextcloudApp() now talks to the stand-in; assert on nextcloud.state afterwards

Modules: ``state`` (everything the server knows, thread-safe, inspectable), ``server`` (the ASGI app,
faults, ``BackgroundServer`` that also serves an ExApp), ``ocs`` (OCS envelopes and endpoints),
``webdav`` (files), ``systemtags``, ``davxml`` (sabre-style XML), ``auth`` (AppAPI both ways),
``webhook_events`` (calls webhook_listeners makes to the ExApp), ``proxy`` (AppAPI's proxy to the
ExApp's routes, per AppAPI release: ``nextcloud.proxy``), ``fixture``.
"""
