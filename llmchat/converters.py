"""Path converters. Importing this module registers them (once: Python imports
a module once), so every urls.py that uses one imports it."""

from __future__ import annotations

from django.urls import register_converter

from llmchat.api import MAX_ID


class IdConverter:
    """`<id:pk>`: an object's id, 1 to MAX_ID. A larger number is no row's id, so
    the path matches nothing (a 404) instead of overflowing the database driver."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= MAX_ID:
            raise ValueError(value)  # the URL resolver takes it as no match
        return number

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")
