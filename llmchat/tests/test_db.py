"""The pool's health check (llmchat/db.py), on a real PostgreSQL pool."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from llmchat import db

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's")
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    pool = ConnectionPool(
        kwargs={**params, "autocommit": True},
        min_size=1,
        max_size=1,
        check=db.check_if_idle,
        reset=db.note_return,
        open=True,
    )
    try:
        yield pool
    finally:
        pool.close()


def _last_query(pid: int) -> str:
    with psycopg.connect(**_admin_params()) as admin:
        row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    assert row is not None
    return str(row[0])


def _admin_params() -> dict[str, Any]:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    return params


def test_a_connection_back_a_moment_ago_is_reused_without_a_round_trip(
    pool: ConnectionPool,
) -> None:
    with pool.connection() as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT 1 AS marked")
    with pool.connection() as conn:
        assert conn.info.backend_pid == pid
        # No check ran: the server's last query on it is still ours.
        assert _last_query(pid) == "SELECT 1 AS marked"


def test_an_idle_connection_is_checked_and_a_dead_one_replaced(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pool.connection() as conn:
        pid = conn.info.backend_pid
        conn.execute("SELECT 1 AS marked")
    monkeypatch.setattr(db, "IDLE_CHECK_SECONDS", 0.0)  # as if it sat idle
    with pool.connection() as conn:
        assert conn.info.backend_pid == pid
        assert _last_query(pid) == ""  # the check's empty query
    with psycopg.connect(**_admin_params(), autocommit=True) as admin:
        # Waits (up to 5 s) until the server process is gone.
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    with pool.connection() as conn:  # the check finds it dead: a new one instead
        assert conn.info.backend_pid != pid
        assert conn.execute("SELECT 2").fetchone() == (2,)
