# -*- test-case-name: tests.test_tomltext -*-
"""
Writing TOML: the values netd's configuration holds, as TOML text.

The standard library reads TOML (L{tomllib}) but cannot write it, and netd
writes it twice: the configuration assembled from a main file and its
included files, as one document for the worker processes
(L{netd.config}), and the files the converter prints (L{netd.convert}).
Both need only the value types C{tomllib} returns, so this small writer
saves a dependency; C{tests.test_tomltext} reads back everything it writes.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def tomlString(value: str) -> str:
    """
    A TOML basic string.

    @param value: Any text.
    @return: It quoted, with quotes, backslashes and control characters
        escaped.
    """
    out = []
    for char in value:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def tomlKey(key: str) -> str:
    """
    A TOML key: bare if it can be, else quoted.

    @param key: The key.
    @return: Its TOML spelling.
    """
    return key if _BARE_KEY.match(key) else tomlString(key)


def tomlValue(value: Any) -> str:
    """
    A TOML value on one line (tables as inline tables).

    @param value: A string, boolean, integer, float, date, time, datetime,
        list or mapping of these.
    @return: Its TOML text.
    @raise TypeError: For any other type.
    """
    if isinstance(value, str):
        return tomlString(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(tomlValue(item) for item in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = ", ".join(f"{tomlKey(k)} = {tomlValue(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"no TOML spelling for {type(value).__name__}")


def dumpDocument(document: Mapping[str, Any]) -> str:
    """
    A whole document: each top-level table and each table under it as a
    C{[header]} with its keys, deeper tables inline.

    @param document: A parsed TOML document (as L{tomllib.loads} returns).
    @return: TOML text that reads back as C{document}.
    """
    lines = []
    for key, value in document.items():
        if not isinstance(value, Mapping):
            lines.append(f"{tomlKey(key)} = {tomlValue(value)}")
    for key, value in document.items():
        if not isinstance(value, Mapping):
            continue
        lines.append(f"[{tomlKey(key)}]")
        for subKey, subValue in value.items():
            if not isinstance(subValue, Mapping):
                lines.append(f"{tomlKey(subKey)} = {tomlValue(subValue)}")
        for subKey, subValue in value.items():
            if isinstance(subValue, Mapping):
                lines.append(f"[{tomlKey(key)}.{tomlKey(subKey)}]")
                for name, item in subValue.items():
                    lines.append(f"{tomlKey(name)} = {tomlValue(item)}")
    return "\n".join(lines) + "\n"
