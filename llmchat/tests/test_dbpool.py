"""llmchat.dbpool: the pool checks a connection with a round trip only when it is
suspect, and never lends one the server has closed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from llmchat import dbpool


@pytest.fixture
def postgresql() -> dict[str, Any]:
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's")
    params = connection.get_connection_params()
    params.pop("pool", None)
    return params


@pytest.fixture
def round_trips(monkeypatch: Any) -> list[Any]:
    checked: list[Any] = []
    real = ConnectionPool.check_connection

    def counted(conn: Any) -> None:
        checked.append(conn)
        real(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    return checked


def test_a_quiet_connection_checked_a_moment_ago_is_lent_without_a_round_trip(
    postgresql: dict[str, Any], round_trips: list[Any], monkeypatch: Any
) -> None:
    with psycopg.connect(**postgresql, autocommit=True) as conn:
        dbpool.check_connection(conn)  # never checked: a round trip
        dbpool.check_connection(conn)
        dbpool.check_connection(conn)
        assert len(round_trips) == 1
        monkeypatch.setattr(dbpool, "FULL_CHECK_SECONDS", 0)  # checked too long ago
        dbpool.check_connection(conn)
        assert len(round_trips) == 2


@pytest.mark.django_db
def test_a_connection_the_server_closed_is_not_lent(
    postgresql: dict[str, Any], round_trips: list[Any]
) -> None:
    with (
        psycopg.connect(**postgresql, autocommit=True) as conn,
        psycopg.connect(**postgresql, autocommit=True) as admin,
    ):
        dbpool.check_connection(conn)
        admin.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
        _wait_readable(conn)
        with pytest.raises(psycopg.OperationalError):
            dbpool.check_connection(conn)  # its socket has the news: checked, and failed
        assert len(round_trips) == 2


@pytest.mark.django_db(transaction=True)
def test_the_app_s_pool_replaces_a_connection_whose_backend_was_terminated(
    postgresql: dict[str, Any],
) -> None:
    pool = connection.pool  # type: ignore[attr-defined]
    assert pool is not None
    assert pool._check is dbpool.check_connection  # from settings
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    connection.close()  # back to the pool, and checked a moment ago
    with psycopg.connect(**postgresql, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    for conn in list(pool._pool):
        if conn.info.backend_pid == pid:
            _wait_readable(conn)
    with connection.cursor() as cursor:  # a fresh connection, not the dead one
        cursor.execute("SELECT pg_backend_pid()")
        (other,) = cursor.fetchone()
    assert other != pid
    connection.close()


def _wait_readable(conn: Any) -> None:
    import select

    poll = select.poll()
    poll.register(conn.pgconn.socket, select.POLLIN)
    assert poll.poll(5000), "the server's closing never arrived"
