"""Resource subscriptions of one shared server, reference-counted across the sessions and the
2026-07-28 listen streams that hold them (the server is subscribed once per uri, and unsubscribed
when the last holder lets go), and the listen streams themselves: what each asked to hear."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mcpmesh.backend.upstream import Upstream
from mcpmesh.errors import InvalidParams, MethodNotFound
from mcpmesh.jsonrpc import Message, RequestId, error, params_of, result
from mcpmesh.protocol.envelope import META_SUBSCRIPTION_ID
from mcpmesh.router.outbox import Outbox

LIST_CHANGED_FILTERS = {
    "toolsListChanged": "tools",
    "promptsListChanged": "prompts",
    "resourcesListChanged": "resources",
}

BackgroundCall = Callable[[Upstream, str, dict[str, Any]], None]  # a request nothing waits for


class Subscriber(Protocol):
    """Who can hold resource subscriptions: a session, or a 2026 listen stream."""

    subscriptions: set[str]

    def notify(self, msg: Message) -> None: ...


class Listener:
    """One 2026-07-28 `subscriptions/listen` stream: what it asked for, and its outbox."""

    def __init__(self, subscription_id: RequestId):
        self.subscription_id = subscription_id
        self.methods: set[str] = set()  # the list_changed notifications it opted in to
        self.subscriptions: set[str] = set()
        self.outbox = Outbox()

    def notify(self, msg: Message) -> None:
        """Deliver a copy tagged with this stream's subscription id (the message is shared)."""
        params = dict(params_of(msg))
        params["_meta"] = {**(params.get("_meta") or {}), META_SUBSCRIPTION_ID: self.subscription_id}
        self.outbox.put({**msg, "params": params})


class Subscriptions:
    def __init__(self, request_timeout: float, background_call: BackgroundCall):
        self.request_timeout = request_timeout
        self.background_call = background_call
        self.by_uri: dict[str, set[Subscriber]] = {}
        self.listeners: set[Listener] = set()

    def holders(self, uri: str) -> set[Subscriber]:
        return self.by_uri.get(uri, set())

    async def request(self, subscriber: Subscriber, msg: Message, upstream: Upstream) -> Message:
        """A client's resources/subscribe or resources/unsubscribe, answered."""
        request_id, uri = msg["id"], params_of(msg).get("uri")
        if not isinstance(uri, str):
            return error(request_id, InvalidParams.code, "Invalid params: uri must be a string")
        if upstream.era == "modern":
            text = "resource subscriptions to 2026-07-28 servers are not bridged yet"
            return error(request_id, MethodNotFound.code, text)
        if msg["method"] == "resources/unsubscribe":
            self.unsubscribe(subscriber, uri, upstream)
            return result(request_id, {})
        refused = await self.subscribe(subscriber, uri, upstream)
        if refused is not None:
            return {"jsonrpc": "2.0", "id": request_id, "error": refused}
        return result(request_id, {})

    async def subscribe(self, subscriber: Subscriber, uri: str, upstream: Upstream) -> Any:
        """Count one more subscriber of uri; the first one subscribes the server. The server's
        error, if it refused, else None."""
        holders = self.by_uri.get(uri)
        if holders is None:
            holders = self.by_uri[uri] = set()
            reply = await upstream.call("resources/subscribe", {"uri": uri}, self.request_timeout)
            if "error" in reply:
                if not holders:
                    self.by_uri.pop(uri, None)
                return reply["error"]
        holders.add(subscriber)
        subscriber.subscriptions.add(uri)
        return None

    def unsubscribe(self, subscriber: Subscriber, uri: str, upstream: Upstream | None) -> None:
        subscriber.subscriptions.discard(uri)
        holders = self.by_uri.get(uri)
        if holders is None or subscriber not in holders:
            return
        holders.discard(subscriber)
        if not holders:
            del self.by_uri[uri]
            if upstream is not None and upstream.era == "legacy":
                self.background_call(upstream, "resources/unsubscribe", {"uri": uri})

    def drop(self, subscriber: Subscriber, upstream: Upstream | None) -> None:
        """Everything this subscriber held (its session or stream ended)."""
        for uri in list(subscriber.subscriptions):
            self.unsubscribe(subscriber, uri, upstream)

    def renew(self, upstream: Upstream) -> None:
        """A new process: subscribe it to every uri someone still holds."""
        for uri in self.by_uri:
            self.background_call(upstream, "resources/subscribe", {"uri": uri})

    # -- 2026-07-28 subscriptions/listen ------------------------------------------------------
    async def listen(self, listener: Listener, wanted: dict[str, Any], upstream: Upstream) -> dict[str, Any]:
        """Register a listen stream; return the subset of `wanted` that will be honoured."""
        honoured: dict[str, Any] = {}
        if upstream.era != "legacy":
            return honoured  # a 2026 server's own listen stream is not bridged yet
        caps = upstream.capabilities
        for key, capability in LIST_CHANGED_FILTERS.items():
            if wanted.get(key) is True and capability in caps:
                honoured[key] = True
                listener.methods.add(f"notifications/{capability}/list_changed")
        uris = wanted.get("resourceSubscriptions")
        resources = caps.get("resources")
        if isinstance(uris, list) and isinstance(resources, dict) and resources.get("subscribe"):
            taken = [uri for uri in dict.fromkeys(uris) if isinstance(uri, str)]
            honoured["resourceSubscriptions"] = [
                u for u in taken if await self.subscribe(listener, u, upstream) is None
            ]
        self.listeners.add(listener)
        return honoured

    def notify_listeners(self, msg: Message) -> None:
        """A list_changed notification, to every stream that opted in to it."""
        for listener in self.listeners:
            if msg["method"] in listener.methods:
                listener.notify(msg)

    def unlisten(self, listener: Listener, upstream: Upstream | None) -> None:
        self.listeners.discard(listener)
        self.drop(listener, upstream)

    def end_listeners(self, upstream: Upstream | None) -> None:
        """End every listen stream gracefully: a `complete` result to its listen request."""
        for listener in list(self.listeners):
            listener.outbox.finish(result(listener.subscription_id, {"resultType": "complete"}))
            self.unlisten(listener, upstream)
