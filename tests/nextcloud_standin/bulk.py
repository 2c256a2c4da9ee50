"""A big instance for benchmarks: many users and files, answered as fast as a small one.

:class:`IndexedState` is the same state with look-ups kept in dictionaries (a node by its
path, a folder's children, a file's tags, folder sizes), so a PROPFIND costs what the folder
holds rather than what the instance holds. :func:`seed_instance` fills it with real media
reused under distinct paths, sizes and etags (a file's content is its source's bytes plus
its own number of zero bytes, made only when downloaded), shared folders and ``.nomedia``
trees.
"""

from __future__ import annotations

import mimetypes
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .server import _claimed_user
from .state import Entry, NextcloudState, Node, _etag, _join


class SeededNode(Node):
    """A file whose content is a source's bytes (shared with other files) plus pad zero bytes."""

    def __init__(self, fileid: int, owner: str, path: str, source: bytes, pad: int, mtime: int) -> None:
        super().__init__(fileid, owner, path, False, mtime=mtime, ctime=mtime, etag=_etag(),
                         mimetype=mimetypes.guess_type(path)[0] or "application/octet-stream")
        self._source, self._pad = source, pad

    @property
    def content(self) -> bytes:
        return self._source + bytes(self._pad)

    @content.setter
    def content(self, value: bytes) -> None:  # an upload over the file replaces it all
        self._source, self._pad = value, 0

    @property
    def size(self) -> int:
        return len(self._source) + self._pad


class _Relations(set):
    """(file id, tag id) pairs that also know each file's tags."""

    def __init__(self, pairs=()) -> None:
        super().__init__()
        self.by_file: dict[int, set[int]] = defaultdict(set)
        for pair in pairs:
            self.add(pair)

    def add(self, pair) -> None:
        super().add(pair)
        self.by_file[pair[0]].add(pair[1])

    def discard(self, pair) -> None:
        super().discard(pair)
        self.by_file.get(pair[0], set()).discard(pair[1])

    def remove(self, pair) -> None:
        super().remove(pair)
        self.by_file[pair[0]].discard(pair[1])


class IndexedState(NextcloudState):
    """NextcloudState with its look-ups indexed; the same answers, at any size."""

    def __init__(self, *args, **kwargs) -> None:
        self._by_path: dict[tuple[str, str], Node] = {}
        self._children: dict[tuple[str, str], dict[str, Node]] = defaultdict(dict)
        self._sizes: dict[int, int] = {}
        super().__init__(*args, **kwargs)

    @property
    def tag_relations(self) -> _Relations:
        return self._relations

    @tag_relations.setter
    def tag_relations(self, pairs) -> None:
        self._relations = pairs if isinstance(pairs, _Relations) else _Relations(pairs)

    def tag_ids_of(self, fileid: int) -> set[int]:
        with self.lock:
            return set(self._relations.by_file.get(fileid, ()))

    def own_node(self, user_id: str, path: str) -> Node | None:
        return self._by_path.get((user_id, path))

    def children(self, entry: Entry) -> list[Entry]:
        with self.lock:
            node = entry.node
            if not node.is_dir:
                return []
            result = [Entry(child, entry.user, _join(entry.path, child.name), entry.share)
                      for child in self._children[(node.owner, node.path)].values()]
            if entry.share is None:
                for share in self.shares:
                    if share.recipient == entry.user and share.target.rpartition("/")[0] == entry.path:
                        result.append(Entry(self.nodes[share.fileid], entry.user, share.target, share))
            return sorted(result, key=lambda e: e.path)

    def folder_size(self, node: Node) -> int:
        with self.lock:
            if node.fileid not in self._sizes:
                self._sizes[node.fileid] = sum(
                    self.folder_size(child) if child.is_dir else child.size
                    for child in self._children[(node.owner, node.path)].values())
            return self._sizes[node.fileid]

    def put_file(self, user_id: str, path: str, content: bytes, mtime: int | None = None) -> Node:
        with self.lock:
            self._sizes.clear()
            return super().put_file(user_id, path, content, mtime)

    def delete_node(self, node: Node) -> None:
        with self.lock:
            super().delete_node(node)
            self._reindex()

    def move(self, user_id: str, source: str, destination: str) -> Node:
        with self.lock:
            moved = super().move(user_id, source, destination)
            self._reindex()
            return moved

    def add_node(self, node: Node) -> None:
        """Put a node made elsewhere (say, a SeededNode) in place; its folders must exist."""
        with self.lock:
            self.nodes[node.fileid] = node
            self._index(node)

    def _make_node(self, owner: str, path: str, is_dir: bool) -> Node:
        node = super()._make_node(owner, path, is_dir)
        self._index(node)
        return node

    def _index(self, node: Node) -> None:
        self._by_path[(node.owner, node.path)] = node
        if node.path:
            self._children[(node.owner, node.path.rpartition("/")[0])][node.name] = node
        self._sizes.clear()

    def _reindex(self) -> None:
        self._by_path.clear()
        self._children.clear()
        for node in self.nodes.values():
            self._index(node)


@dataclass
class Seeded:
    """What :func:`seed_instance` made."""

    users: list[str]
    files: int  # media files
    hidden: int  # of them, below a .nomedia marker
    folders: int
    shares: int
    seconds: float


def seed_instance(state: IndexedState, sources: list[Path], files: int, users: int = 20,
                  per_folder: int = 50) -> Seeded:
    """users accounts (u01...), files media files spread over them in folders of per_folder,
    taken in turn from sources; each user shares their first album with the next user, and
    every fifth user keeps one folder below a .nomedia marker."""
    started = time.monotonic()
    contents = [path.read_bytes() for path in sources]
    names = [f"u{index + 1:02}" for index in range(users)]
    for name in names:
        state.add_user(name, f"User {name}")
    hidden = folders = 0
    base = int(time.time()) - 86_400 * 365
    for number in range(files):
        user = names[number % users]
        slot = number // users
        folder = f"Photos/{2015 + slot // (per_folder * 12) % 10}/{slot // per_folder:05}"
        if names.index(user) % 5 == 0 and slot // per_folder == 1:
            folder = "Private/" + folder
            if state.own_node(user, "Private/.nomedia") is None:
                state.put_file(user, "Private/.nomedia", b"")
            hidden += 1
        if state.own_node(user, folder) is None:
            state.makedirs(user, folder)
            folders += 1
        source = sources[number % len(sources)]
        path = f"{folder}/{number:06}_{source.name}"
        state.add_node(SeededNode(state.next_id(), user, path, contents[number % len(sources)],
                                  number % 4096, base + number))
    shares = 0
    for index, user in enumerate(names):
        album = state.own_node(user, "Photos/2015/00000")
        if album is not None and users > 1:
            state.share(user, album.path, names[(index + 1) % users], f"From {user}")
            shares += 1
    return Seeded(names, files, hidden, folders, shares, time.monotonic() - started)


ANSWER_HEADERS = {b"authorization-app-api", b"ex-app-id", b"ex-app-version", b"aa-version", b"depth"}


class RepeatedPropfinds:
    """ASGI middleware in front of the stand-in (outside its request log): a PROPFIND of
    a folder whose answer cannot have changed is answered with the bytes sent last time.

    The answer is kept under everything it shows: the request (credentials, path, depth,
    body; not the request id) and each listed node's id, path, etag and tags, and the shares; any change
    there asks the stand-in again. Faults and disabled apps always go to the stand-in.
    """

    def __init__(self, app, state: IndexedState) -> None:
        self.app, self.state = app, state
        self._answers: dict[tuple, tuple[object, list, bytes]] = {}
        self.hits = self.misses = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "PROPFIND" or not self._cacheable():
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        key = (scope["path"], body, tuple(sorted(
            (name, value) for name, value in scope["headers"] if name in ANSWER_HEADERS)))
        version = self._version(scope)
        kept = self._answers.get(key)
        if kept is not None and kept[0] == version:
            self.hits += 1
            with self.state.lock:
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
                self.state.requests.append((scope["method"], scope["path"], _claimed_user(headers)))
                self.state.request_headers.append(headers)
            await send(kept[1])
            await send({"type": "http.response.body", "body": kept[2]})
            return
        self.misses += 1
        start: dict = {}
        chunks: list[bytes] = []

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        async def keep(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, replay, keep)
        if start.get("status") == 207 and version is not None:
            self._answers[key] = (version, start, b"".join(chunks))

    def _cacheable(self) -> bool:
        faults = self.state.faults
        return self.state.app.enabled and faults.count == 0 and time.monotonic() >= faults.until

    def _version(self, scope) -> tuple | None:
        """What the answer shows of the state, or None when the path is not a user's folder."""
        parts = scope["path"].split("/", 5)  # "", remote.php, dav, files, user, path
        if len(parts) < 5 or parts[1:4] != ["remote.php", "dav", "files"]:
            return None
        from urllib.parse import unquote

        headers = dict(scope["headers"])
        depth = headers.get(b"depth", b"1").decode().lower()
        levels = -1 if depth == "infinity" else 0 if depth == "0" else 1
        with self.state.lock:
            entry = self.state.resolve(parts[4], unquote(parts[5] if len(parts) > 5 else ""))
            if entry is None:
                return None
            shown = self.state.walk(entry, levels)
            return (len(self.state.shares), tuple(
                (e.node.fileid, e.path, e.node.etag, frozenset(self._tags(e.node.fileid)))
                for e in shown))

    def _tags(self, fileid: int) -> set[int]:
        return self.state.tag_relations.by_file.get(fileid, set())
