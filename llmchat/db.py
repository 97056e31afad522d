"""What the ORM does not offer in public: an UPDATE that returns the rows it changed."""

from __future__ import annotations

from typing import Any

from django.db.models import Model, QuerySet


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
