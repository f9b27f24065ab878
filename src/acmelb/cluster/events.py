"""The agent's log: one event per line, through the standard ``logging`` module.

Each event has a name (``installed``, ``renewal-failed``, ...), a level, the member, the
certificate it concerns (if any) and its own fields; the human text is the message. The
library only emits records (logger ``acmelb.agent``); how they are written (a terminal,
the journal, one JSON object per line) is the command line's choice. docs/operations.md
lists the events and their fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

LOGGER_NAME = "acmelb.agent"
# the attribute of a LogRecord that carries the event (read by the formatters)
RECORD_ATTRIBUTE = "acmelb_event"


class AgentLog:
    """Events of one member."""

    def __init__(self, member: str, logger: logging.Logger | None = None) -> None:
        self.member = member
        self.logger = logger or logging.getLogger(LOGGER_NAME)

    def info(self, event: str, message: str, certificate: str | None = None, **fields: Any) -> None:
        self.emit(logging.INFO, event, message, certificate, fields)

    def warning(
        self, event: str, message: str, certificate: str | None = None, **fields: Any
    ) -> None:
        self.emit(logging.WARNING, event, message, certificate, fields)

    def error(
        self, event: str, message: str, certificate: str | None = None, **fields: Any
    ) -> None:
        self.emit(logging.ERROR, event, message, certificate, fields)

    def emit(
        self,
        level: int,
        event: str,
        message: str,
        certificate: str | None,
        fields: dict[str, Any],
    ) -> None:
        detail = {"member": self.member, "event": event, "certificate": certificate, **fields}
        self.logger.log(level, message, extra={RECORD_ATTRIBUTE: detail})

    def progress(self, certificate: str) -> Callable[[str], None]:
        """A ``progress(message)`` callback (the issuance pipeline, the self-check) whose
        lines are ``issuance`` events of ``certificate``."""

        def say(message: str) -> None:
            self.info("issuance", f"{certificate}: {message}", certificate)

        return say
