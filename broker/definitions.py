"""Importing definitions (RabbitMQ's JSON shape), saying what was not applied.

Theory of operation
-------------------
:func:`import_definitions` walks a document's sections in dependency order
(vhosts, users, permissions, exchanges, queues, bindings) and creates what
each item describes; existing things are kept.  One bad item never stops the
import, and nothing is dropped silently: everything left out becomes a
:class:`NotApplied` entry of the :class:`ImportReport`, with a reason.  An
entry is *failed* when an item itself was not created (or only in part: a
user whose password hash cannot be used): RabbitMQ refuses such a document,
so the HTTP import answers 400.  The other entries name what this broker has
no equivalent for (runtime parameters of plugins, vhost
descriptions) or does not know (an unknown section or field): the rest of the
document is applied and the import says what it left out.

Policies come before exchanges and queues, so that a queue is declared with its
policy already resolved; operator policies and vhost limits (the ``parameters``
section) come last, so that limits never refuse the queues of the document
itself (the metadata file at boot is such a document).  Empty sections and
fields (``"policies": []``, ``"limits": {}``) leave nothing out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from protocol.names import name_problem

from .auth import Permission
from .limits import USER_LIMITS, VHOST_LIMITS, LimitError, parse_limits
from .patterns import PatternError
from .policies import PolicyError, parse_policy
from .topic_permissions import make_permission
from .vhost import VHost

log = logging.getLogger("broker.definitions")

# sections this broker applies, in the order they depend on each other
APPLIED_SECTIONS = (
    "vhosts", "users", "permissions", "topic_permissions", "policies", "exchanges", "queues", "bindings",
    "parameters",
)
# runtime parameter components applied from the parameters section
PARAMETER_COMPONENTS = ("operator_policy", "vhost-limits")
# top-level keys that describe the document, not the broker
INFO_KEYS = frozenset(
    ("rabbit_version", "rabbitmq_version", "product_name", "product_version", "product", "burrowmq_version")
)
UNSUPPORTED_SECTIONS = {
    "global_parameters": "global parameters are not supported",
}
# per section: fields applied, and fields known but not applied (with why)
ITEM_FIELDS: dict[str, frozenset[str]] = {
    "vhosts": frozenset(("name", "limits")),
    "users": frozenset(("name", "password", "password_hash", "hashing_algorithm", "tags", "limits")),
    "permissions": frozenset(("user", "vhost", "configure", "write", "read")),
    "topic_permissions": frozenset(("user", "vhost", "exchange", "write", "read")),
    "policies": frozenset(("vhost", "name", "pattern", "apply-to", "definition", "priority")),
    "parameters": frozenset(("vhost", "component", "name", "value")),
    "exchanges": frozenset(("name", "vhost", "type", "durable", "auto_delete", "internal", "arguments")),
    "queues": frozenset(("name", "vhost", "durable", "auto_delete", "arguments")),
    "bindings": frozenset(("source", "vhost", "destination", "destination_type", "routing_key", "arguments")),
}
UNSUPPORTED_FIELDS: dict[str, dict[str, str]] = {
    "vhosts": {
        "description": "vhost descriptions are not kept",
        "tags": "vhost tags are not kept",
        "metadata": "vhost metadata is not kept",
        "default_queue_type": "the only queue type is classic",
        "tracing": "tracing is not supported",
    },
    "queues": {"type": "the only queue type is classic"},
}
SUPPORTED_HASH = "rabbit_password_hashing_sha256"


@dataclass
class NotApplied:
    """One section, item or field of a definitions document that was not applied."""

    section: str
    item: str  # the item's name ("" for a whole section)
    reason: str
    field: str = ""  # set when only this field of the item was left out
    vhost: str = ""
    failed: bool = False  # the item itself was not created (or only in part)

    def as_json(self) -> dict:
        out = {"section": self.section, "item": self.item, "reason": self.reason}
        if self.field:
            out["field"] = self.field
        if self.vhost:
            out["vhost"] = self.vhost
        return out

    def __str__(self) -> str:
        what = self.section if not self.item else f"{self.section} '{self.item}'"
        if self.vhost:
            what += f" in vhost '{self.vhost}'"
        if self.field:
            what += f", field '{self.field}'"
        return _printable(f"{what}: {self.reason}")


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a name must not forge log lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass
class ImportReport:
    """What an import created (counts per section) and what it left out."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(APPLIED_SECTIONS, 0))
    not_applied: list[NotApplied] = field(default_factory=list)

    @property
    def failed(self) -> list[NotApplied]:
        return [e for e in self.not_applied if e.failed]


def _has_content(v: Any) -> bool:
    """False for values that carry nothing to apply: None, "", [], {} (also nested)."""
    if v is None:
        return False
    if isinstance(v, dict):
        return any(_has_content(x) for x in v.values())
    if isinstance(v, (list, str)):
        return bool(v)
    return True


def _label(section: str, item: dict) -> str:
    if section in ("permissions", "topic_permissions"):
        return str(item.get("user", ""))
    if section == "bindings":
        return f"{item.get('source', '')} -> {item.get('destination', '')}"
    return str(item.get("name", ""))


class _Import:
    """One run of an import into a broker."""

    def __init__(self, broker: Any, sections: tuple[str, ...]) -> None:
        self.broker = broker
        self.sections = sections
        self.report = ImportReport()

    def left_out(self, section: str, item: str, reason: str, *, field: str = "", vhost: str = "",
                 failed: bool = False) -> None:
        self.report.not_applied.append(NotApplied(section, item, reason, field, vhost, failed))

    def run(self, defs: dict) -> ImportReport:
        for key, value in defs.items():
            if key in self.sections or key in INFO_KEYS or not _has_content(value):
                continue
            if key in APPLIED_SECTIONS:
                self.left_out(key, "", "this import takes only " + ", ".join(self.sections))
                continue
            reason = UNSUPPORTED_SECTIONS.get(key)
            if reason is not None and isinstance(value, list):
                for item in value:
                    self.left_out(key, _label(key, item) if isinstance(item, dict) else "", reason,
                                  vhost=str(item.get("vhost", "")) if isinstance(item, dict) else "")
            else:
                self.left_out(key, "", reason or "unknown section")
        for section in self.sections:
            items = defs.get(section) or []
            if not isinstance(items, list):
                self.left_out(section, "", "not a list", failed=True)
                continue
            apply = getattr(self, "_" + section)
            for item in items:
                if not isinstance(item, dict):
                    self.left_out(section, "", f"not an object: {item!r:.60}", failed=True)
                    continue
                if self._fields_ok(section, item):
                    apply(item)
        return self.report

    def _fields_ok(self, section: str, item: dict) -> bool:
        """Report the fields of ``item`` that will not be applied; False if the item has no name."""
        label = _label(section, item)
        vhost = str(item.get("vhost", "")) if section != "vhosts" else ""
        name = item.get("name")
        if section in ("vhosts", "users", "exchanges", "queues") and not (isinstance(name, str) and name):
            self.left_out(section, label, "no name", vhost=vhost, failed=True)
            return False
        if section in ("vhosts", "users") and (problem := name_problem(name)):
            self.left_out(section, label, f"the name {problem}", failed=True)
            return False
        if section in ("exchanges", "queues") and (problem := name_problem(item.get("vhost", "/"))):
            self.left_out(section, label, f"the vhost name {problem}", vhost=vhost, failed=True)
            return False
        known = ITEM_FIELDS[section]
        unsupported = UNSUPPORTED_FIELDS.get(section, {})
        for key, value in item.items():
            if key in known:
                continue
            if key in ("type", "default_queue_type") and value == "classic":
                continue  # what this broker does anyway
            if key in unsupported:
                if _has_content(value):
                    self.left_out(section, label, unsupported[key], field=key, vhost=vhost)
            else:
                self.left_out(section, label, "unknown field", field=key, vhost=vhost)
        return True

    def _vhost_of(self, item: dict) -> VHost:
        """The item's vhost, created (and saved, like any vhost) if it is missing."""
        vh: VHost = self.broker.add_vhost(item.get("vhost", "/"))
        return vh

    # -- one applier per section -------------------------------------------------------------
    def _vhosts(self, v: dict) -> None:
        if v["name"] not in self.broker.vhosts:
            self.broker.add_vhost(v["name"])
            self.report.counts["vhosts"] += 1
        if _has_content(v.get("limits")):
            self._limits("vhosts", v["name"], v["limits"], VHOST_LIMITS, "limits", self.broker.vhosts[v["name"]])

    def _users(self, u: dict) -> None:
        name = u["name"]
        users = self.broker.users
        algo = u.get("hashing_algorithm", SUPPORTED_HASH)
        tags = u.get("tags", [])
        if isinstance(tags, str):
            tags = [t for t in (x.strip() for x in tags.split(",")) if t]
        if "password" in u and "password_hash" not in u:
            users.add_user(name, u["password"], tags)
        elif algo == SUPPORTED_HASH:
            users.add_user_with_hash(name, u.get("password_hash", ""), tags)
        else:
            self.left_out("users", name, f"password hashing algorithm {algo} is not supported; the user was "
                          "created without a password", field="hashing_algorithm", failed=True)
            users.add_user_with_hash(name, "", tags)
        self.report.counts["users"] += 1
        if _has_content(u.get("limits")):
            self._limits("users", name, u["limits"], USER_LIMITS, "user-limits", users.users[name])

    def _limits(self, section: str, item: str, value: Any, keys: tuple[str, ...], what: str, target: Any) -> None:
        """Vhost or user limits (``target``: a VHost or a User), or a failed entry naming why not."""
        try:
            limits = parse_limits(value, keys, what)
        except LimitError as exc:
            self.left_out(section, item, str(exc).strip().replace("\n\n", ": "), field="limits", failed=True)
            return
        if isinstance(target, VHost):
            target.set_limits(limits)
        else:
            self.broker.users.set_limits(item, limits)

    def _policies(self, p: dict) -> None:
        self._policy("policies", p, p.get("vhost", "/"), p, operator=False)

    def _policy(self, section: str, item: dict, vname: Any, body: dict, operator: bool) -> None:
        name = item.get("name")
        vh = self.broker.vhosts.get(vname)
        if vh is None:
            self.left_out(section, str(name), f"no vhost '{vname}'", vhost=str(vname), failed=True)
            return
        if not isinstance(name, str):
            self.left_out(section, "", "no name", vhost=vh.name, failed=True)
            return
        missing = [k for k in ("pattern", "definition") if k not in body]
        try:
            if missing:
                raise PolicyError(f'Key "{missing[0]}" not found in {name}')
            policy = parse_policy(vh.name, name, body, operator)
            vh.put_policy(policy, operator)
        except PolicyError as exc:
            self.left_out(section, name, str(exc).strip().replace("\n\n", ": "), vhost=vh.name, failed=True)
            return
        self.report.counts[section] += 1

    def _parameters(self, p: dict) -> None:
        component, vname, value = p.get("component"), p.get("vhost", "/"), p.get("value")
        label = str(p.get("name", ""))
        if component not in PARAMETER_COMPONENTS:
            self.left_out("parameters", label, f"runtime parameters of component '{component}' are not supported",
                          vhost=str(vname))
            return
        vh = self.broker.vhosts.get(vname)
        if vh is None:
            self.left_out("parameters", label, f"no vhost '{vname}'", vhost=str(vname), failed=True)
            return
        if component == "vhost-limits":
            self._limits("parameters", label, value, VHOST_LIMITS, "limits", vh)
            self.report.counts["parameters"] += 1
        elif not isinstance(value, dict):
            self.left_out("parameters", label, "the value of an operator policy must be an object", vhost=vh.name,
                          failed=True)
        else:
            self._policy("parameters", p, vname, value, operator=True)

    def _permissions(self, pm: dict) -> None:
        user, vhost = pm.get("user"), pm.get("vhost")
        if user not in self.broker.users.users:
            self.left_out("permissions", str(user), f"no user '{user}'", vhost=str(vhost), failed=True)
        elif vhost not in self.broker.vhosts:
            self.left_out("permissions", str(user), f"no vhost '{vhost}'", vhost=str(vhost), failed=True)
        else:
            try:
                perm = Permission(pm.get("configure", ""), pm.get("write", ""), pm.get("read", ""))
            except PatternError as exc:
                self.left_out("permissions", str(user), str(exc), vhost=str(vhost), failed=True)
                return
            self.broker.users.set_permissions(user, vhost, perm)
            self.report.counts["permissions"] += 1

    def _topic_permissions(self, tp: dict) -> None:
        user, vhost = tp.get("user"), tp.get("vhost")
        if user not in self.broker.users.users:
            self.left_out("topic_permissions", str(user), f"no user '{user}'", vhost=str(vhost), failed=True)
        elif vhost not in self.broker.vhosts:
            self.left_out("topic_permissions", str(user), f"no vhost '{vhost}'", vhost=str(vhost), failed=True)
        else:
            try:
                perm = make_permission(tp.get("exchange"), tp.get("write", ""), tp.get("read", ""))
            except PatternError as exc:
                self.left_out("topic_permissions", str(user), str(exc), vhost=str(vhost), failed=True)
                return
            self.broker.users.topics.set(user, vhost, perm)
            self.report.counts["topic_permissions"] += 1

    def _exchanges(self, x: dict) -> None:
        vh = self._vhost_of(x)
        try:
            vh.declare_exchange(
                x["name"], x.get("type", "direct"), x.get("durable", True), x.get("auto_delete", False),
                x.get("internal", False), x.get("arguments") or {},
            )
            self.report.counts["exchanges"] += 1
        except Exception as exc:
            self.left_out("exchanges", x["name"], str(exc), vhost=vh.name, failed=True)

    def _queues(self, qd: dict) -> None:
        vh = self._vhost_of(qd)
        try:
            vh.declare_queue(
                qd["name"], qd.get("durable", True), False, qd.get("auto_delete", False),
                qd.get("arguments") or {}, None,
            )
            self.report.counts["queues"] += 1
        except Exception as exc:
            self.left_out("queues", qd["name"], str(exc), vhost=vh.name, failed=True)

    def _bindings(self, b: dict) -> None:
        label = _label("bindings", b)
        vname = b.get("vhost", "/")
        vh = self.broker.vhosts.get(vname)
        if vh is None:
            self.left_out("bindings", label, f"no vhost '{vname}'", vhost=str(vname), failed=True)
            return
        dtype = b.get("destination_type", "queue")
        if dtype not in ("queue", "exchange"):
            self.left_out("bindings", label, f"destination_type must be queue or exchange, not {dtype!r}",
                          vhost=vh.name, failed=True)
            return
        src = vh.exchanges.get(b.get("source", ""))
        dest = (vh.queues if dtype == "queue" else vh.exchanges).get(b.get("destination", ""))
        if src is None or not src.name:
            self.left_out("bindings", label, f"no source exchange '{b.get('source', '')}'", vhost=vh.name,
                          failed=True)
        elif dest is None:
            self.left_out("bindings", label, f"no destination {dtype} '{b.get('destination', '')}'",
                          vhost=vh.name, failed=True)
        else:
            try:
                vh.bind(src, dest, b.get("routing_key", ""), b.get("arguments") or {})
                self.report.counts["bindings"] += 1
            except Exception as exc:
                self.left_out("bindings", label, str(exc), vhost=vh.name, failed=True)


def import_definitions(
    broker: Any, defs: dict, source: str, sections: tuple[str, ...] = APPLIED_SECTIONS
) -> ImportReport:
    """Apply ``sections`` of ``defs`` to ``broker`` (the others are reported);
    log one line per thing not applied (``source`` says where the document came
    from) and return the report."""
    report = _Import(broker, sections).run(defs)
    for entry in report.not_applied:
        log.log(logging.ERROR if entry.failed else logging.WARNING,
                "definitions from %s: not applied: %s", source, entry)
    return report
