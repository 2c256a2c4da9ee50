"""WebDAV of users' files: PROPFIND, GET/HEAD with Range, PUT, MKCOL, DELETE, SEARCH and the filter-files REPORT."""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime
from urllib.parse import quote, unquote
from xml.etree import ElementTree

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .auth import AuthFailed, exapp_user
from .davxml import (
    Children,
    DavError,
    PropValue,
    href,
    multistatus,
    not_authenticated,
    not_found,
    parse,
    prefixed,
    requested_props,
    split_props,
)
from .state import INSTANCE_ID, Entry, NextcloudState, folder_size

ALLPROPS = ("d:resourcetype", "d:getlastmodified", "d:getcontentlength", "d:getcontenttype", "d:getetag")
PREVIEW_MIMETYPES = ("image/jpeg", "image/png", "image/gif", "image/bmp", "image/heic", "image/webp", "image/tiff")
SEARCH_PROPS = {
    "d:displayname": lambda e: e.node.name,
    "d:getcontenttype": lambda e: e.node.mimetype,
    "d:getlastmodified": lambda e: e.node.mtime,
    "d:creationdate": lambda e: e.node.ctime,
    "oc:size": lambda e: e.node.size,
    "oc:favorite": lambda e: int(e.node.favorite),
    "oc:fileid": lambda e: e.node.fileid,
    "oc:owner-id": lambda e: e.node.owner,
}


def dav_user(state: NextcloudState, request: Request) -> str:
    """The authenticated DAV user: AppAPI credentials naming a user, else sabre's 401."""
    try:
        user = exapp_user(state, request.headers, request.url.path)
    except AuthFailed:
        raise not_authenticated() from None
    if not user:
        raise not_authenticated()
    return user


def dav_endpoint(state: NextcloudState, handler):
    """A route's endpoint: handler(request, the DAV user), a DavError answered as sabre does."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, dav_user(state, request))
        except DavError as e:
            return e.response()

    return endpoint


def file_props(state: NextcloudState, entry: Entry) -> dict[str, PropValue]:
    """Every property Nextcloud's FilesPlugin and friends give this node, as its viewer sees it."""
    node = entry.node
    props: dict[str, PropValue] = {
        "d:resourcetype": [("d:collection", "")] if node.is_dir else "",
        "d:getlastmodified": email.utils.formatdate(node.mtime, usegmt=True),
        "d:creationdate": datetime.fromtimestamp(node.ctime, UTC).isoformat(timespec="seconds"),
        "d:getetag": f'"{node.etag}"',
        "d:displayname": node.name,
        "oc:id": f"{node.fileid:08d}{INSTANCE_ID}",
        "oc:fileid": str(node.fileid),
        "oc:size": str(folder_size(state, node) if node.is_dir else node.size),
        "oc:permissions": _permissions(state, entry),
        "oc:favorite": str(int(node.favorite)),
        "oc:owner-id": node.owner,
        "oc:owner-display-name": state.users[node.owner].display_name,
        "oc:share-types": _share_types(state, entry),
        "nc:has-preview": "true" if node.mimetype in PREVIEW_MIMETYPES else "false",
        "nc:mount-type": entry.mount_type,
        "nc:system-tags": _system_tags(state, entry),
    }
    if node.is_dir:
        props["nc:is-encrypted"] = "0"  # folders only
    else:
        props["d:getcontentlength"] = str(node.size)
        props["d:getcontenttype"] = node.mimetype
        props["oc:downloadURL"] = ""  # no direct download from local storage
    return props


def _permissions(state: NextcloudState, entry: Entry) -> str:
    """Nextcloud's DAV permission letters: S shared, R shareable, M mounted, G, D, NV, W or CK."""
    bits = entry.share.permissions if entry.share else 31
    shared = entry.share is not None or any(s.fileid == entry.node.fileid for s in state.shares)
    mounted = entry.share is not None and entry.node.fileid == entry.share.fileid
    letters = ("S" if shared else "") + ("R" if bits & 16 else "") + ("M" if mounted else "") + "G"
    letters += "D" if bits & 8 else ""
    letters += "NV" if bits & 2 else ""
    if entry.node.is_dir:
        letters += "CK" if bits & 4 else ""
    else:
        letters += "W" if bits & 2 else ""
    return letters


def _share_types(state: NextcloudState, entry: Entry) -> Children:
    if entry.user != entry.node.owner:
        return []
    return [("oc:share-type", "0")] if any(s.fileid == entry.node.fileid for s in state.shares) else []


def _system_tags(state: NextcloudState, entry: Entry) -> Children:
    admin = state.users[entry.user].admin
    with state.lock:
        names = sorted(state.tags[t].name for t in state.tag_ids_of(entry.node.fileid)
                       if admin or state.tags[t].user_visible)
    return [("nc:system-tag", name) for name in names]


def _multistatus_of(state: NextcloudState, entries: list[Entry], wanted: list[str] | None) -> Response:
    records = []
    for e in entries:
        props = file_props(state, e)
        if wanted is None:  # allprop: sabre's core properties the node has
            found, missing = {n: props[n] for n in ALLPROPS if n in props}, []
        else:
            found, missing = split_props(props, wanted)
        records.append((href(f"files/{e.user}/{e.path}", e.node.is_dir), found, missing))
    return multistatus(records)


class FilesDav:
    """The /remote.php/dav/files/<user>/ tree and the SEARCH endpoint at /remote.php/dav/."""

    def __init__(self, state: NextcloudState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        files = "/remote.php/dav/files/{user_id}{path:path}"
        return [
            Route(files, self._guard(self.propfind), methods=["PROPFIND"]),
            Route(files, self._guard(self.get), methods=["GET", "HEAD"]),
            Route(files, self._guard(self.put), methods=["PUT"]),
            Route(files, self._guard(self.mkcol), methods=["MKCOL"]),
            Route(files, self._guard(self.delete), methods=["DELETE"]),
            Route(files, self._guard(self.report), methods=["REPORT"]),
            Route(files, self._guard(self.move), methods=["MOVE"]),
            Route("/remote.php/dav", self._guard(self.search), methods=["SEARCH"]),
            Route("/remote.php/dav/", self._guard(self.search), methods=["SEARCH"]),
        ]

    def _guard(self, handler):
        return dav_endpoint(self.state, handler)

    def _entry(self, request: Request, user: str) -> tuple[str, Entry | None]:
        if request.path_params["user_id"] != user:
            raise not_found(f"Principal with name {request.path_params['user_id']} not found")
        path = unquote(request.path_params["path"]).strip("/")
        return path, self.state.resolve(user, path)

    async def propfind(self, request: Request, user: str) -> Response:
        path, entry = self._entry(request, user)
        if entry is None:
            raise not_found(f"File with name {path} could not be located")
        depth = request.headers.get("depth", "1").lower()
        levels = -1 if depth == "infinity" else 0 if depth == "0" else 1
        wanted = requested_props(parse(await request.body()))
        return _multistatus_of(self.state, self.state.walk(entry, levels), wanted)

    async def get(self, request: Request, user: str) -> Response:
        path, entry = self._entry(request, user)
        if entry is None:
            raise not_found(f"File with name {path} could not be located")
        node = entry.node
        if node.is_dir:
            raise DavError(501, "Sabre\\DAV\\Exception\\NotImplemented", "GET is only allowed on files")
        headers = {  # sabre's GET: no OC-FileId and no Accept-Ranges, yet Range requests are served
            "ETag": f'"{node.etag}"', "OC-ETag": f'"{node.etag}"',
            "Last-Modified": email.utils.formatdate(node.mtime, usegmt=True),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(node.name)}; "
                                   f'filename="{node.name}"',
        }
        content, status = node.content, 200
        byte_range = _parse_range(request.headers.get("range", ""), len(content))
        if byte_range is not None:
            start, end = byte_range
            content, status = content[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{node.size}"
        body = b"" if request.method == "HEAD" else content
        headers["Content-Length"] = str(len(content))
        return Response(body, status, headers=headers, media_type=node.mimetype)

    async def put(self, request: Request, user: str) -> Response:
        path, entry = self._entry(request, user)
        parent_path, _, name = path.rpartition("/")
        parent = self.state.resolve(user, parent_path)
        if parent is None or not parent.node.is_dir:
            raise DavError(409, "Sabre\\DAV\\Exception\\Conflict",
                           "Files can only be created as children of collections")
        if entry is not None and entry.node.is_dir:
            raise DavError(409, "Sabre\\DAV\\Exception\\Conflict", "Could not write to final file, it is a folder")
        owner_path = f"{parent.node.path}/{name}".strip("/")
        node = self.state.put_file(parent.node.owner, owner_path, await request.body())
        headers = {"ETag": f'"{node.etag}"', "OC-ETag": f'"{node.etag}"',
                   "OC-FileId": f"{node.fileid:08d}{INSTANCE_ID}"}
        return Response(b"", 204 if entry is not None else 201, headers=headers)

    async def mkcol(self, request: Request, user: str) -> Response:
        path, entry = self._entry(request, user)
        if entry is not None:
            raise DavError(405, "Sabre\\DAV\\Exception\\MethodNotAllowed",
                           "The resource you tried to create already exists")
        parent_path, _, name = path.rpartition("/")
        parent = self.state.resolve(user, parent_path)
        if parent is None or not parent.node.is_dir:
            raise DavError(409, "Sabre\\DAV\\Exception\\Conflict", "Parent node does not exist")
        node = self.state.makedirs(parent.node.owner, f"{parent.node.path}/{name}".strip("/"))
        return Response(b"", 201, headers={"OC-FileId": f"{node.fileid:08d}{INSTANCE_ID}"})

    async def delete(self, request: Request, user: str) -> Response:
        path, entry = self._entry(request, user)
        if entry is None or not path:
            raise not_found(f"File with name {path} could not be located")
        if entry.share is not None and entry.share.fileid == entry.node.fileid:
            with self.state.lock:
                self.state.shares.remove(entry.share)  # deleting a received share's mount point unshares it
        else:
            self.state.delete_node(entry.node)
        return Response(b"", 204)

    async def move(self, request: Request, user: str) -> Response:
        path, entry = self._entry(request, user)
        if entry is None or not path:
            raise not_found(f"File with name {path} could not be located")
        match = re.fullmatch(r"(?:https?://[^/]+)?/remote\.php/dav/files/([^/]+)/(.+)",
                             request.headers.get("destination", ""))
        if match is None or match.group(1) != user:
            raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest", "The destination header was not understood")
        destination = unquote(match.group(2)).strip("/")
        existing = self.state.resolve(user, destination)
        if existing is not None and request.headers.get("overwrite", "T").upper() == "F":
            raise DavError(412, "Sabre\\DAV\\Exception\\PreconditionFailed",
                           "The destination node already exists, and the overwrite header is set to false")
        parent = self.state.resolve(user, destination.rpartition("/")[0])
        if parent is None or not parent.node.is_dir:
            raise DavError(409, "Sabre\\DAV\\Exception\\Conflict", "The destination parent node does not exist")
        if parent.node.owner != entry.node.owner:
            raise DavError(403, "Sabre\\DAV\\Exception\\Forbidden", "Moving between storages is not supported here")
        if existing is not None:
            self.state.delete_node(existing.node)
        name = destination.rpartition("/")[2]
        node = self.state.move(entry.node.owner, entry.node.path, f"{parent.node.path}/{name}".strip("/"))
        return Response(b"", 204 if existing else 201, headers={"OC-FileId": f"{node.fileid:08d}{INSTANCE_ID}"})

    async def report(self, request: Request, user: str) -> Response:
        path, entry = self._entry(request, user)
        root = parse(await request.body())
        if entry is None:
            raise not_found(f"File with name {path} could not be located")
        if root is None or root.tag != "{http://owncloud.org/ns}filter-files":
            raise DavError(415, "Sabre\\DAV\\Exception\\ReportNotSupported", "The {DAV:}report is not supported")
        rules = root.find("{http://owncloud.org/ns}filter-rules")
        tag_ids = [] if rules is None else [int(e.text or 0) for e in rules.iter("{http://owncloud.org/ns}systemtag")]
        favorite = rules is not None and rules.find("{http://owncloud.org/ns}favorite") is not None
        if not tag_ids and not favorite:
            raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest", "No filter-rules given")
        with self.state.lock:
            for tag_id in tag_ids:
                tag = self.state.tags.get(tag_id)
                if tag is None or not (tag.user_visible or self.state.users[user].admin):
                    raise DavError(412, "Sabre\\DAV\\Exception\\PreconditionFailed",
                                   f"Cannot filter by non-existing tag {tag_id}")
            tagged = [{f for f, t in self.state.tag_relations if t == tag_id} for tag_id in tag_ids]
        matches = [e for e in self.state.walk(entry, -1)[1:]
                   if all(e.node.fileid in files for files in tagged) and (not favorite or e.node.favorite)]
        return _multistatus_of(self.state, matches, requested_props(root))

    async def search(self, request: Request, user: str) -> Response:
        root = parse(await request.body())
        search = root.find("{DAV:}basicsearch") if root is not None else None
        scope = search.find("{DAV:}from/{DAV:}scope") if search is not None else None
        if search is None or scope is None:
            raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest", "Invalid search request")
        scope_href = unquote((scope.findtext("{DAV:}href") or "").strip())
        match = re.fullmatch(r"/?(?:remote\.php/dav/)?files/([^/]+)/?(.*)", scope_href)
        if match is None or match.group(1) != user:
            raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest", f"Invalid search scope {scope_href}")
        entry = self.state.resolve(user, match.group(2))
        if entry is None:
            raise not_found(f"File with name {match.group(2)} could not be located")
        depth = (scope.findtext("{DAV:}depth") or "infinity").strip()
        entries = self.state.walk(entry, -1 if depth == "infinity" else int(depth))[1:]
        where = search.find("{DAV:}where")
        condition = next(iter(where), None) if where is not None else None
        if condition is not None:
            entries = [e for e in entries if _matches(condition, e)]
        entries = _order(search.find("{DAV:}orderby"), entries)
        limit = search.findtext("{DAV:}limit/{DAV:}nresults")
        offset = search.findtext("{DAV:}limit/{http://nextcloud.org/ns}firstresult")
        start = int(offset) if offset else 0
        entries = entries[start:start + int(limit) if limit else None]
        return _multistatus_of(self.state, entries, requested_props(search.find("{DAV:}select")))


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The single byte range asked for, or None for the whole file; raises 416 when unsatisfiable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not header or match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise DavError(416, "Sabre\\DAV\\Exception\\RequestedRangeNotSatisfiable",
                       "The start offset should be smaller than the end offset"
                       if start > end else "The start offset exceeds the total size of the file")
    return start, end


def _literal(prop: str, text: str) -> object:
    """A d:literal as a comparable value for the property: numbers, timestamps or text."""
    if prop in ("d:getlastmodified", "d:creationdate"):
        if text.strip().isdigit():
            return int(text)
        return int(datetime.fromisoformat(text.strip()).timestamp())
    if prop in ("oc:size", "oc:favorite", "oc:fileid"):
        return int(re.match(r"\d+", text.strip()).group())
    return text


def _matches(condition: ElementTree.Element, entry: Entry) -> bool:
    """Whether the entry satisfies a d:where operator (eq, gt, gte, lt, lte, like, and, or, not, is-collection)."""
    op = prefixed(condition.tag)
    if op == "d:and":
        return all(_matches(c, entry) for c in condition)
    if op == "d:or":
        return any(_matches(c, entry) for c in condition)
    if op == "d:not":
        return not _matches(next(iter(condition)), entry)
    if op == "d:is-collection":
        return entry.node.is_dir
    prop_element = condition.find("{DAV:}prop")
    if prop_element is None or len(prop_element) == 0:
        raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest", f"{op} without a property")
    prop = prefixed(prop_element[0].tag)
    if prop not in SEARCH_PROPS:
        raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest", f"Unsupported search property {prop}")
    value = SEARCH_PROPS[prop](entry)
    literal = _literal(prop, condition.findtext("{DAV:}literal") or "")
    if op == "d:like":
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in str(literal))
        return re.fullmatch(pattern, str(value), re.IGNORECASE | re.DOTALL) is not None
    compare = {"d:eq": lambda a, b: a == b, "d:gt": lambda a, b: a > b, "d:gte": lambda a, b: a >= b,
               "d:lt": lambda a, b: a < b, "d:lte": lambda a, b: a <= b}.get(op)
    if compare is None:
        raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest", f"Unsupported search operator {op}")
    return compare(value, literal)


def _order(orderby: ElementTree.Element | None, entries: list[Entry]) -> list[Entry]:
    if orderby is None:
        return entries
    for order in reversed(list(orderby.iter("{DAV:}order"))):
        prop_element = order.find("{DAV:}prop")
        prop = prefixed(prop_element[0].tag) if prop_element is not None and len(prop_element) else ""
        if prop in SEARCH_PROPS:
            descending = order.find("{DAV:}descending") is not None
            entries = sorted(entries, key=SEARCH_PROPS[prop], reverse=descending)
    return entries
