"""Structured logs: one JSON object per line, with nothing secret in them.

Every record becomes ``{"ts", "level", "logger", "msg", ...fields}``; a call adds fields with
``log.info("request", extra={"fields": {...}})``. The formatter drops the value of any field
whose name says it holds a secret (:data:`SECRET_FIELDS`), whatever a caller passes: the
web layer never logs passwords, codes, tokens or cookies, and this is the second line of that
rule. Messages themselves come from code that logs only logins, addresses, reasons and public
session ids (see ``docs/auth.md``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, Final, TextIO

SECRET_FIELDS: Final = frozenset(
    {
        "password",
        "old_password",
        "new_password",
        "code",
        "recovery_code",
        "token",
        "csrf_token",
        "cookie",
        "secret",
        "authorization",
    }
)
_RESERVED: Final = frozenset({"ts", "level", "logger", "msg"})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                name = str(key)
                if name in _RESERVED:
                    name = f"field_{name}"
                obj[name] = "<redacted>" if name.lower() in SECRET_FIELDS else value
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


def configure(level: str, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record of the process to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
