"""CardDAV under /remote.php/dav/addressbooks/users/<user>/ as Nextcloud's apps/dav serves it with sabre/dav.

Read in sabre-io/dav (master of 2026-07, the 4.7 line Nextcloud ships): ``lib/CardDAV/Plugin.php``
(``addressbookQueryReport``: Depth 0 on an address book is ``ReportNotSupported``; with Depth 1
each card's href is the book's plus the card's name; ``address-data`` is cut down to the asked
``card:prop`` names plus UID, VERSION and FN and converted to the asked vCard version, 3.0 when
none is asked: ``negotiateVCard``/``convertVCard``), ``lib/CardDAV/Xml/Request/AddressBookQueryReport.php``
and ``Xml/Filter/AddressData.php`` (no ``card:filter``: every card matches; ``content-type`` and
``version`` attributes), ``lib/DAV/Sync/Plugin.php`` (``{DAV:}sync-token`` is
``http://sabre.io/ns/sync/<token>``), ``lib/DAVACL/Plugin.php`` (``{DAV:}owner`` is an href to the
owner principal), ``lib/CardDAV/AddressBook.php`` (the sync token and owner of a book); and in
sabre-io/vobject ``lib/VCardConverter.php`` (PHOTO between vCard 3 ``ENCODING=b;TYPE=JPEG`` and
vCard 4 ``data:image/jpeg;base64,`` URIs). In nextcloud/server: ``apps/dav/lib/CardDAV/CardDavBackend.php``
(``getAddressBooksForUser``: ``cs:getctag`` is the sync token; a shared book carries
``oc:owner-principal`` of its owner), ``UserAddressBooks.php`` (the system address book in every
home), ``AddressBook.php``/``Card.php`` (``getOwner`` is the owner principal of a shared book).

Not modelled: writing cards over DAV, ``card:filter`` matching, ``sync-collection``, multiget,
jCard. Not compared with a running Nextcloud.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .addressbooks import AddressBook
from .davxml import DavError, PropValue, href, multistatus, parse, requested_props, split_props
from .state import NextcloudState
from .webdav import dav_endpoint

CARDDAV = "urn:ietf:params:xml:ns:carddav"
SYNC_PREFIX = "http://sabre.io/ns/sync/"
ALWAYS_KEPT = ("UID", "VERSION", "FN")  # sabre's convertVCard keeps them whatever is asked
BINARY_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif"}


def _principal_href(principal: str) -> list[tuple[str, str]]:
    return [("d:href", href(principal, collection=True))]


def book_props(book: AddressBook, user: str) -> dict[str, PropValue]:
    """What a PROPFIND by user shows of an address book (sabre's AddressBook, Sync and ACL
    plugins; Nextcloud's owner of a shared book)."""
    props: dict[str, PropValue] = {
        "d:resourcetype": [("d:collection", ""), ("card:addressbook", "")],
        "d:displayname": book.display_name,
        "d:owner": _principal_href(book.principal()),
        "d:sync-token": f"{SYNC_PREFIX}{book.sync_token}",
        "cs:getctag": str(book.sync_token),
        "s:sync-token": str(book.sync_token),
    }
    if book.owner not in ("system", user):
        props["oc:owner-principal"] = book.principal()
    return props


class CardDav:
    """The address-book homes and books of ``state.address_books``."""

    def __init__(self, state: NextcloudState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        path = "/remote.php/dav/addressbooks/users/{user_id}{rest:path}"
        return [Route(path, self._guard(self.propfind), methods=["PROPFIND"]),
                Route(path, self._guard(self.report), methods=["REPORT"])]

    def _guard(self, handler):
        return dav_endpoint(self.state, handler)

    def _target(self, request: Request, user: str) -> tuple[str, AddressBook | None]:
        """(the book's name or "" for the home, the book); 404 for another user's home."""
        if unquote(request.path_params["user_id"]) != user:
            raise DavError(404, "Sabre\\DAV\\Exception\\NotFound",
                           f"Principal with name {request.path_params['user_id']} not found")
        name = unquote(request.path_params["rest"]).strip("/")
        if not name:
            return "", None
        book = self.state.address_books.find(user, name)
        if book is None or "/" in name:
            raise DavError(404, "Sabre\\DAV\\Exception\\NotFound", f"Node with name '{name}' could not be found")
        return name, book

    async def propfind(self, request: Request, user: str) -> Response:
        name, book = self._target(request, user)
        wanted = requested_props(parse(await request.body()))
        depth = request.headers.get("depth", "1").lower()
        home = f"addressbooks/users/{user}"
        records = []
        if book is None:
            home_props: dict[str, PropValue] = {"d:resourcetype": [("d:collection", "")],
                                                "d:owner": _principal_href(f"principals/users/{user}")}
            records.append((href(home, True), *split_props(home_props, wanted)))
            books = self.state.address_books.home_of(user) if depth != "0" else []
        else:
            books = [book]
        for each in books:
            props = book_props(each, user)
            if wanted is None:
                found, missing = {n: props[n] for n in ("d:resourcetype",)}, []
            else:
                found, missing = split_props(props, wanted)
            records.append((href(f"{home}/{each.uri_for(user)}", True), found, missing))
        return multistatus(records)

    async def report(self, request: Request, user: str) -> Response:
        name, book = self._target(request, user)
        root = parse(await request.body())
        if root is None or root.tag != f"{{{CARDDAV}}}addressbook-query":
            raise DavError(415, "Sabre\\DAV\\Exception\\ReportNotSupported", "The {DAV:}report is not supported")
        if book is None or request.headers.get("depth", "0") == "0":
            raise DavError(415, "Sabre\\DAV\\Exception\\ReportNotSupported",
                           "The addressbook-query report is not supported on this url with Depth: 0")
        prop = root.find("{DAV:}prop")
        wanted = requested_props(root) or []
        address_data = prop.find(f"{{{CARDDAV}}}address-data") if prop is not None else None
        version, keep = "3.0", None
        if address_data is not None:
            version = "4.0" if address_data.get("version") == "4.0" else "3.0"
            asked = [e.get("name") for e in address_data.findall(f"{{{CARDDAV}}}prop") if e.get("name")]
            keep = {n.upper() for n in asked} | set(ALWAYS_KEPT) if asked else None
        limit = root.findtext(f"{{{CARDDAV}}}limit/{{{CARDDAV}}}nresults")
        with self.state.lock:
            cards = sorted(book.cards.items())
        if limit:
            cards = cards[:int(limit)]
        records = []
        for card_uri, vcard in cards:
            props: dict[str, PropValue] = {
                "d:getetag": f'"{abs(hash(vcard)):x}"',
                "d:getcontenttype": "text/vcard; charset=utf-8",
                "card:address-data": convert_vcard(vcard, version, keep),
            }
            found, missing = split_props(props, wanted)
            records.append((href(f"addressbooks/users/{user}/{name}/{card_uri}"), found, missing))
        response = multistatus(records)
        response.headers["Vary"] = "Brief,Prefer"
        return response


def _unfold(vcard: str) -> list[str]:
    return [line for line in re.sub(r"\r?\n[ \t]", "", vcard).splitlines() if line]


def _fold(line: str) -> str:
    """Lines of at most 75 characters, continued with a space (RFC 6350 3.2)."""
    parts = [line[:75]] + [" " + line[i:i + 74] for i in range(75, len(line), 74)]
    return "\r\n".join(parts)


def convert_vcard(vcard: str, version: str, keep: set[str] | None) -> str:
    """The card cut down to ``keep`` (all when None) and converted to vCard ``version``: the
    VERSION line and PHOTO's encoding, as sabre/vobject's VCardConverter does them."""
    lines = []
    for line in _unfold(vcard):
        head, _, value = line.partition(":")
        name = head.split(";")[0].split(".")[-1].upper()
        if name in ("BEGIN", "END"):
            lines.append(line)
            continue
        if keep is not None and name not in keep:
            continue
        if name == "VERSION":
            line = f"VERSION:{version}"
        elif name in ("PHOTO", "LOGO", "SOUND", "KEY"):
            line = _convert_binary(head, value, version)
        lines.append(line)
    return "\r\n".join(_fold(line) for line in lines) + "\r\n"


def _convert_binary(head: str, value: str, version: str) -> str:
    name, *params = head.split(";")
    upper = [p.upper() for p in params]
    if version == "4.0" and any(p in ("ENCODING=B", "ENCODING=BASE64") for p in upper):
        types = [p.split("=", 1)[1].upper() for p in params if p.upper().startswith("TYPE=")]
        mime = next((BINARY_TYPES[t] for t in types if t in BINARY_TYPES), "application/octet-stream")
        rest = [p for p in params if not p.upper().startswith(("ENCODING=", "TYPE="))]
        return ";".join([name, *rest]) + f":data:{mime};base64," + "".join(value.split())
    if version == "3.0" and value.startswith("data:"):
        mime, _, payload = value[5:].partition(",")
        mime, _, encoding = mime.partition(";")
        data = payload if encoding == "base64" else base64.b64encode(payload.encode()).decode()
        kind = {v: k for k, v in BINARY_TYPES.items()}.get(mime)
        rest = [p for p in params if not p.upper().startswith(("VALUE=", "MEDIATYPE="))]
        return ";".join([name, *rest, "ENCODING=b", *([f"TYPE={kind}"] if kind else [])]) + ":" + data
    return f"{head}:{value}"


def vcard(name: str, photo: bytes | None = None, version: str = "3.0", uid: str = "", extra: str = "") -> str:
    """A card as clients store them: vCard 3 with a base64 PHOTO, or vCard 4 with a data: URI."""
    lines = ["BEGIN:VCARD", f"VERSION:{version}", f"UID:{uid or name.replace(' ', '-').lower()}",
             f"FN:{name}", f"N:{name.split(' ')[-1]};{name.split(' ')[0]};;;"]
    if photo is not None:
        data = base64.b64encode(photo).decode()
        lines.append(f"PHOTO;ENCODING=b;TYPE=JPEG:{data}" if version == "3.0"
                     else f"PHOTO:data:image/jpeg;base64,{data}")
    lines += [line for line in extra.splitlines() if line] + ["END:VCARD"]
    return "\r\n".join(_fold(line) for line in lines) + "\r\n"


def addressbook_query(props: str = "<d:getetag/>") -> str:
    """An addressbook-query REPORT body (for tests)."""
    return (f'<card:addressbook-query xmlns:d="DAV:" xmlns:card="{CARDDAV}"><d:prop>{props}'
            "</d:prop></card:addressbook-query>")

