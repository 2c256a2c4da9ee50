"""Contacts with photos: a user's own CardDAV address books in Nextcloud, or a .vcf file.

Nextcloud serves each user's address books under ``addressbooks/users/USER/`` of its DAV
endpoint (sabre/dav's CardDAV plugin behind Nextcloud's apps/dav). A PROPFIND of that home
lists them with their owner and sync token; an ``addressbook-query`` REPORT on one returns
its cards, cut down to ``FN`` and ``PHOTO`` (sabre keeps ``UID`` and ``VERSION`` too). Shared
address books (another user's, ``…_shared_by_…``) and the system address book of all
accounts (``z-server-generated--system``) name another owner and are left out.

Requests go through nc_py_api's DAV client of an ``AsyncNextcloudApp`` made for the user, so
they carry AppAPI's signature for that user exactly as the Files walk does. nc_py_api 0.30
has no CardDAV API of its own: like its CalDAV wrapper (``nc_py_api.calendar_api``), this
sends DAV requests through the session's DAV adapter.

Photos are inline only: vCard 3 base64 (``ENCODING=b``) or vCard 4 ``data:`` URIs (vobject
parses the cards); a photo given as a link is never fetched.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

import vobject
from nc_py_api import AsyncNextcloudApp, NextcloudException

log = logging.getLogger(__name__)

DAV, CARDDAV, CALSERVER = "DAV:", "urn:ietf:params:xml:ns:carddav", "http://calendarserver.org/ns/"
MAX_PHOTO_BYTES = 10_000_000  # sabre's CardDAV plugin refuses cards over 10 MB anyway
# vobject reads every card by its vCard 3 rules, which cut a text value at its first unescaped
# comma: vCard 4's "PHOTO:data:image/jpeg;base64,..." would lose its data. The comma after a
# PHOTO's data: header is escaped first (on unfolded lines), which vobject then unescapes.
FOLD = re.compile(r"\r?\n[ \t]")
DATA_URI_COMMA = re.compile(r"(?im)^((?:[\w-]+\.)?PHOTO[^:\r\n]*:data:[^,\r\n]*),")

HOME_PROPFIND = (
    f'<?xml version="1.0" encoding="utf-8"?>'
    f'<d:propfind xmlns:d="{DAV}" xmlns:cs="{CALSERVER}"><d:prop>'
    "<d:resourcetype/><d:displayname/><d:owner/><d:sync-token/><cs:getctag/>"
    "</d:prop></d:propfind>"
)
# vCard 4 asked for: sabre converts stored vCard 3 cards (its default answer otherwise).
QUERY_REPORT = (
    f'<?xml version="1.0" encoding="utf-8"?>'
    f'<card:addressbook-query xmlns:d="{DAV}" xmlns:card="{CARDDAV}"><d:prop><d:getetag/>'
    '<card:address-data content-type="text/vcard" version="4.0">'
    '<card:prop name="FN"/><card:prop name="PHOTO"/></card:address-data>'
    "</d:prop></card:addressbook-query>"
)


@dataclass(frozen=True)
class AddressBook:
    """One of the user's own address books: its path under the DAV endpoint and sync token."""

    path: str  # under the DAV endpoint, percent-encoded: "/addressbooks/users/alice/contacts/"
    display_name: str
    sync_token: str


@dataclass(frozen=True)
class Contact:
    """A card with a name; ``photo`` holds the inline photo's bytes (None: no usable photo,
    ``problem`` says why when there was one)."""

    uid: str
    name: str
    photo: bytes | None
    problem: str = ""


class ContactsError(Exception):
    """An address book could not be read or parsed."""


def parse_vcards(text: str) -> list[Contact]:
    """The named cards of a vCard stream (2.1, 3.0 or 4.0); raises ContactsError when it is
    no vCard data at all."""
    text = DATA_URI_COMMA.sub(r"\1\\,", FOLD.sub("", text))
    try:
        components = list(vobject.readComponents(text, ignoreUnreadable=True))
    except Exception as error:  # vobject raises ParseError, ValueError, ... on broken data
        raise ContactsError(f"not a readable vCard file: {error}") from error
    contacts = []
    for card in components:
        if card.name != "VCARD":
            continue
        name = _text(card, "fn")
        if not name:
            continue
        photo, problem = _photo(card)
        contacts.append(Contact(uid=_text(card, "uid") or name, name=name, photo=photo, problem=problem))
    return contacts


def _text(card, key: str) -> str:
    values = card.contents.get(key)
    value = values[0].value if values else ""
    return value.strip() if isinstance(value, str) else ""


def _photo(card) -> tuple[bytes | None, str]:
    """The first PHOTO's bytes, or None and why."""
    values = card.contents.get("photo")
    if not values:
        return None, ""
    value = values[0].value
    if isinstance(value, bytes):  # ENCODING=b / BASE64, decoded by vobject
        data = value
    elif isinstance(value, str) and value.strip().lower().startswith("data:"):
        data = data_uri_bytes(value.strip())
        if data is None:
            return None, "the photo's data: URI is not base64 data"
    else:
        return None, "the photo is a link, not inline data (links are not fetched)"
    if len(data) > MAX_PHOTO_BYTES:
        return None, f"the photo is larger than {MAX_PHOTO_BYTES} bytes"
    return (data, "") if data else (None, "the photo is empty")


def data_uri_bytes(uri: str) -> bytes | None:
    """The bytes of a ``data:[media type];base64,…`` URI (RFC 2397), None for anything else."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.lower().endswith(";base64"):
        return None
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


async def _request(nc: AsyncNextcloudApp, method: str, path: str, body: str, depth: str) -> ElementTree.Element:
    dav = nc._session.adapter_dav  # noqa: SLF001 (nc_py_api has no public CardDAV API: see above)
    response = await dav.request(
        method, path, data=body.encode(),
        headers={"Content-Type": "application/xml; charset=utf-8", "Depth": depth},
    )
    if response.status_code != 207:
        raise NextcloudException(response.status_code, reason=response.reason or "", info=f"{method} {path}")
    try:
        return ElementTree.fromstring(response.content)
    except ElementTree.ParseError as error:
        raise ContactsError(f"{method} {path}: the answer is not XML: {error}") from error


async def address_books(nc: AsyncNextcloudApp, user: str) -> list[AddressBook]:
    """The user's own address books (not shared with them, not the system one)."""
    home = f"/addressbooks/users/{quote(user, safe='')}/"
    root = await _request(nc, "PROPFIND", home, HOME_PROPFIND, "1")
    books = []
    for response in root.iter(f"{{{DAV}}}response"):
        props = _found_props(response)
        kind = props.get(f"{{{DAV}}}resourcetype")
        if kind is None or kind.find(f"{{{CARDDAV}}}addressbook") is None:
            continue
        owner = props.get(f"{{{DAV}}}owner")
        owner_href = "" if owner is None else (owner.findtext(f"{{{DAV}}}href") or "")
        if unquote(owner_href).rstrip("/").rsplit("/", 2)[-2:] != ["users", user]:
            continue  # shared by another user, or the system address book
        token = _prop_text(props, f"{{{DAV}}}sync-token") or _prop_text(props, f"{{{CALSERVER}}}getctag")
        href = urlsplit(response.findtext(f"{{{DAV}}}href") or "").path
        path = "/" + href.split("/remote.php/dav/", 1)[-1]
        books.append(AddressBook(path=path, display_name=_prop_text(props, f"{{{DAV}}}displayname"),
                                 sync_token=token))
    return books


async def contacts_of(nc: AsyncNextcloudApp, book: AddressBook) -> list[Contact]:
    """The named cards of an address book, with their inline photos."""
    root = await _request(nc, "REPORT", book.path, QUERY_REPORT, "1")
    contacts = []
    for response in root.iter(f"{{{DAV}}}response"):
        data = _prop_text(_found_props(response), f"{{{CARDDAV}}}address-data")
        if not data:
            continue
        try:
            contacts += parse_vcards(data)
        except ContactsError as error:  # one broken card does not hide the others
            log.warning("%s: %s: %s", book.path, response.findtext(f"{{{DAV}}}href"), error)
    return contacts


def _found_props(response: ElementTree.Element) -> dict[str, ElementTree.Element]:
    """The properties of a multistatus response found with status 200."""
    found = {}
    for propstat in response.iter(f"{{{DAV}}}propstat"):
        if " 200 " not in (propstat.findtext(f"{{{DAV}}}status") or ""):
            continue
        for prop in propstat.iter(f"{{{DAV}}}prop"):
            found.update({child.tag: child for child in prop})
    return found


def _prop_text(props: dict[str, ElementTree.Element], name: str) -> str:
    element = props.get(name)
    return "" if element is None else (element.text or "").strip()
