"""How the PostgreSQL connection pool checks a connection before lending it.

Django's default with `CONN_HEALTH_CHECKS` is psycopg's `check_connection`: an
empty query, a round trip to the server, on every loan. A chat turn borrows a
connection three or four times (the request, the checkpoints, the final save),
and the request's check was one of the nine round trips before the provider's
first token (docs/performance.md).
"""

from __future__ import annotations

import math
import select
import time
import weakref
from typing import Any

from psycopg_pool import ConnectionPool

FULL_CHECK_SECONDS = 10.0

# When each pooled connection last passed a check with a round trip.
_checked: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def check_connection(conn: Any) -> None:
    """Raise if `conn` is unfit to lend; the pool then opens another.

    The round trip (psycopg's own check) is made only when the connection is
    suspect: when something waits to be read on its socket (the server closed
    it — a restart, a terminated backend — or sent something unasked), or when
    its last round-trip check is more than FULL_CHECK_SECONDS old (a connection
    that a network dropped without a word shows nothing on its socket). A quiet
    connection checked a moment ago is lent as it is."""
    now = time.monotonic()
    if (
        not conn.closed
        and now - _checked.get(conn, -math.inf) < FULL_CHECK_SECONDS
        and not _readable(conn.pgconn.socket)
    ):
        return
    ConnectionPool.check_connection(conn)
    _checked[conn] = now


def _readable(fd: int) -> bool:
    poll = select.poll()  # not select(): its descriptors stop at 1024
    poll.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poll.poll(0))
