"""Exchanges: one class per type, each answering ``match(routing_key, msg)``.

A binding is ``(source exchange, destination, routing key, arguments)``; the
destination is a queue or (exchange-to-exchange bindings) another exchange.
Each type keeps the index that makes its match cheap: a dict per routing key
(direct), a set (fanout), a trie of words with a result cache (topic) and a
list of argument tables (headers).
"""

from __future__ import annotations

import datetime
from collections.abc import Collection
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import Message


def freeze(value: Any) -> Any:
    """A hashable, order-independent form of an AMQP field value."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("__array__",) + tuple(freeze(v) for v in value)
    if isinstance(value, (bytearray, memoryview)):
        return ("bytes", bytes(value))
    if isinstance(value, (str, bytes, int, float, bool, Decimal, datetime.datetime)) or value is None:
        return (type(value).__name__, value)
    return repr(value)


class Binding:
    """One binding; ``key`` identifies it for unbind."""

    __slots__ = ("source", "destination", "routing_key", "arguments", "key")

    def __init__(self, source: "Exchange", destination: Any, routing_key: str, arguments: dict) -> None:
        self.source = source
        self.destination = destination
        self.routing_key = routing_key
        self.arguments = arguments or {}
        self.key = (destination, routing_key, freeze(self.arguments))


class Exchange:
    """Base exchange: name, flags, arguments and its bindings as a source."""

    type_name = ""
    delays = False  # holds messages until their x-delay is over (broker.delayed)

    def __init__(
        self,
        vhost: Any,
        name: str,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict | None = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments or {}
        # the policy and operator policy that match this exchange (broker.policies)
        self.policy: Any = None
        self.operator_policy: Any = None
        self.alternate: str | None = None
        self._set_alternate()
        self.bindings: dict[tuple, Binding] = {}
        # bindings where this exchange is the destination (e2e)
        self.incoming: dict[tuple, Binding] = {}
        self.exchange_dests = 0

    def _set_alternate(self) -> None:
        # the argument wins over the policy's alternate-exchange (RabbitMQ's get_arg)
        ae = self.arguments.get("alternate-exchange")
        if ae is None and self.policy is not None:
            ae = self.policy.definition.get("alternate-exchange")
        self.alternate = ae.decode() if isinstance(ae, bytes) else ae

    def apply_policies(self, policy: Any, operator_policy: Any) -> None:
        """The policies that match this exchange changed (``PolicyRef`` or None each)."""
        self.policy, self.operator_policy = policy, operator_policy
        self._set_alternate()

    # -- bindings ------------------------------------------------------------
    def add_binding(self, b: Binding) -> bool:
        if b.key in self.bindings:
            return False
        self.bindings[b.key] = b
        if isinstance(b.destination, Exchange):
            self.exchange_dests += 1
        self._index_add(b)
        return True

    def remove_binding(self, b: Binding) -> bool:
        found = self.bindings.pop(b.key, None)
        if found is None:
            return False
        if isinstance(found.destination, Exchange):
            self.exchange_dests -= 1
        self._index_remove(found)
        return True

    def _index_add(self, b: Binding) -> None:
        raise NotImplementedError

    def _index_remove(self, b: Binding) -> None:
        raise NotImplementedError

    def match(self, routing_key: str, msg: "Message | None") -> Collection[Any]:
        raise NotImplementedError

    def info(self) -> dict:
        """Type-specific fields of the management API's exchange JSON."""
        return {}

    def describe(self) -> dict:
        return {
            "name": self.name,
            "type": self.type_name,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "internal": self.internal,
            "arguments": self.arguments,
        }


def _count_add(d: dict, k: Any) -> None:
    d[k] = d.get(k, 0) + 1


def _count_remove(d: dict, k: Any) -> None:
    n = d.get(k, 0) - 1
    if n <= 0:
        d.pop(k, None)
    else:
        d[k] = n


class DirectExchange(Exchange):
    type_name = "direct"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.routes: dict[str, dict[Any, int]] = {}

    def _index_add(self, b: Binding) -> None:
        _count_add(self.routes.setdefault(b.routing_key, {}), b.destination)

    def _index_remove(self, b: Binding) -> None:
        d = self.routes.get(b.routing_key)
        if d is not None:
            _count_remove(d, b.destination)
            if not d:
                del self.routes[b.routing_key]

    def match(self, routing_key: str, msg: "Message | None") -> Collection[Any]:
        return self.routes.get(routing_key, ())


class DefaultExchange(Exchange):
    """The nameless direct exchange every queue is implicitly bound to by name."""

    type_name = "direct"

    def _index_add(self, b: Binding) -> None:
        raise AssertionError("the default exchange takes no explicit bindings")

    def _index_remove(self, b: Binding) -> None:  # pragma: no cover
        pass

    def match(self, routing_key: str, msg: "Message | None") -> Collection[Any]:
        q = self.vhost.queues.get(routing_key)
        return (q,) if q is not None else ()


class FanoutExchange(Exchange):
    type_name = "fanout"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.dests: dict[Any, int] = {}

    def _index_add(self, b: Binding) -> None:
        _count_add(self.dests, b.destination)

    def _index_remove(self, b: Binding) -> None:
        _count_remove(self.dests, b.destination)

    def match(self, routing_key: str, msg: "Message | None") -> Collection[Any]:
        return self.dests


class _TrieNode:
    __slots__ = ("children", "dests")

    def __init__(self) -> None:
        self.children: dict[str, _TrieNode] = {}
        self.dests: dict[Any, int] = {}


def topic_words(key: str) -> list[str]:
    """RabbitMQ's split: the empty key has no words; empty words count."""
    return key.split(".") if key else []


def _trie_path(binding_key: str) -> list[str]:
    """The words of a binding key as the trie stores them: ``#.#`` matches what ``#`` does, so
    a run of ``#`` is one ``#`` (``#.#.#.#.z`` walks like ``#.z``)."""
    path: list[str] = []
    for w in topic_words(binding_key):
        if w != "#" or not path or path[-1] != "#":
            path.append(w)
    return path


class TopicExchange(Exchange):
    """Topic routing on a trie of binding-key words (``*`` one word, ``#`` zero or more).

    ``match`` walks the trie along the routing key's words.  A ``#`` node may
    absorb any number of words, so without care the walk branches at every
    ``#`` and a key like ``#.#.#.#.#.#.#.#.z`` costs time exponential in the
    number of ``#`` s.  The walk therefore remembers, per ``#`` node, the lowest
    word index it has entered that node at: entering it at index i walks the
    node at every index from i to the end, so a later entry at a higher index
    has nothing new to find.  Each (node, word index) pair is then visited at
    most once: polynomial in the key's words and the bindings (and a run of
    ``#`` is stored as one ``#`` node, see ``_trie_path``).  Answers are
    cached per routing key; the cache is emptied on any binding change and
    when it holds CACHE_MAX keys, so unique routing keys cannot grow it
    without bound."""

    type_name = "topic"
    CACHE_MAX = 4096

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.root = _TrieNode()
        self.cache: dict[str, tuple] = {}

    def _index_add(self, b: Binding) -> None:
        node = self.root
        for w in _trie_path(b.routing_key):
            nxt = node.children.get(w)
            if nxt is None:
                nxt = node.children[w] = _TrieNode()
            node = nxt
        _count_add(node.dests, b.destination)
        self.cache.clear()

    def _index_remove(self, b: Binding) -> None:
        path = [self.root]
        words = _trie_path(b.routing_key)
        for w in words:
            nxt = path[-1].children.get(w)
            if nxt is None:
                return
            path.append(nxt)
        _count_remove(path[-1].dests, b.destination)
        # prune empty nodes
        for i in range(len(words), 0, -1):
            node = path[i]
            if node.dests or node.children:
                break
            del path[i - 1].children[words[i - 1]]
        self.cache.clear()

    def match(self, routing_key: str, msg: "Message | None") -> Collection[Any]:
        hit = self.cache.get(routing_key)
        if hit is not None:
            return hit
        out: set[Any] = set()
        words = topic_words(routing_key)
        self._walk(self.root, words, 0, len(words), out, {})
        result = tuple(out)
        if len(self.cache) >= self.CACHE_MAX:
            self.cache.clear()
        self.cache[routing_key] = result
        return result

    def _walk(self, node: _TrieNode, words: list[str], i: int, n: int, out: set, hash_from: dict) -> None:
        """Collect the destinations below ``node`` that match ``words[i:]``.

        ``hash_from`` maps each ``#`` node walked so far to the lowest word
        index it was entered at (see the class docstring)."""
        children = node.children
        h = children.get("#")
        if i == n:
            if node.dests:
                out.update(node.dests)
            if h is not None and hash_from.get(h, n + 1) > n:
                hash_from[h] = n
                self._walk(h, words, n, n, out, hash_from)
            return
        w = words[i]
        if w != "#":  # a literal '#' word is one of the words the '#' child absorbs below
            c = children.get(w)
            if c is not None:
                self._walk(c, words, i + 1, n, out, hash_from)
        if w != "*":
            c = children.get("*")
            if c is not None:
                self._walk(c, words, i + 1, n, out, hash_from)
        if h is not None:
            walked_from = hash_from.get(h, n + 1)
            if i < walked_from:
                hash_from[h] = i
                for j in range(i, walked_from):
                    self._walk(h, words, j, n, out, hash_from)


def field_type_name(v: Any) -> str:
    """RabbitMQ's name of a field value's AMQP type (as a client like pika encodes it)."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "signedint" if -(2**31) <= v < 2**31 else "long"
    if isinstance(v, (str, bytes)):
        return "longstr"
    if isinstance(v, float):
        return "double"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, (list, tuple)):
        return "array"
    if v is None:
        return "void"
    return type(v).__name__


_VOID = object()


class HeadersExchange(Exchange):
    """Matches on message headers: x-match all / any / all-with-x / any-with-x."""

    type_name = "headers"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.entries: dict[tuple, Binding] = {}

    def _index_add(self, b: Binding) -> None:
        self.entries[b.key] = b

    def _index_remove(self, b: Binding) -> None:
        self.entries.pop(b.key, None)

    def match(self, routing_key: str, msg: "Message | None") -> Collection[Any]:
        if not self.entries:
            return ()
        headers: dict = {}
        if msg is not None:
            headers = msg.properties.headers or {}
        out: dict[Any, None] = {}
        for b in self.entries.values():
            if b.destination not in out and headers_match(b.arguments, headers):
                out[b.destination] = None
        return out


def headers_match(args: dict, headers: dict) -> bool:
    mode = args.get("x-match", "all")
    if isinstance(mode, bytes):
        mode = mode.decode("utf-8", "replace")
    with_x = mode.endswith("-with-x")
    want_any = mode.startswith("any")
    for k, v in args.items():
        if k == "x-match" or (not with_x and k.startswith("x-")):
            continue
        hv = headers.get(k, _VOID)
        ok = hv is not _VOID and (v is None or (hv == v and _same_type(hv, v)))
        if want_any and ok:
            return True
        if not want_any and not ok:
            return False
    return not want_any


def _same_type(a: Any, b: Any) -> bool:
    """RabbitMQ compares field types too: True is not 1, Decimal(1) is not 1."""
    ta, tb = type(a), type(b)
    if ta is tb:
        return True
    text = (str, bytes, bytearray)
    return isinstance(a, text) and isinstance(b, text)


X_MATCH_VALUES = ("all", "any", "all-with-x", "any-with-x")


def validate_headers_binding(args: dict) -> str | None:
    """RabbitMQ's check of a headers binding: an error text, or None."""
    if "x-match" not in args:
        return None
    v = args["x-match"]
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str):
        return f"Invalid x-match field type {field_type_name(v)} (value {v}); expected longstr"
    if v in X_MATCH_VALUES:
        return None
    return f'Invalid x-match field value <<"{v}">>; expected all, any, all-with-x, or any-with-x'


EXCHANGE_TYPES: dict[str, type[Exchange]] = {
    "direct": DirectExchange,
    "fanout": FanoutExchange,
    "topic": TopicExchange,
    "headers": HeadersExchange,
}
