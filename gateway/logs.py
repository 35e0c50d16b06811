"""Logging setup: human-readable text for a terminal, or one JSON object per line.

JSON lines carry the time, level, logger and message, plus the structured fields a
record was logged with (``extra={"decision": {...}}``: one line per decision with its
id and reason code). Components never log tokens, seeds or signatures; this formatter
adds nothing but what they pass. A text line is one line whatever its arguments hold: a
newline or control character that reached a message (a client's text is made safe where
it enters, gateway/untrusted.py; this is the last guard) is escaped, so no client can
write a line of its own into the log. JSON lines are escaped by the encoder.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from gateway.errors import ConfigError
from gateway.untrusted import safe_line

__all__ = ["configure_logging"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        decision = getattr(record, "decision", None)
        if isinstance(decision, dict):
            line.update(decision)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger message``; the message is kept to one line (tracebacks, which
    are ours, follow on their own lines as usual)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = safe_line(record.message)
        return super().formatMessage(record)


LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("text", "json")


def configure_logging(level: str, fmt: str) -> None:
    """Raises ConfigError for a level or format that does not exist: both can come from
    the environment, where argparse's choices do not reach."""
    if level.lower() not in LEVELS:
        raise ConfigError(f"log level `{level}` is not one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ConfigError(f"log format `{fmt}` is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per JWKS fetch is noise
