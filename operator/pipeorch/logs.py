"""Logging set-up shared by every process: plain lines for people, JSON lines for machines."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_PLAIN = "%(asctime)s %(levelname)-7s %(name)s [%(process_name)s] %(message)s"


class _ProcessName(logging.Filter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_name = self._name
        return True


def configure(process_name: str, level: str = "INFO", json: bool = False) -> None:
    """Send every log record to stderr, tagged with ``process_name`` (e.g. ``cp-0``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ProcessName(process_name))
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(process_name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time", "process_name": "proc"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_PLAIN))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pysyncobj logs every reconnect attempt at WARNING; keep it for real trouble.
    logging.getLogger("pysyncobj").setLevel(logging.ERROR if level != "DEBUG" else logging.DEBUG)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
