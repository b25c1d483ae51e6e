"""Queue and consumer arguments: RabbitMQ's checks and texts (406 PRECONDITION_FAILED)."""

from __future__ import annotations

from typing import Any

from protocol import errors
from protocol.errors import ChannelError
from protocol.names import name_problem

from ..exchange import field_type_name

OVERFLOW_VALUES = ("drop-head", "reject-publish", "reject-publish-dlx")


def int_arg(args: dict, key: str) -> int | None:
    """An integer argument, or None if absent or not an integer."""
    v = args.get(key)
    if v is None or isinstance(v, bool) or not isinstance(v, int):
        return None
    return v


def str_arg(args: dict, key: str, default: str | None = None) -> str | None:
    """A string argument (sent as a long string or bytes)."""
    v = args.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


_INT_ARGS_MIN = {
    "x-message-ttl": 0,
    "x-expires": 1,
    "x-max-length": 0,
    "x-max-length-bytes": 0,
    "x-max-priority": 0,
    "x-consumer-timeout": 0,
}


def validate_queue_arguments(args: dict, what: str) -> None:
    """RabbitMQ's checks of queue arguments (406 PRECONDITION_FAILED, RabbitMQ's texts)."""

    def bad(key: str, detail: str) -> ChannelError:
        return ChannelError(errors.PRECONDITION_FAILED, f"invalid arg '{key}' for {what}: {detail}")

    for key, lo in _INT_ARGS_MIN.items():
        if key not in args:
            continue
        v = args[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad(key, f'"expected integer, got {_erl_type(v)}"')
        if v < lo:
            if lo == 1 and v == 0:
                raise bad(key, f"{{value_zero,{v}}}")
            raise bad(key, f"{{value_negative,{v}}}")
    if "x-max-priority" in args and args["x-max-priority"] > 255:
        raise bad("x-max-priority", f"{{max_value_exceeded,{args['x-max-priority']}}}")
    if "x-overflow" in args:
        v = args["x-overflow"]
        v = v.decode() if isinstance(v, bytes) else v
        if v not in OVERFLOW_VALUES:
            raise bad("x-overflow", "invalid_overflow")
    if "x-single-active-consumer" in args and not isinstance(args["x-single-active-consumer"], bool):
        raise bad("x-single-active-consumer", f"{{unacceptable_type,{_erl_type(args['x-single-active-consumer'])}}}")
    for key in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
        if key not in args:
            continue
        v = args[key]
        if not isinstance(v, (str, bytes)):
            raise ChannelError(errors.PRECONDITION_FAILED, f"invalid type '{_erl_type(v)}' for arg '{key}' in {what}")
        if problem := name_problem(v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v):
            raise bad(key, f"the name {problem}")
    if "x-dead-letter-routing-key" in args and "x-dead-letter-exchange" not in args:
        raise bad("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")


def validate_consumer_arguments(args: dict, what: str) -> None:
    """RabbitMQ's check of Basic.Consume arguments (x-priority, x-consumer-timeout)."""
    for key in ("x-priority", "x-consumer-timeout"):
        if key not in args:
            continue
        v = args[key]
        if isinstance(v, bool) or not isinstance(v, int):
            detail = f'"expected integer, got {_erl_type(v)}"'
            raise ChannelError(errors.PRECONDITION_FAILED, f"invalid arg '{key}' for {what}: {detail}")
        if key == "x-consumer-timeout" and v < 0:
            raise ChannelError(errors.PRECONDITION_FAILED, f"invalid arg '{key}' for {what}: {{value_negative,{v}}}")


def _erl_type(v: Any) -> str:
    return field_type_name(v)
