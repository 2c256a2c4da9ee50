"""WebDAV XML as Nextcloud's sabre/dav writes it: d:/oc:/nc:/s: prefixes, 207 multistatus, d:error bodies."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote
from xml.etree import ElementTree

from starlette.responses import Response

# The prefixes Nextcloud's DAV server declares on every answer, in its order (sabre's xml
# service with the CalDAV and CardDAV plugins' namespaces: cal, cs, card).
NAMESPACES = {
    "DAV:": "d",
    "http://sabredav.org/ns": "s",
    "urn:ietf:params:xml:ns:caldav": "cal",
    "http://calendarserver.org/ns/": "cs",
    "urn:ietf:params:xml:ns:carddav": "card",
    "http://owncloud.org/ns": "oc",
    "http://nextcloud.org/ns": "nc",
    "http://open-collaboration-services.org/ns": "ocs",
}
PREFIXES = {prefix: uri for uri, prefix in NAMESPACES.items()}

Children = list[tuple[str, str]]
"""Child elements of a property: (name, text) pairs."""
PropValue = str | Children
"""A property value: its text, or its child elements."""


def prefixed(clark: str) -> str:
    """``{DAV:}getetag`` → ``d:getetag``; names in unknown namespaces keep their Clark form."""
    uri, _, local = clark[1:].partition("}")
    return f"{NAMESPACES[uri]}:{local}" if uri in NAMESPACES else clark


def href(path: str, collection: bool = False) -> str:
    """An href under /remote.php/dav, percent-encoded as sabre's encodePath does."""
    encoded = quote("/remote.php/dav/" + path.strip("/"), safe="/:@()~")
    return encoded + "/" if collection and not encoded.endswith("/") else encoded


def parse(body: bytes) -> ElementTree.Element | None:
    """The request's XML document, or None for an empty body; raises BadRequest on broken XML."""
    if not body.strip():
        return None
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError as e:
        raise DavError(400, "Sabre\\DAV\\Exception\\BadRequest",
                       f"The request body had an invalid XML body: {e}") from None


def requested_props(root: ElementTree.Element | None) -> list[str] | None:
    """Names asked for by a d:propfind (or oc:filter-files) body; None means allprop."""
    if root is None or root.find("{DAV:}allprop") is not None:
        return None
    prop = root.find("{DAV:}prop")
    return [] if prop is None else [prefixed(child.tag) for child in prop]


def multistatus(responses: Iterable[tuple[str, dict[str, PropValue], list[str]]]) -> Response:
    """A 207 answer: for each href, the found properties (200) and the missing ones (404)."""
    root = _element("d:multistatus")
    for target, found, missing in responses:
        response = ElementTree.SubElement(root, "d:response")
        ElementTree.SubElement(response, "d:href").text = target
        for status, names in (("HTTP/1.1 200 OK", list(found)), ("HTTP/1.1 404 Not Found", missing)):
            if not names:
                continue
            propstat = ElementTree.SubElement(response, "d:propstat")
            prop = ElementTree.SubElement(propstat, "d:prop")
            for name in names:
                element = _sub(root, prop, name)
                value = found.get(name, "") if status.endswith("OK") else ""
                if isinstance(value, list):
                    for child_name, child_text in value:
                        child = _sub(root, element, child_name)
                        if child_text:
                            child.text = child_text
                elif value:
                    element.text = value
            ElementTree.SubElement(propstat, "d:status").text = status
    return xml_response(root, 207)


def split_props(available: dict[str, PropValue], wanted: list[str] | None) -> tuple[dict[str, PropValue], list[str]]:
    """The wanted properties this resource has, and those it lacks (all it has for allprop)."""
    if wanted is None:
        return available, []
    return {n: available[n] for n in wanted if n in available}, [n for n in wanted if n not in available]


class DavError(Exception):
    """A sabre exception: HTTP status, exception class and message of the d:error body."""

    def __init__(self, status: int, exception: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.exception, self.message = status, exception, message
        self.headers = headers or {}

    def response(self) -> Response:
        root = _element("d:error")
        ElementTree.SubElement(root, "s:exception").text = self.exception
        ElementTree.SubElement(root, "s:message").text = self.message
        return xml_response(root, self.status, self.headers)


def not_found(message: str) -> DavError:
    return DavError(404, "Sabre\\DAV\\Exception\\NotFound", message)


def not_authenticated() -> DavError:
    return DavError(401, "Sabre\\DAV\\Exception\\NotAuthenticated", "No public access to this resource.",
                    {"WWW-Authenticate": 'Basic realm="Nextcloud", charset="UTF-8"'})


def xml_response(root: ElementTree.Element, status: int, headers: dict[str, str] | None = None) -> Response:
    body = b'<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, encoding="utf-8")
    return Response(body, status, headers=headers, media_type="application/xml; charset=utf-8")


def _element(name: str) -> ElementTree.Element:
    return ElementTree.Element(name, {f"xmlns:{p}": uri for p, uri in PREFIXES.items()})


def _sub(root: ElementTree.Element, parent: ElementTree.Element, name: str) -> ElementTree.Element:
    """A child named ``prefix:local``; a Clark name of an unknown namespace gets its own declaration."""
    if name.startswith("{"):
        uri, _, local = name[1:].partition("}")
        return ElementTree.SubElement(parent, f"x:{local}", {"xmlns:x": uri})
    return ElementTree.SubElement(parent, name)
