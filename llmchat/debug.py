"""What error reports show: Django's DEBUG page and the reports of errors logged."""

from __future__ import annotations

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, on with DEBUG too. Variables and POST fields marked
    sensitive (API keys, request bodies) are hidden from the DEBUG page as from
    production reports: a developer's error page gets pasted into issues."""

    def is_active(self, request: HttpRequest | None) -> bool:
        return True
