"""Structured logs: one JSON object per line on stdout, each with the request id."""

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

# Set by RequestLogMiddleware for the duration of a request; a ContextVar so that
# concurrent async requests (and threads started by sync_to_async) keep theirs.
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

# LogRecord attributes that are not "extra" fields passed by the caller.
_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", request_id_var.get()),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
