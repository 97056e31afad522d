"""The PostgreSQL pool's health check, only for connections that sat idle.

Django's CONN_HEALTH_CHECKS checks a connection before a request reuses it. With
the pool, Django checks at every checkout instead (an empty query, one round trip),
and a chat turn checks out a connection three or more times: for its request, for
each checkpoint of a long reply and for saving the reply. A connection that went
back to the pool a moment ago, working, is checked only once it has been idle for
IDLE_CHECK_SECONDS; that keeps Django's promise (a request does not start on a
connection that died while idle) without a round trip on every step of a turn.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from psycopg_pool import ConnectionPool

IDLE_CHECK_SECONDS = 1.0
_RETURNED_AT = "_llmchat_returned_at"


def note_return(conn: Any) -> None:
    """The pool's `reset` callback: runs when a working connection comes back."""
    setattr(conn, _RETURNED_AT, monotonic())


def check_if_idle(conn: Any) -> None:
    """The pool's `check` callback: raises if a connection idle for a while broke."""
    returned_at = getattr(conn, _RETURNED_AT, None)
    if returned_at is not None and monotonic() - returned_at < IDLE_CHECK_SECONDS:
        return
    ConnectionPool.check_connection(conn)
