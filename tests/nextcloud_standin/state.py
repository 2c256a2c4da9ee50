"""Everything the stand-in Nextcloud knows, inspectable and changeable by tests.

One lock guards it all: the server runs in its own thread while tests read and write.
"""

from __future__ import annotations

import itertools
import mimetypes
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .addressbooks import AddressBooks
from .releases import Release, release_of

INSTANCE_ID = "ocstandin01"
"""Nextcloud's instance id, the suffix of every ``oc:id``."""


@dataclass
class User:
    """A Nextcloud account."""

    user_id: str
    display_name: str
    admin: bool = False
    password: str = ""  # for a browser's Basic auth; "" means the user id
    groups: list[str] = field(default_factory=list)  # besides "admin"

    def checks(self, password: str) -> bool:
        return password == (self.password or self.user_id)


@dataclass
class Node:
    """A file or folder in its owner's storage (one file cache entry, one file id)."""

    fileid: int
    owner: str
    path: str  # relative to the owner's files/, "" for the root
    is_dir: bool
    content: bytes = b""
    mtime: int = 0
    ctime: int = 0
    etag: str = ""
    mimetype: str = ""
    favorite: bool = False

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass
class Share:
    """A user share: the owner's node mounted at ``target`` in the recipient's root."""

    share_id: int
    fileid: int
    owner: str
    recipient: str
    target: str
    permissions: int = 31


@dataclass
class Entry:
    """A node as one user sees it: under which path and through which mount."""

    node: Node
    user: str
    path: str
    share: Share | None = None

    @property
    def mount_type(self) -> str:
        return "shared" if self.share else ""


@dataclass
class Tag:
    """A system tag."""

    tag_id: int
    name: str
    user_visible: bool = True
    user_assignable: bool = True
    groups: list[str] = field(default_factory=list)  # may assign it though not user-assignable


@dataclass
class AppRecord:
    """The ExApp as AppAPI registered it, with its initialization status."""

    app_id: str
    version: str
    secret: str
    enabled: bool = True
    initializing: bool = False
    progress: int = 0
    error: str = ""
    progress_history: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Faults:
    """Answer ``status`` instead of serving requests under ``path_prefix``, ``count`` times or until ``until``."""

    status: int = 503
    count: int = 0
    until: float = 0.0
    path_prefix: str = "/"
    served: int = 0  # requests answered with the fault so far


class NextcloudState:
    """Users, files, shares, tags, AppAPI registrations, notifications, logs and faults."""

    def __init__(self, app_id: str, app_version: str, app_secret: str, aa_version: str,
                 nextcloud_version: tuple[int, int, int] = (30, 0, 5)) -> None:
        self.lock = threading.RLock()
        self.aa_version = aa_version
        self.nextcloud_version = nextcloud_version
        self.loglevel = 2
        self.app = AppRecord(app_id, app_version, app_secret)
        self.users: dict[str, User] = {}
        self.nodes: dict[int, Node] = {}
        self.shares: list[Share] = []
        self.tags: dict[int, Tag] = {}
        self.tag_relations: set[tuple[int, int]] = set()  # (fileid, tag id)
        self.app_config: dict[str, tuple[str, int]] = {}  # key -> (value, sensitive)
        self.preferences: dict[tuple[str, str], tuple[str, int]] = {}  # (user, key) -> (value, sensitive)
        self.file_actions: dict[str, dict[str, Any]] = {}
        self.top_menu: dict[str, dict[str, Any]] = {}
        self.ui_resources: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # AppAPI's ui_scripts / ui_styles
        self.settings_forms: dict[str, dict[str, Any]] = {}
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.logs: list[tuple[int, str]] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, AppAPI user) of every request
        self.request_headers: list[dict[str, str]] = []  # their headers, lower-cased names, same order
        self.faults = Faults()
        self.disabled_apps: set[str] = set()  # shipped apps an admin disabled (occ app:disable)
        self.address_books = AddressBooks(self.lock)  # CardDAV (carddav.py)
        self._ids = itertools.count(100)

    @property
    def webhook_listeners(self) -> bool:
        """Nextcloud 30 brought the webhook_listeners app; on 29, or disabled, its routes do not exist."""
        return self.nextcloud_version >= (30, 0, 0) and "webhook_listeners" not in self.disabled_apps

    @property
    def release(self) -> Release:
        """What differs for this server version (releases.py)."""
        return release_of(self.nextcloud_version)

    @property
    def aa_major(self) -> int:
        return int(self.aa_version.split(".")[0])

    def next_id(self) -> int:
        with self.lock:
            return next(self._ids)

    # --- users and files ---------------------------------------------------------------------

    def add_user(self, user_id: str, display_name: str = "", admin: bool = False) -> User:
        """Create an account with its empty home folder."""
        with self.lock:
            user = User(user_id, display_name or user_id, admin)
            self.users[user_id] = user
            self._make_node(user_id, "", is_dir=True)
            return user

    def put_file(self, user_id: str, path: str, content: bytes, mtime: int | None = None) -> Node:
        """Write a file into the user's own storage, creating missing folders; returns its node."""
        with self.lock:
            path = path.strip("/")
            self.makedirs(user_id, path.rpartition("/")[0])
            node = self.own_node(user_id, path)
            if node is None:
                node = self._make_node(user_id, path, is_dir=False)
            elif node.is_dir:
                raise IsADirectoryError(path)
            node.content = content
            node.mtime = int(time.time()) if mtime is None else mtime
            node.etag = _etag()
            self._touch_parents(node)
            return node

    def makedirs(self, user_id: str, path: str) -> Node:
        """Create the folder and its parents in the user's own storage; returns the folder."""
        with self.lock:
            node = self.own_node(user_id, "")
            parts = [p for p in path.strip("/").split("/") if p]
            for depth in range(1, len(parts) + 1):
                sub = "/".join(parts[:depth])
                node = self.own_node(user_id, sub) or self._make_node(user_id, sub, is_dir=True)
                if not node.is_dir:
                    raise NotADirectoryError(sub)
            return node

    def delete_node(self, node: Node) -> None:
        """Remove a node, everything below it, its shares and its tag assignments."""
        with self.lock:
            doomed = [n for n in self.nodes.values() if n.owner == node.owner
                      and (n.path == node.path or n.path.startswith(node.path + "/"))]
            for n in doomed:
                del self.nodes[n.fileid]
                self.shares = [s for s in self.shares if s.fileid != n.fileid]
                self.tag_relations = {r for r in self.tag_relations if r[0] != n.fileid}
            self._touch_parents(node)

    def move(self, user_id: str, source: str, destination: str) -> Node:
        """Move or rename a node within its owner's storage; it and everything below keep their file ids."""
        with self.lock:
            node = self.own_node(user_id, source.strip("/"))
            if node is None:
                raise FileNotFoundError(source)
            old, new = node.path, destination.strip("/")
            self.makedirs(user_id, new.rpartition("/")[0])
            self._touch_parents(node)
            for n in self.nodes.values():
                if n.owner == user_id and (n.path == old or n.path.startswith(old + "/")):
                    n.path = new + n.path[len(old):]
            node.etag = _etag()
            self._touch_parents(node)
            return node

    def share(self, owner: str, path: str, recipient: str, target: str = "", permissions: int = 31) -> Share:
        """Share the owner's file or folder with another user; it appears in the recipient's root."""
        with self.lock:
            node = self.own_node(owner, path.strip("/"))
            if node is None:
                raise FileNotFoundError(path)
            share = Share(self.next_id(), node.fileid, owner, recipient, target or node.name, permissions)
            self.shares.append(share)
            return share

    def own_node(self, user_id: str, path: str) -> Node | None:
        with self.lock:
            for node in self.nodes.values():
                if node.owner == user_id and node.path == path:
                    return node
            return None

    def resolve(self, user_id: str, path: str) -> Entry | None:
        """The node at ``path`` in the user's tree (own files and received shares), or None."""
        with self.lock:
            path = path.strip("/")
            for share in self.shares:
                if share.recipient != user_id:
                    continue
                if path == share.target or path.startswith(share.target + "/"):
                    root = self.nodes[share.fileid]
                    rest = path[len(share.target):].strip("/")
                    node = root if not rest else self.own_node(root.owner, f"{root.path}/{rest}".strip("/"))
                    return Entry(node, user_id, path, share) if node else None
            node = self.own_node(user_id, path)
            return Entry(node, user_id, path) if node else None

    def children(self, entry: Entry) -> list[Entry]:
        """What a folder holds as its viewer sees it, received shares included at the root."""
        with self.lock:
            node = entry.node
            if not node.is_dir:
                return []
            prefix = node.path + "/" if node.path else ""
            result = []
            for child in self.nodes.values():
                if child.owner == node.owner and child.path.startswith(prefix) and child.path != node.path \
                        and "/" not in child.path[len(prefix):]:
                    result.append(Entry(child, entry.user, _join(entry.path, child.name), entry.share))
            if entry.share is None:
                for share in self.shares:
                    parent = share.target.rpartition("/")[0]
                    if share.recipient == entry.user and parent == entry.path:
                        result.append(Entry(self.nodes[share.fileid], entry.user, share.target, share))
            return sorted(result, key=lambda e: e.path)

    def walk(self, entry: Entry, depth: int) -> list[Entry]:
        """The entry and its descendants down to ``depth`` levels (-1: all)."""
        result = [entry]
        if depth != 0:
            for child in self.children(entry):
                result += self.walk(child, depth - 1)
        return result

    def entry_by_id(self, user_id: str, fileid: int) -> Entry | None:
        """The file with this id as the user sees it, or None when the user has no access."""
        with self.lock:
            node = self.nodes.get(fileid)
            if node is None:
                return None
            if node.owner == user_id:
                return Entry(node, user_id, node.path)
            for share in self.shares:
                root = self.nodes[share.fileid]
                if share.recipient == user_id and root.owner == node.owner and (
                        node.path == root.path or node.path.startswith(root.path + "/")):
                    return Entry(node, user_id, _join(share.target, node.path[len(root.path):].strip("/")), share)
            return None

    # --- tags ----------------------------------------------------------------------------------

    def add_tag(self, name: str, user_visible: bool = True, user_assignable: bool = True) -> Tag:
        with self.lock:
            tag = Tag(self.next_id(), name, user_visible, user_assignable)
            self.tags[tag.tag_id] = tag
            return tag

    def tag_names_of(self, fileid: int) -> set[str]:
        """Names of the tags assigned to a file."""
        with self.lock:
            return {self.tags[t].name for t in self.tag_ids_of(fileid)}

    def tag_ids_of(self, fileid: int) -> set[int]:
        """Ids of the tags assigned to a file."""
        with self.lock:
            return {t for f, t in self.tag_relations if f == fileid}

    def folder_size(self, node: Node) -> int:
        """oc:size of a folder: the bytes of everything below it."""
        prefix = node.path + "/" if node.path else ""
        with self.lock:
            return sum(n.size for n in self.nodes.values()
                       if n.owner == node.owner and not n.is_dir and n.path.startswith(prefix))

    # --- faults --------------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 503, path_prefix: str = "/") -> None:
        """Answer the next ``count`` requests under ``path_prefix`` with ``status`` (503: maintenance mode)."""
        with self.lock:
            self.faults = Faults(status=status, count=count, path_prefix=path_prefix)

    def fail_for(self, seconds: float, status: int = 503, path_prefix: str = "/") -> None:
        """Answer every request under ``path_prefix`` with ``status`` for ``seconds``."""
        with self.lock:
            self.faults = Faults(status=status, until=time.monotonic() + seconds, path_prefix=path_prefix)

    def take_fault(self, path: str) -> int | None:
        """The status to answer a request for ``path`` with, if a fault is active for it."""
        with self.lock:
            faults = self.faults
            if not path.startswith(faults.path_prefix):
                return None
            if faults.count > 0:
                faults.count -= 1
            elif time.monotonic() >= faults.until:
                return None
            faults.served += 1
            return faults.status

    # --- internals -----------------------------------------------------------------------------

    def _make_node(self, owner: str, path: str, is_dir: bool) -> Node:
        now = int(time.time())
        mimetype = "httpd/unix-directory" if is_dir else (
            mimetypes.guess_type(path)[0] or "application/octet-stream")
        node = Node(self.next_id(), owner, path, is_dir, mtime=now, ctime=now, mimetype=mimetype)
        node.etag = _etag()
        self.nodes[node.fileid] = node
        self._touch_parents(node)
        return node

    def _touch_parents(self, node: Node) -> None:
        """A change below a folder changes the folder's etag and mtime, as in Nextcloud."""
        path = node.path
        while path:
            path = path.rpartition("/")[0]
            parent = self.own_node(node.owner, path)
            if parent is not None:
                parent.mtime = max(parent.mtime, node.mtime)
                parent.etag = _etag()


def _join(base: str, name: str) -> str:
    return f"{base}/{name}".strip("/") if name else base


def _etag() -> str:
    """A fresh etag, 13 hex digits like PHP's uniqid() that Nextcloud uses."""
    return uuid.uuid4().hex[:13]


def folder_size(state: NextcloudState, node: Node) -> int:
    """oc:size of a folder: the bytes of everything below it."""
    return state.folder_size(node)
