"""Structured logs: one JSON object (or one readable line) per event."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping

# Attributes every LogRecord has; anything else came in through `extra=` and is data.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


def json_line(
    created: float, level: str, logger: str, msg: str, fields: Mapping[str, object]
) -> str:
    """One event as a JSON object: `ts`, `level`, `logger`, `msg`, then its fields."""
    document: dict[str, object] = {
        "ts": round(created, 6),
        "level": level,
        "logger": logger,
        "msg": msg,
    }
    document.update(fields)
    return json.dumps(document, default=str)


def text_line(created: float, level: str, msg: str, fields: Mapping[str, object]) -> str:
    """One event as a line for people: UTC time, level, message, then `key=value` fields."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    return f"{stamp} {level:7} {msg} {extra}".rstrip()


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        level = record.levelname.lower()
        return json_line(record.created, level, record.name, record.getMessage(), fields)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        line = text_line(record.created, level, record.getMessage(), _fields(record))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
