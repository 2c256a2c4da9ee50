"""Webhook calls as webhook_listeners makes them to an ExApp (through AppAPI) when a file event happens."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from .auth import headers_to_exapp
from .state import NextcloudState, Node

NODE_CREATED = "OCP\\Files\\Events\\Node\\NodeCreatedEvent"
NODE_WRITTEN = "OCP\\Files\\Events\\Node\\NodeWrittenEvent"
NODE_DELETED = "OCP\\Files\\Events\\Node\\NodeDeletedEvent"
NODE_RENAMED = "OCP\\Files\\Events\\Node\\NodeRenamedEvent"


@dataclass
class WebhookCall:
    """One request to the ExApp: method, path (the listener's uri), AppAPI headers and the JSON payload."""

    webhook_id: int
    method: str
    path: str
    headers: dict[str, str]
    payload: dict[str, Any]

    def send(self, exapp_url: str) -> httpx.Response:
        """Deliver it to the ExApp listening at ``exapp_url``."""
        headers = {**self.headers, "Content-Type": "application/json"}
        return httpx.request(self.method, exapp_url.rstrip("/") + self.path, headers=headers,
                             content=json.dumps(self.payload))


def node_event_calls(state: NextcloudState, event_class: str, node: Node, acting_user: str = "",
                     target: Node | None = None) -> list[WebhookCall]:
    """The calls the ExApp's listeners for ``event_class`` get when ``acting_user`` causes it on ``node``.

    For NodeRenamedEvent, ``node`` is the source and ``target`` the node after the move.
    """
    if event_class == NODE_RENAMED:
        event: dict[str, Any] = {"source": _file_info(node), "target": _file_info(target or node)}
    else:
        event = {"node": _file_info(node)}
    event["class"] = event_class
    user = state.users.get(acting_user)
    data = {"event": event, "user": {"uid": user.user_id, "displayName": user.display_name} if user else None,
            "time": int(time.time())}
    calls = []
    for webhook in list(state.webhooks.values()):
        if webhook["event"] != event_class or not _filter_matches(webhook["eventFilter"] or {}, data):
            continue
        if webhook["userIdFilter"] and webhook["userIdFilter"] != acting_user:
            continue
        headers = {**headers_to_exapp(state, webhook["userId"] or ""), **(webhook["headers"] or {})}
        if webhook["authMethod"] == "header":
            headers.update(webhook["authData"] or {})
        calls.append(WebhookCall(webhook["id"], webhook["httpMethod"], webhook["uri"], headers, data))
    return calls


def _file_info(node: Node) -> dict[str, Any]:
    """JsonSerializer::serializeFileInfo: the id and the path from the owner's view."""
    return {"id": node.fileid, "path": f"/{node.owner}/files/{node.path}".rstrip("/")}


def _filter_matches(event_filter: dict[str, Any], data: dict[str, Any]) -> bool:
    """A subset of PHPMongoQuery: dotted keys compared for equality, or with $regex / $in / $ne."""
    for key, expected in event_filter.items():
        value: Any = data
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(expected, dict):
            if "$regex" in expected and not (isinstance(value, str) and _php_regex(expected["$regex"]).search(value)):
                return False
            if "$in" in expected and value not in expected["$in"]:
                return False
            if "$ne" in expected and value == expected["$ne"]:
                return False
        elif value != expected:
            return False
    return True


def _php_regex(pattern: str) -> re.Pattern[str]:
    """A PCRE pattern with delimiters and flags, like ``/^\\/alice\\//i``, as a Python pattern."""
    delimiter = pattern[:1]
    end = pattern.rfind(delimiter)
    if not delimiter or delimiter.isalnum() or end <= 0:
        return re.compile(pattern)
    flags = re.IGNORECASE if "i" in pattern[end + 1:] else 0
    return re.compile(pattern[1:end], flags)
