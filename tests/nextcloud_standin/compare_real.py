"""Send the requests Recognize makes to a real Nextcloud and to the stand-in; print where they differ.

    PYTHONPATH=tests .venv/bin/python -m nextcloud_standin.compare_real \\
        --url http://127.0.0.1:8080 --app-id recognize_ex --secret "$APP_SECRET" [--json out.json]

The real server needs users ``alice`` and ``bob``, the ExApp registered and enabled, and the
folders named in ``SEED`` (README.md, "Checking against a real Nextcloud 29"); the stand-in is
seeded with the same files, share and tags, as Nextcloud 29.0.1 with AppAPI 3.2.3 answers. Each probe is compared by status,
content type, a few headers, the OCS envelope and the shape of its data, or the DAV
multistatus (which properties come back with which status) and sabre error bodies.
Probes that change state undo it (probe names start with ``probe_``).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import httpx

from .auth import new_secret
from .server import BackgroundServer, build_app
from .state import NextcloudState

NS = {"d": "DAV:", "oc": "http://owncloud.org/ns", "nc": "http://nextcloud.org/ns", "s": "http://sabredav.org/ns"}
SEED = {"alice": ["Photos", "Shared"], "bob": ["Mine"]}  # folders copied from the real server into the stand-in
SHARES = [("alice", "Shared", "bob")]
HEADERS = ("content-type", "etag", "oc-etag", "oc-fileid", "content-range", "accept-ranges",
           "last-modified", "content-location", "content-disposition", "x-nextcloud-maintenance-mode")
LISTDIR = (
    '<?xml version=\'1.0\' encoding=\'us-ascii\'?>\n<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" '
    'xmlns:nc="http://nextcloud.org/ns"><d:prop><d:resourcetype /><d:getlastmodified /><d:creationdate />'
    "<d:getcontentlength /><d:getcontenttype /><d:getetag /><oc:size /><oc:id /><oc:fileid /><oc:downloadURL />"
    "<nc:download-url-expiration /><oc:dDC /><oc:permissions /><oc:checksums /><oc:share-types /><oc:favorite />"
    "<nc:is-encrypted /></d:prop></d:propfind>"
)
TAGS_PROPFIND = (
    '<?xml version=\'1.0\' encoding=\'us-ascii\'?>\n<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
    "<d:prop><oc:id /><oc:display-name /><oc:user-visible /><oc:user-assignable /></d:prop></d:propfind>"
)
SEARCH = (
    '<?xml version="1.0" encoding="UTF-8"?><d:searchrequest xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
    "<d:basicsearch><d:select><d:prop><oc:fileid/><d:getcontenttype/><d:getetag/></d:prop></d:select>"
    "<d:from><d:scope><d:href>/files/alice/Photos</d:href><d:depth>infinity</d:depth></d:scope></d:from>"
    "<d:where><d:like><d:prop><d:getcontenttype/></d:prop><d:literal>image/%</d:literal></d:like></d:where>"
    "<d:orderby/></d:basicsearch></d:searchrequest>"
)
REPORT = (
    '<?xml version="1.0"?><oc:filter-files xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
    "<d:prop><oc:fileid/></d:prop><oc:filter-rules><oc:systemtag>{tag:probe_tag}</oc:systemtag></oc:filter-rules>"
    "</oc:filter-files>"
)
FORM = {"id": "probe_form", "priority": 10, "section_type": "admin", "section_id": "probe", "title": "Probe",
        "description": "", "fields": [{"id": "probe_field", "title": "Probe", "type": "text", "default": ""}]}
NOTIFY = {"params": {"object": "app_api", "object_id": "probe", "subject_type": "app_api_ex_app",
                     "subject_params": {"rich_subject": "Probe subject", "rich_subject_params": {},
                                        "rich_message": "Probe message", "rich_message_params": {}}}}


@dataclass
class Probe:
    name: str
    method: str
    path: str  # may hold {fid:user:path} and {tag:name}
    user: str = ""
    body: Any = None  # dict -> JSON, str -> text
    headers: dict[str, str] = field(default_factory=dict)
    auth: str = "app"  # "app" (AppAPI headers), "wrong" (a wrong secret), "none"


def ocs(path: str) -> str:
    return f"/ocs/v1.php{path}?format=json"


def probes() -> list[Probe]:
    aa = "/apps/app_api"
    dav = "/remote.php/dav"
    probe = "{fid:alice:probe_dir/probe.txt}"
    return [
        Probe("capabilities", "GET", ocs("/cloud/capabilities")),
        Probe("enabled state", "GET", ocs(f"{aa}/ex-app/state")),
        Probe("init status 100", "PUT", ocs(f"{aa}/ex-app/status"), body={"progress": 100, "error": ""}),
        Probe("init status, v2 route of AppAPI 4", "PUT", ocs(f"{aa}/apps/status/{{app}}"), body={"progress": 100}),
        Probe("users", "GET", ocs(f"{aa}/api/v1/users")),
        Probe("log", "POST", ocs(f"{aa}/api/v1/log"), body={"level": 1, "message": "probe"}),
        Probe("log, bad level", "POST", ocs(f"{aa}/api/v1/log"), body={"level": 9, "message": "probe"}),
        Probe("appconfig set", "POST", ocs(f"{aa}/api/v1/ex-app/config"),
              body={"configKey": "probe_key", "configValue": "v", "sensitive": False}),
        Probe("appconfig get", "POST", ocs(f"{aa}/api/v1/ex-app/config/get-values"),
              body={"configKeys": ["probe_key", "probe_missing"]}),
        Probe("appconfig delete", "DELETE", ocs(f"{aa}/api/v1/ex-app/config"), body={"configKeys": ["probe_key"]}),
        Probe("appconfig delete missing", "DELETE", ocs(f"{aa}/api/v1/ex-app/config"),
              body={"configKeys": ["probe_key"]}),
        Probe("preference set", "POST", ocs(f"{aa}/api/v1/ex-app/preference"), user="alice",
              body={"configKey": "probe_key", "configValue": "v"}),
        Probe("preference get", "POST", ocs(f"{aa}/api/v1/ex-app/preference/get-values"), user="alice",
              body={"configKeys": ["probe_key"]}),
        Probe("preference delete", "DELETE", ocs(f"{aa}/api/v1/ex-app/preference"), user="alice",
              body={"configKeys": ["probe_key"]}),
        Probe("preference without user", "POST", ocs(f"{aa}/api/v1/ex-app/preference/get-values"),
              body={"configKeys": ["probe_key"]}),
        Probe("notification", "POST", ocs(f"{aa}/api/v1/notification"), user="alice", body=NOTIFY),
        Probe("notifications list", "GET", "/ocs/v2.php/apps/notifications/api/v2/notifications?format=json",
              user="alice"),
        Probe("file action v2 register", "POST", ocs(f"{aa}/api/v2/ui/files-actions-menu"),
              body={"name": "probe_action", "displayName": "Probe", "actionHandler": "/api/probe", "icon": "",
                    "mime": "image", "permissions": 31, "order": 0}),
        Probe("file action get", "GET", ocs(f"{aa}/api/v1/ui/files-actions-menu") + "&name=probe_action"),
        Probe("file action delete", "DELETE", ocs(f"{aa}/api/v1/ui/files-actions-menu"),
              body={"name": "probe_action"}),
        Probe("file action delete missing", "DELETE", ocs(f"{aa}/api/v1/ui/files-actions-menu"),
              body={"name": "probe_action"}),
        Probe("settings form register", "POST", ocs(f"{aa}/api/v1/ui/settings"), body={"formScheme": FORM}),
        Probe("settings form get", "GET", ocs(f"{aa}/api/v1/ui/settings") + "&formId=probe_form"),
        Probe("settings form delete", "DELETE", ocs(f"{aa}/api/v1/ui/settings"), body={"formId": "probe_form"}),
        Probe("settings form delete missing", "DELETE", ocs(f"{aa}/api/v1/ui/settings"),
              body={"formId": "probe_form"}),
        Probe("top menu register", "POST", ocs(f"{aa}/api/v1/ui/top-menu"),
              body={"name": "probe_menu", "displayName": "Probe", "icon": "", "adminRequired": 0}),
        Probe("script register", "POST", ocs(f"{aa}/api/v1/ui/script"),
              body={"type": "top_menu", "name": "probe_menu", "path": "js/probe", "afterAppId": ""}),
        Probe("style register", "POST", ocs(f"{aa}/api/v1/ui/style"),
              body={"type": "top_menu", "name": "probe_menu", "path": "css/probe"}),
        Probe("script delete", "DELETE", ocs(f"{aa}/api/v1/ui/script"),
              body={"type": "top_menu", "name": "probe_menu", "path": "js/probe"}),
        Probe("style delete", "DELETE", ocs(f"{aa}/api/v1/ui/style"),
              body={"type": "top_menu", "name": "probe_menu", "path": "css/probe"}),
        Probe("top menu delete", "DELETE", ocs(f"{aa}/api/v1/ui/top-menu"), body={"name": "probe_menu"}),
        Probe("top menu again, with a script", "POST", ocs(f"{aa}/api/v1/ui/top-menu"),
              body={"name": "probe_menu", "displayName": "Probe", "icon": "", "adminRequired": 0}),
        Probe("its script", "POST", ocs(f"{aa}/api/v1/ui/script"),
              body={"type": "top_menu", "name": "probe_menu", "path": "js/probe", "afterAppId": ""}),
        Probe("top menu delete takes its script", "DELETE", ocs(f"{aa}/api/v1/ui/top-menu"),
              body={"name": "probe_menu"}),
        Probe("script gone with its top menu", "GET", ocs(f"{aa}/api/v1/ui/script")
              + "&type=top_menu&name=probe_menu&path=js/probe"),
        Probe("top menu delete missing", "DELETE", ocs(f"{aa}/api/v1/ui/top-menu"), body={"name": "probe_menu"}),
        Probe("webhooks list", "GET", ocs("/apps/webhook_listeners/api/v1/webhooks")),
        Probe("webhooks delete by app", "DELETE", ocs("/apps/webhook_listeners/api/v1/webhooks/byappid/{app}")),
        Probe("unknown OCS route", "GET", ocs(f"{aa}/api/v1/no-such-route")),
        Probe("wrong secret", "GET", ocs(f"{aa}/api/v1/users"), auth="wrong"),
        Probe("no AppAPI headers", "GET", ocs(f"{aa}/api/v1/users"), auth="none"),
        Probe("unknown user", "GET", ocs("/cloud/capabilities"), user="nobody"),
        Probe("DAV, wrong secret", "PROPFIND", f"{dav}/files/alice/Photos", "alice", LISTDIR, {"Depth": "1"},
              auth="wrong"),
        Probe("DAV, no AppAPI headers", "PROPFIND", f"{dav}/files/alice/Photos", "alice", LISTDIR, {"Depth": "1"},
              auth="none"),
        Probe("DAV, unknown user", "PROPFIND", f"{dav}/files/nobody", "nobody", LISTDIR, {"Depth": "1"}),
        Probe("DAV, no user", "PROPFIND", f"{dav}/files/alice/Photos", "", LISTDIR, {"Depth": "1"}),
        Probe("PROPFIND folder", "PROPFIND", f"{dav}/files/alice/Photos", "alice", LISTDIR, {"Depth": "1"}),
        Probe("PROPFIND shared folder as recipient", "PROPFIND", f"{dav}/files/bob/Shared", "bob", LISTDIR,
              {"Depth": "1"}),
        Probe("PROPFIND file", "PROPFIND", f"{dav}/files/alice/Photos/Frog.jpg", "alice", LISTDIR, {"Depth": "0"}),
        Probe("PROPFIND missing", "PROPFIND", f"{dav}/files/alice/no-such", "alice", LISTDIR, {"Depth": "1"}),
        Probe("PROPFIND other user's files", "PROPFIND", f"{dav}/files/bob/Mine", "alice", LISTDIR, {"Depth": "1"}),
        Probe("SEARCH images", "SEARCH", f"{dav}/", "alice", SEARCH, {"Content-Type": "text/xml"}),
        Probe("GET file", "GET", f"{dav}/files/alice/Photos/Frog.jpg", "alice"),
        Probe("GET range", "GET", f"{dav}/files/alice/Photos/Frog.jpg", "alice", headers={"Range": "bytes=0-99"}),
        Probe("GET missing", "GET", f"{dav}/files/alice/no-such.jpg", "alice"),
        Probe("MKCOL", "MKCOL", f"{dav}/files/alice/probe_dir", "alice"),
        Probe("MKCOL again", "MKCOL", f"{dav}/files/alice/probe_dir", "alice"),
        Probe("PUT file", "PUT", f"{dav}/files/alice/probe_dir/probe.txt", "alice", "probe"),
        Probe("tags list", "PROPFIND", f"{dav}/systemtags", "alice", TAGS_PROPFIND),
        Probe("tag create", "POST", f"{dav}/systemtags", "alice",
              {"name": "probe_tag", "userVisible": True, "userAssignable": True}),
        Probe("tag create again", "POST", f"{dav}/systemtags", "alice",
              {"name": "probe_tag", "userVisible": True, "userAssignable": True}),
        Probe("tag relations of a file", "PROPFIND", f"{dav}/systemtags-relations/files/{probe}/", "alice",
              TAGS_PROPFIND),
        Probe("tag assign", "PUT", f"{dav}/systemtags-relations/files/{probe}/{{tag:probe_tag}}", "alice"),
        Probe("tag assign again", "PUT", f"{dav}/systemtags-relations/files/{probe}/{{tag:probe_tag}}", "alice"),
        Probe("tag relations after assign", "PROPFIND", f"{dav}/systemtags-relations/files/{probe}/", "alice",
              TAGS_PROPFIND),
        Probe("REPORT files with tag", "REPORT", f"{dav}/files/alice", "alice", REPORT),
        Probe("tag unassign", "DELETE", f"{dav}/systemtags-relations/files/{probe}/{{tag:probe_tag}}", "alice"),
        Probe("tag unassign again", "DELETE", f"{dav}/systemtags-relations/files/{probe}/{{tag:probe_tag}}",
              "alice"),
        Probe("tag delete as user", "DELETE", f"{dav}/systemtags/{{tag:probe_tag}}", "alice"),
        Probe("tag delete as admin", "DELETE", f"{dav}/systemtags/{{tag:probe_tag}}", "admin"),
        Probe("DELETE folder", "DELETE", f"{dav}/files/alice/probe_dir", "alice"),
        Probe("DELETE missing", "DELETE", f"{dav}/files/alice/probe_dir", "alice"),
    ]


def maintenance_probes() -> list[Probe]:
    """What the ExApp meets while Nextcloud is in maintenance mode (``occ maintenance:mode --on``)."""
    return [
        Probe("capabilities v1", "GET", ocs("/cloud/capabilities")),
        Probe("capabilities v2", "GET", "/ocs/v2.php/cloud/capabilities?format=json"),
        Probe("appconfig get", "POST", ocs("/apps/app_api/api/v1/ex-app/config/get-values"),
              body={"configKeys": ["faces_enabled"]}),
        Probe("PROPFIND folder", "PROPFIND", "/remote.php/dav/files/alice/Photos", "alice", LISTDIR, {"Depth": "1"}),
        Probe("GET file", "GET", "/remote.php/dav/files/alice/Photos/Frog.jpg", "alice"),
    ]


class Target:
    """One server (real or stand-in) and how to authenticate to it as the ExApp."""

    def __init__(self, name: str, url: str, app_id: str, secret: str, version: str) -> None:
        self.name, self.app_id, self.secret, self.version = name, app_id, secret, version
        self.client = httpx.Client(base_url=url, timeout=60)

    def headers(self, user: str, auth: str) -> dict[str, str]:
        if auth == "none":
            return {"OCS-APIRequest": "true"}
        secret = self.secret if auth == "app" else "wrong-secret"
        token = base64.b64encode(f"{user}:{secret}".encode()).decode()
        return {"AA-VERSION": "2.2.0", "EX-APP-ID": self.app_id, "EX-APP-VERSION": self.version,
                "AUTHORIZATION-APP-API": token, "OCS-APIRequest": "true"}

    def send(self, probe: Probe) -> httpx.Response:
        headers = self.headers(probe.user, probe.auth) | probe.headers
        kwargs: dict[str, Any] = {}
        if isinstance(probe.body, dict):
            kwargs["json"] = probe.body
        elif probe.body is not None:
            kwargs["content"] = self.resolve(probe.body).encode()
        return self.client.request(probe.method, self.resolve(probe.path), headers=headers, **kwargs)

    def resolve(self, text: str) -> str:
        text = text.replace("{app}", self.app_id)
        text = re.sub(r"\{fid:([^:}]+):([^}]+)\}", lambda m: str(self.file_id(m[1], m[2])), text)
        return re.sub(r"\{tag:([^}]+)\}", lambda m: str(self.tag_id(m[1])), text)

    def file_id(self, user: str, path: str) -> int:
        body = '<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop><oc:fileid/></d:prop></d:propfind>'
        r = self.client.request("PROPFIND", f"/remote.php/dav/files/{user}/{path}", content=body,
                                headers=self.headers(user, "app") | {"Depth": "0"})
        return int(ElementTree.fromstring(r.content).find(".//oc:fileid", NS).text)

    def files(self, user: str, folder: str) -> list[str]:
        """The paths of the files in the user's folder, recursively."""
        r = self.client.request("PROPFIND", f"/remote.php/dav/files/{user}/{folder}", content=LISTDIR,
                                headers=self.headers(user, "app") | {"Depth": "infinity"})
        prefix = f"/remote.php/dav/files/{user}/"
        hrefs = [urllib.parse.unquote(e.text) for e in ElementTree.fromstring(r.content).iter("{DAV:}href")]
        return [h[len(prefix):] for h in hrefs if not h.endswith("/")]

    def tags(self) -> dict[str, int]:
        r = self.client.request("PROPFIND", "/remote.php/dav/systemtags", content=TAGS_PROPFIND,
                                headers=self.headers("alice", "app") | {"Depth": "1"})
        return {response.findtext(".//oc:display-name", namespaces=NS): int(response.findtext(".//oc:id", namespaces=NS))
                for response in ElementTree.fromstring(r.content).findall("d:response", NS)
                if response.findtext(".//oc:id", namespaces=NS)}

    def tag_names(self) -> list[str]:
        return sorted(self.tags())

    def tag_id(self, name: str) -> int | str:
        return self.tags().get(name, "0")


def shape(value: Any) -> Any:
    """The JSON value with leaves replaced by their type names (lists by their first element)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def summary(response: httpx.Response) -> dict[str, Any]:
    """What is compared of a response."""
    out: dict[str, Any] = {"status": response.status_code}
    text = response.content
    out["headers"] = {h: _norm_header(h, response.headers[h]) for h in HEADERS
                      if h in response.headers and (text or h != "content-type")}
    ctype = response.headers.get("content-type", "")
    if "json" in ctype and text:
        try:
            body = response.json()
        except ValueError:
            out["body"] = "invalid json"
            return out
        if isinstance(body, dict) and "ocs" in body:
            meta = dict(body["ocs"]["meta"])
            meta.pop("message", None) if meta.get("status") == "ok" else None
            out["ocs_meta"] = meta
            out["ocs_data"] = shape(body["ocs"]["data"])
        else:
            out["json"] = shape(body)
    elif "xml" in ctype and text:
        out.update(_xml_summary(text))
    elif text and not ctype.startswith(("image/", "application/octet-stream", "text/plain")):
        out["body"] = text[:80].decode("utf-8", "replace")
    return out


def _norm_header(name: str, value: str) -> str:
    if name in ("content-type",):
        return value.split(";")[0].strip().lower()
    if name == "content-location":
        return re.sub(r"\d+$", "N", value)
    if name in ("content-range", "accept-ranges"):
        return value
    return "present"


def _xml_summary(text: bytes) -> dict[str, Any]:
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return {"body": "invalid xml"}
    if root.tag == "{DAV:}error":
        return {"dav_error": {_short(c.tag): (c.text or "") if _short(c.tag) == "s:exception" else "…"
                              for c in root}}
    if root.tag != "{DAV:}multistatus":
        return {"xml_root": _short(root.tag)}
    responses = []
    for response in root.findall("d:response", NS):
        props = {}
        for propstat in response.findall("d:propstat", NS):
            status = (propstat.findtext("d:status", namespaces=NS) or "").split(" ")[1]
            for prop in propstat.find("d:prop", NS):
                props[_short(prop.tag)] = status
        responses.append(props)
    merged: dict[str, set[str]] = {}
    for props in responses:
        for name, status in props.items():
            merged.setdefault(name, set()).add(status)
    return {"responses": len(responses), "props": {k: sorted(v) for k, v in sorted(merged.items())}}


def _short(tag: str) -> str:
    for prefix, uri in NS.items():
        tag = tag.replace("{" + uri + "}", prefix + ":")
    return tag


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two summaries differ, as 'path: real != stand-in' lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a:
                out.append(f"{path}{key}: missing on real, stand-in has {b[key]!r}")
            elif key not in b:
                out.append(f"{path}{key}: real has {a[key]!r}, missing on stand-in")
            else:
                out += diff(a[key], b[key], f"{path}{key}.")
        return out
    return [] if a == b else [f"{path.rstrip('.')}: real {a!r} != stand-in {b!r}"]


def seed_standin(real: Target, app_id: str, copy: bool = True) -> tuple[BackgroundServer, NextcloudState, str]:
    """A stand-in with the real server's users and, if ``copy``, the SEED files (downloaded from it),
    SHARES and tags."""
    secret = new_secret()
    state = NextcloudState(app_id, real.version, secret, "3.2.3", (29, 0, 1))
    state.add_user("admin", "admin", admin=True)
    for user in ("alice", "bob"):
        state.add_user(user, user)
    for user, folders in SEED.items() if copy else ():
        for folder in folders:
            for path in real.files(user, folder):
                r = real.client.get(f"/remote.php/dav/files/{user}/{path}", headers=real.headers(user, "app"))
                r.raise_for_status()
                state.put_file(user, path, r.content)
    for owner, path, recipient in SHARES if copy else ():
        state.share(owner, path, recipient)
    for name in real.tag_names() if copy else ():
        state.add_tag(name)
    server = BackgroundServer(build_app(state))
    server.start()
    return server, state, secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--app-id", default="recognize_ex")
    parser.add_argument("--app-version", default="0.1.0")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--json", help="write every probe's two summaries here")
    parser.add_argument("--maintenance", action="store_true",
                        help="the real server is in maintenance mode: compare the answers of both then")
    args = parser.parse_args(argv)
    real = Target("real", args.url, args.app_id, args.secret, args.app_version)
    server, state, secret = seed_standin(real, args.app_id, copy=not args.maintenance)
    standin = Target("stand-in", server.url, args.app_id, secret, args.app_version)
    if args.maintenance:
        state.fail_for(3600)
    report, differing = [], 0
    try:
        for probe in (maintenance_probes() if args.maintenance else probes()):
            a, b = summary(real.send(probe)), summary(standin.send(probe))
            lines = diff(a, b)
            differing += bool(lines)
            report.append({"probe": probe.name, "request": f"{probe.method} {probe.path}", "real": a,
                           "standin": b, "differences": lines})
            print(f"{'DIFF' if lines else 'same'}  {probe.name}: {probe.method} {probe.path} -> {a['status']}")
            for line in lines:
                print(f"        {line}")
    finally:
        server.stop()
    print(f"{differing} of {len(report)} probes differ")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=sorted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
