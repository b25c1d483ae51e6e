"""The states of an AMQP connection and the transitions allowed between them.

Theory of operation
-------------------
The happy path is ``header`` (waiting for the 8-byte protocol header) ->
``start`` (Connection.Start sent, waiting for StartOk) -> ``tune`` (Tune sent,
waiting for TuneOk) -> ``open`` (waiting for Connection.Open) -> ``opened``
(channels work) -> ``closing`` (we sent Connection.Close and wait for CloseOk;
everything else is discarded) -> ``closed`` (the socket is closed or gone).

A login refusal that the login throttle delays goes ``start`` -> ``refusing``
(nothing is read; frames already received are ignored) -> ``closing`` or
``closed``.  A wrong protocol header goes ``header`` -> ``closed``.  Any state
may end in ``closed`` (the peer went away, a timeout); once the handshake has
begun any state but ``header`` may go to ``closing``.  ``closed`` is final.

:data:`TRANSITIONS` is the one table of what may follow what;
:func:`check_transition` refuses anything else with :class:`IllegalTransition`,
which is a bug in the broker, not something a peer can cause.  The values are
the strings the management API has always shown, so ``conn.state == "opened"``
keeps working.
"""

from __future__ import annotations

from enum import StrEnum


class ConnState(StrEnum):
    """Where an AMQP connection is in its life."""

    HEADER = "header"
    START = "start"
    REFUSING = "refusing"
    TUNE = "tune"
    OPEN = "open"
    OPENED = "opened"
    CLOSING = "closing"
    CLOSED = "closed"


S = ConnState
TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    S.HEADER: frozenset({S.START, S.CLOSED}),
    S.START: frozenset({S.TUNE, S.REFUSING, S.CLOSING, S.CLOSED}),
    S.REFUSING: frozenset({S.CLOSING, S.CLOSED}),
    S.TUNE: frozenset({S.OPEN, S.CLOSING, S.CLOSED}),
    S.OPEN: frozenset({S.OPENED, S.CLOSING, S.CLOSED}),
    S.OPENED: frozenset({S.CLOSING, S.CLOSED}),
    S.CLOSING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}

# while in these, input frames are only looked at for Connection.Close / CloseOk
DISCARDING = (S.CLOSING, S.CLOSED)
# a handshake timeout does not apply any more
HANDSHAKE_OVER = (S.OPENED, S.CLOSING, S.CLOSED)


class IllegalTransition(RuntimeError):
    """The broker tried to move a connection to a state that may not follow its current one."""


def check_transition(current: ConnState, to: ConnState) -> ConnState:
    """``to`` if it may follow ``current``; otherwise raise :class:`IllegalTransition`."""
    if to not in TRANSITIONS[current]:
        raise IllegalTransition(f"connection state {current} cannot go to {to}")
    return to
