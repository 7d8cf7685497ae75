# -*- test-case-name: tests.test_logs -*-
"""
Log observers for twistd's C{--logger} option.

C{twistd --logger netd.logs.json netd ...} writes one JSON object per line
to standard output (for journald, a container runtime or a log shipper).
Each object has C{time} (ISO 8601, UTC), C{level}, C{namespace}, C{text} (the
formatted message) and every field of the event under its own name, so that
C{{"service": "echo", "peer": "127.0.0.1:40000", "bytesIn": 12, ...}} can be
queried without parsing text.
"""

from __future__ import annotations

import json as _json
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import FileLogObserver, formatEvent


def _jsonSafe(value: Any) -> Any:
    """
    Make a field value serialisable.

    @param value: Any event field.
    @return: The value, or its C{str} if JSON cannot hold it.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonSafe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonSafe(v) for k, v in value.items()}
    return str(value)


def eventAsJSONLine(event: dict[str, Any]) -> str:
    """
    Render one log event as a line of JSON.

    @param event: A L{twisted.logger} event.
    @return: The line, newline included.
    """
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(
            event.get("log_time", 0), timezone.utc
        ).isoformat(),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "text": formatEvent(event),
    }
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and not key.startswith("_"):
            record[key] = _jsonSafe(value)
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return _json.dumps(record, ensure_ascii=False) + "\n"


def jsonObserver(stream: IO[str]) -> FileLogObserver:
    """
    An observer writing JSON lines to a stream.

    @param stream: A text stream.
    @return: The observer.
    """
    return FileLogObserver(stream, eventAsJSONLine)


def json() -> FileLogObserver:
    """
    The observer factory named by C{twistd --logger netd.logs.json}.

    @return: An observer writing JSON lines to standard output.
    """
    return jsonObserver(sys.stdout)
