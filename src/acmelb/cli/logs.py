"""How the agent's log is written: for a person, for the journal, or as JSON lines.

The library emits ``logging`` records (``acmelb.cluster.events``); this module only
renders them. ``human`` (a terminal): time, level, member, message. ``journal`` (stderr
connected to systemd's journal, which adds the time): a ``<N>`` syslog priority prefix,
so ``journalctl -p err`` finds the failures. ``json``: one object per line with
``time``, ``level``, ``member``, ``certificate``, ``event``, ``message`` and the event's
own fields, for log shippers.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import Any

from acmelb.cluster.events import LOGGER_NAME, RECORD_ATTRIBUTE

FORMATS = ("auto", "human", "journal", "json")
# sd-daemon(3): the priority prefixes journald reads from a service's stderr
SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def event_of(record: logging.LogRecord) -> dict[str, Any]:
    """The event a record carries; a record from another library gets a plain one."""
    detail = getattr(record, RECORD_ATTRIBUTE, None)
    if isinstance(detail, dict):
        return detail
    return {"member": None, "event": "log", "certificate": None, "logger": record.name}


def one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text else text


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        member = event_of(record).get("member")
        who = f"acmelb agent[{member}]" if member else record.name
        stamp = datetime.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        return f"{stamp} {record.levelname:<7} {who}: {one_line(record.getMessage())}"


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        member = event_of(record).get("member")
        who = f"acmelb agent[{member}]" if member else record.name
        priority = SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{who}: {one_line(record.getMessage())}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
        }
        line.update(event_of(record))
        line["message"] = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            line.setdefault("error", type(record.exc_info[1]).__name__)
            line.setdefault("traceback", self.formatException(record.exc_info))
        return json.dumps(line, default=str, sort_keys=False)


def on_journal() -> bool:
    """Is stderr the journal? systemd says so in ``$JOURNAL_STREAM`` (device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{stat.st_dev}:{stat.st_ino}"


def configure(log_format: str, level: str = "info") -> logging.Handler:
    """Send the agent's records (and warnings of the libraries) to stderr in ``log_format``."""
    if log_format == "auto":
        log_format = "journal" if on_journal() else "human"
    formatter: logging.Formatter = {
        "human": HumanFormatter(),
        "journal": JournalFormatter(),
        "json": JsonFormatter(),
    }[log_format]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # other libraries: their warnings and errors only
    logging.getLogger(LOGGER_NAME).setLevel(level.upper())
    return handler
