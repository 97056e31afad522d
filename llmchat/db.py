"""What the ORM does not offer in public: an UPDATE that returns the rows it changed,
and (PostgreSQL) a row taken, its new children added and a read made, in one round trip."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

import psycopg
from django.db import connections, router, transaction
from django.db.models import ForeignKey, Model, QuerySet
from django.db.models.sql import UpdateQuery
from psycopg.pq import TransactionStatus


def update_returning[M: Model](queryset: QuerySet[M], **changes: Any) -> list[M]:
    """`queryset.update(**changes)` in one query that also reads the changed rows
    back (`UPDATE ... RETURNING`, PostgreSQL and SQLite 3.35+): the rows as model
    instances, all their fields as updated, none when nothing matched.

    Where a row must be both changed and read (taken, say), this saves the
    round trip a `get()` before or after would make. It goes through
    `QuerySet._update(returning_fields=...)`, the path Django's own `save()`
    takes for fields the database computes (llmchat/tests/test_db.py pins it on
    both databases)."""
    meta = queryset.model._meta
    values = [(meta.get_field(name), None, value) for name, value in changes.items()]
    fields = list(meta.concrete_fields)
    rows = queryset._update(values, returning_fields=fields)  # type: ignore[attr-defined]
    names = [f.attname for f in fields]
    return [queryset.model.from_db(queryset.db, names, row) for row in rows]


def can_take_and_add(using: str = "default") -> bool:
    """Whether `take_and_add` works on this database: PostgreSQL (psycopg 3)."""
    return connections[using].vendor == "postgresql"


def take_and_add[M: Model](
    queryset: QuerySet[M],
    changes: dict[str, Any],
    *,
    children: Sequence[Model],
    link: str,
    also: tuple[QuerySet[Any], dict[str, Any]] | None = None,
    then: QuerySet[Any] | None = None,
) -> tuple[M | None, list[Any]]:
    """PostgreSQL only (`can_take_and_add`). In one transaction, sent in one
    round trip (psycopg's pipeline mode: BEGIN, one or two statements and COMMIT
    sent together, one wait for their results):

    - `update_returning(queryset, **changes)` for the one row it matches (the row,
      or None when nothing matched; `queryset` must not match more, a primary key
      in its filter);
    - only if it matched, `children` inserted, their `link` foreign key set to
      that row (their primary keys set here: PostgreSQL numbers the rows of an
      INSERT ... SELECT ... ORDER BY in that order, ascending in list order); these
      two are one statement (`WITH taken AS (UPDATE ... RETURNING ...) INSERT
      ... SELECT ... FROM taken`);
    - in that statement too, only if it matched, `also`: another queryset's
      update (`(queryset, changes)`);
    - then the query `then`, if any, its rows returned ([] when nothing matched
      or without `then`). It is a statement of its own, so it sees the children,
      and a row the UPDATE had to wait for (another transaction had changed it)
      as that transaction committed it.

    An error (a unique constraint: Django's IntegrityError) rolls it all back.
    Inside a transaction (`atomic`) it runs in a savepoint instead, as `atomic`
    would. The UPDATE and `then` are Django's own compilation; only the
    INSERT's SELECT is written here, its rows one parameter whatever their
    number (_json_rows), so that the statement's text is the same from one call
    to the next and psycopg converts it once (it caches a statement's
    conversion up to 50 parameters; with a parameter per value, a turn's
    statement had 52)."""
    db = queryset._db or router.db_for_write(queryset.model)  # type: ignore[attr-defined]
    connection = connections[db]
    model = queryset.model
    meta = model._meta
    child_model = type(children[0])
    child_meta = child_model._meta

    # The UPDATE ... RETURNING, as update_returning would run it.
    returning = list(meta.concrete_fields)
    update_compiler = _update_compiler(queryset, changes, db, returning=returning)
    update_sql, update_params = update_compiler.as_sql()

    # The children, as one JSON parameter read back as rows of their table's
    # type (jsonb_populate_recordset), joined to the taken row.
    def qn(field: Any) -> str:
        return str(connection.ops.quote_name(field.column))

    link_field = child_meta.get_field(link)
    assert isinstance(link_field, ForeignKey)
    columns = [f for f in child_meta.concrete_fields if f is not link_field and not f.primary_key]
    rows = _json_rows(children, columns, connection)
    names = ", ".join(qn(f) for f in columns)
    v_names = ", ".join(f'"v".{qn(f)}' for f in columns)
    child_pk = qn(child_meta.pk)
    table = connection.ops.quote_name(child_meta.db_table)
    also_sql, also_params = "", ()
    if also is not None:
        # Django's WHERE is the UPDATE's last clause, and parenthesized when it
        # is more than one condition: the guard can follow it.
        other_sql, also_params = _update_compiler(*also, db).as_sql()
        guard = 'EXISTS (SELECT 1 FROM "taken")'
        joiner = " AND " if " WHERE " in other_sql else " WHERE "
        also_sql = f', "also" AS ({other_sql}{joiner}{guard})'
    # Identifiers quoted by the backend, SQL compiled by Django, values as parameters.
    sql = (
        f'WITH "taken" AS ({update_sql}), '  # noqa: S608
        f'"added" AS (INSERT INTO {table} ({qn(link_field)}, {names}) '
        f'SELECT "taken".{qn(meta.pk)}, {v_names} FROM "taken" '
        f"CROSS JOIN jsonb_populate_recordset(NULL::{table}, %s::jsonb) "
        f'WITH ORDINALITY AS "v" ORDER BY "v"."ordinality" '
        f"RETURNING {child_pk}){also_sql} "
        f'SELECT "taken".*, ARRAY(SELECT {child_pk} FROM "added" ORDER BY {child_pk}) '
        f'FROM "taken"'
    )
    params = (*update_params, rows, *also_params)
    read_compiler = then.query.get_compiler(db) if then is not None else None
    read_sql, read_params = read_compiler.as_sql() if read_compiler else ("", ())

    read: list[Any] = []
    with connection.cursor() as taking, connection.cursor() as reading:
        if connection.in_atomic_block:  # a savepoint, as atomic() would make
            with transaction.atomic(using=db), _pipeline(connection) as sync:
                taking.execute(sql, params)
                if read_sql:
                    reading.execute(read_sql, read_params)
                sync()
                taken = taking.fetchall()
                if read_sql:
                    read = reading.fetchall()
        else:
            raw = connection.connection
            try:
                with _pipeline(connection) as sync:
                    raw.execute("BEGIN")
                    taking.execute(sql, params)
                    if read_sql:
                        reading.execute(read_sql, read_params)
                    raw.execute("COMMIT")
                    sync()
                    taken = taking.fetchall()
                    if read_sql:
                        read = reading.fetchall()
            except BaseException:
                _roll_back(connection)
                raise
    if not taken:
        return None, []
    [row] = taken
    cols = [f.get_col(meta.db_table) for f in returning]
    converters = update_compiler.get_converters(cols)
    fields = list(row[: len(returning)])
    if converters:
        [fields] = update_compiler.apply_converters([fields], converters)
    instance = model.from_db(db, [f.attname for f in returning], fields)
    ids = row[len(returning)]
    for child, pk in zip(children, ids, strict=True):
        child.pk = pk
        setattr(child, link_field.attname, instance.pk)
        child._state.adding = False
        child._state.db = db
    if read_compiler is None:
        return instance, []
    return instance, list(read_compiler.results_iter(results=[read]))


def _update_compiler(
    queryset: QuerySet[Any], changes: dict[str, Any], db: str, *, returning: list[Any] | None = None
) -> Any:
    """The compiler of `queryset.update(**changes)` (RETURNING `returning`), as
    QuerySet._update prepares it, to be compiled into a larger statement."""
    meta = queryset.model._meta
    update = cast(UpdateQuery, queryset.query.chain(UpdateQuery))
    values: list[Any] = [(meta.get_field(name), None, v) for name, v in changes.items()]
    update.add_update_fields(values)
    update.annotations = {}
    compiler = update.get_compiler(db)
    compiler.returning_fields = returning
    return compiler


@contextmanager
def _pipeline(connection: Any) -> Iterator[Callable[[], None]]:
    """psycopg's pipeline mode on a Django connection: the statements executed in
    the block are sent together, and `sync()` waits for all their results. An
    error in the block (the first statement's that failed; a broken connection)
    is raised as Django's (IntegrityError, OperationalError...), which also
    tells Django that the connection may be unusable. Syncing explicitly, not on
    leaving the block, keeps psycopg from logging a warning when a statement
    fails."""
    with connection.wrap_database_errors, connection.connection.pipeline() as pipeline:
        yield pipeline.sync


def _roll_back(connection: Any) -> None:
    """End the transaction take_and_add began, after an error: a failed statement
    leaves it open (and aborted). A broken connection has none to end; one that
    breaks now is left to Django, which closes an unusable connection."""
    raw = connection.connection
    if raw.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        with suppress(psycopg.Error):
            raw.execute("ROLLBACK")


def _json_rows(children: Sequence[Model], columns: list[Any], connection: Any) -> str:
    """The children's rows as a JSON array of objects (column: value), each value
    as the ORM would save it, for jsonb_populate_recordset to read into the
    columns' own types: a character value too long fails in the INSERT, as the
    ORM's would. Dates and numbers go as the text PostgreSQL reads them from.
    Values JSON cannot carry (bytes, durations, a JSONField's) are refused here
    (TypeError): no field of the models it serves has them."""
    rows = [
        {
            f.column: f.get_db_prep_save(f.pre_save(child, add=True), connection=connection)
            for f in columns
        }
        for child in children
    ]
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False, default=_json_text)


def _json_text(value: Any) -> str:
    """A value JSON has no type for, as the text PostgreSQL reads it from."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot go in take_and_add's rows")
