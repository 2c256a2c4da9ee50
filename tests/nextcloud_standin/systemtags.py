"""System tags over WebDAV: /remote.php/dav/systemtags/ and /remote.php/dav/systemtags-relations/files/<id>/."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .davxml import (
    DavError,
    PropValue,
    href,
    multistatus,
    not_found,
    parse,
    requested_props,
    split_props,
)
from .state import NextcloudState, Tag, User
from .webdav import dav_endpoint


def can_assign(tag: Tag, account: User) -> bool:
    """SystemTagManager::canUserAssignTag: public tags, admins, and for a restricted tag the
    members of its groups."""
    if (tag.user_visible and tag.user_assignable) or account.admin:
        return True
    return tag.user_visible and bool(set(account.groups) & set(tag.groups))


def tag_props(tag: Tag, account: User) -> dict[str, PropValue]:
    """What SystemTagPlugin answers about a tag."""
    props: dict[str, PropValue] = {
        "d:resourcetype": "",
        "oc:id": str(tag.tag_id),
        "oc:display-name": tag.name,
        "oc:user-visible": "true" if tag.user_visible else "false",
        "oc:user-assignable": "true" if tag.user_assignable else "false",
        "oc:can-assign": "true" if can_assign(tag, account) else "false",
    }
    if account.admin:
        props["oc:groups"] = "|".join(tag.groups)
    return props


COLLECTION_PROPS: dict[str, PropValue] = {"d:resourcetype": [("d:collection", "")]}


class SystemTagsDav:
    """Tags (list, create, update, delete) and their assignment to files."""

    def __init__(self, state: NextcloudState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        tags = "/remote.php/dav/systemtags"
        relations = "/remote.php/dav/systemtags-relations/files/{fileid:int}"
        return [
            Route(tags, self._guard(self.list_tags), methods=["PROPFIND"]),
            Route(tags + "/", self._guard(self.list_tags), methods=["PROPFIND"]),
            Route(tags, self._guard(self.create_tag), methods=["POST"]),
            Route(tags + "/", self._guard(self.create_tag), methods=["POST"]),
            Route(tags + "/{tag_id:int}", self._guard(self.get_tag), methods=["PROPFIND"]),
            Route(tags + "/{tag_id:int}", self._guard(self.update_tag), methods=["PROPPATCH"]),
            Route(tags + "/{tag_id:int}", self._guard(self.delete_tag), methods=["DELETE"]),
            Route(relations, self._guard(self.file_tags), methods=["PROPFIND"]),
            Route(relations + "/", self._guard(self.file_tags), methods=["PROPFIND"]),
            Route(relations, self._guard(self.create_tag), methods=["POST"]),
            Route(relations + "/", self._guard(self.create_tag), methods=["POST"]),
            Route(relations + "/{tag_id:int}", self._guard(self.assign), methods=["PUT"]),
            Route(relations + "/{tag_id:int}", self._guard(self.unassign), methods=["DELETE"]),
        ]

    def _guard(self, handler):
        return dav_endpoint(self.state, handler)

    def _visible_tag(self, tag_id: int, user: str) -> Tag:
        tag = self.state.tags.get(tag_id)
        if tag is None or not (tag.user_visible or self.state.users[user].admin):
            raise not_found(f"Tag with id {tag_id} not found")
        return tag

    async def list_tags(self, request: Request, user: str) -> Response:
        account = self.state.users[user]
        admin = account.admin
        wanted = requested_props(parse(await request.body()))
        records = [(href("systemtags", True), *split_props(COLLECTION_PROPS, wanted))]
        if request.headers.get("depth", "1") != "0":
            with self.state.lock:
                tags = sorted(self.state.tags.values(), key=lambda t: t.tag_id)
            records += [(href(f"systemtags/{t.tag_id}"), *split_props(tag_props(t, account), wanted))
                        for t in tags if admin or t.user_visible]
        return multistatus(records)

    async def get_tag(self, request: Request, user: str) -> Response:
        tag = self._visible_tag(request.path_params["tag_id"], user)
        wanted = requested_props(parse(await request.body()))
        props = tag_props(tag, self.state.users[user])
        return multistatus([(href(f"systemtags/{tag.tag_id}"), *split_props(props, wanted))])

    async def create_tag(self, request: Request, user: str) -> Response:
        if "fileid" in request.path_params:
            self._file(request, user)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise DavError(415, "Sabre\\DAV\\Exception\\UnsupportedMediaType", "Content-Type must be application/json")
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest", "Invalid JSON") from None
        name = str(data.get("name", "")).strip()
        if not name:
            raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest", "Missing \"name\" attribute")
        visible, assignable = bool(data.get("userVisible", True)), bool(data.get("userAssignable", True))
        if not self.state.users[user].admin and not (visible and assignable):
            raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest", "Not sufficient permissions")
        with self.state.lock:  # Nextcloud 30's unique index: name, visibility, assignability
            if any((t.name, t.user_visible, t.user_assignable) == (name, visible, assignable)
                   for t in self.state.tags.values()):
                raise DavError(409, "Sabre\\DAV\\Exception\\Conflict", "Tag already exists")
            tag = self.state.add_tag(name, visible, assignable)
        if "fileid" in request.path_params:  # POST to a file's relations: create and assign
            self.state.tag_relations.add((request.path_params["fileid"], tag.tag_id))
            location = f"/remote.php/dav/systemtags/{tag.tag_id}"
        else:
            location = request.url.path.rstrip("/") + f"/{tag.tag_id}"
        return Response(b"", 201, headers={"Content-Location": location})

    async def update_tag(self, request: Request, user: str) -> Response:
        tag = self._visible_tag(request.path_params["tag_id"], user)
        if not self.state.users[user].admin:
            raise DavError(403, "Sabre\\DAV\\Exception\\Forbidden", "No permission to update tag")
        root = parse(await request.body())
        updates = {}
        if root is not None:
            for prop in root.iterfind("{DAV:}set/{DAV:}prop/*"):
                updates[prop.tag] = prop.text or ""
        with self.state.lock:
            for clark, value in updates.items():
                if clark == "{http://owncloud.org/ns}display-name":
                    tag.name = value
                elif clark == "{http://owncloud.org/ns}user-visible":
                    tag.user_visible = value not in ("false", "0")
                elif clark == "{http://owncloud.org/ns}user-assignable":
                    tag.user_assignable = value not in ("false", "0")
                elif clark == "{http://owncloud.org/ns}groups":  # group ids joined by "|"
                    tag.groups = [group for group in value.split("|") if group]
        names = {"{http://owncloud.org/ns}" + n: "oc:" + n
                 for n in ("display-name", "user-visible", "user-assignable", "groups")}
        found = {names[c]: "" for c in updates if c in names}
        missing = [c for c in updates if c not in names]
        return multistatus([(href(f"systemtags/{tag.tag_id}"), found, missing)])

    async def delete_tag(self, request: Request, user: str) -> Response:
        tag = self._visible_tag(request.path_params["tag_id"], user)
        if not self.state.users[user].admin:
            raise DavError(403, "Sabre\\DAV\\Exception\\Forbidden", "No permission to delete tag")
        with self.state.lock:
            del self.state.tags[tag.tag_id]
            self.state.tag_relations = {r for r in self.state.tag_relations if r[1] != tag.tag_id}
        return Response(b"", 204)

    def _file(self, request: Request, user: str) -> int:
        fileid = request.path_params["fileid"]
        if self.state.entry_by_id(user, fileid) is None:
            raise not_found(f"Node with id {fileid} not found")
        return fileid

    async def file_tags(self, request: Request, user: str) -> Response:
        fileid = self._file(request, user)
        account = self.state.users[user]
        admin = account.admin
        wanted = requested_props(parse(await request.body()))
        base = f"systemtags-relations/files/{fileid}"
        records = [(href(base, True), *split_props(COLLECTION_PROPS, wanted))]
        if request.headers.get("depth", "1") != "0":
            with self.state.lock:
                tags = sorted((self.state.tags[t] for f, t in self.state.tag_relations if f == fileid),
                              key=lambda t: t.tag_id)
            records += [(href(f"{base}/{t.tag_id}"), *split_props(tag_props(t, account), wanted))
                        for t in tags if admin or t.user_visible]
        return multistatus(records)

    async def assign(self, request: Request, user: str) -> Response:
        fileid, tag_id = self._file(request, user), request.path_params["tag_id"]
        tag = self.state.tags.get(tag_id)
        if tag is None or not (tag.user_visible or self.state.users[user].admin):
            raise DavError(412, "Sabre\\DAV\\Exception\\PreconditionFailed",
                           f"Tag with id {tag_id} does not exist, cannot assign")
        if not can_assign(tag, self.state.users[user]):
            raise DavError(403, "Sabre\\DAV\\Exception\\Forbidden", f"No permission to assign tag {tag_id}")
        with self.state.lock:
            if (fileid, tag_id) in self.state.tag_relations:  # sabre: PUT on the existing mapping node
                raise DavError(409, "Sabre\\DAV\\Exception\\Conflict", "PUT is not allowed on non-files.")
            self.state.tag_relations.add((fileid, tag_id))
        return Response(b"", 201)

    async def unassign(self, request: Request, user: str) -> Response:
        fileid, tag_id = self._file(request, user), request.path_params["tag_id"]
        tag = self._visible_tag(tag_id, user)
        if not can_assign(tag, self.state.users[user]):
            raise DavError(403, "Sabre\\DAV\\Exception\\Forbidden", f"No permission to unassign tag {tag_id}")
        with self.state.lock:
            if (fileid, tag_id) not in self.state.tag_relations:
                raise not_found(f"Tag {tag_id} is not present for object {fileid}")
            self.state.tag_relations.discard((fileid, tag_id))
        return Response(b"", 204)
