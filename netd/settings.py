# -*- test-case-name: tests.test_config -*-
"""
Typed settings: the building blocks of netd's configuration schema.

A L{Setting} names one TOML key, its default and a converter that turns the
raw TOML value into the Python value netd uses, raising L{ValueError} with a
message a user can act on. L{readTable} checks a whole TOML table against a
tuple of settings and reports every problem at once, with a did-you-mean for
unknown keys.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attrs import frozen

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@frozen
class Problem:
    """
    One thing wrong with a configuration file.

    @ivar path: The key path, such as C{services.echo.listen[1]}, or C{""}
        when the problem concerns the whole file.
    @ivar message: What is wrong, in words a user can act on.
    @ivar file: The file it is in, when that is not the main configuration
        file (an included one, see C{include}); C{""} for the main file.
    @ivar line: The line in L{file} it is on, or 0 if not known.
    """

    path: str
    message: str
    file: str = ""
    line: int = 0


@frozen
class Setting:
    """
    One configuration key.

    @ivar key: The TOML key (snake_case).
    @ivar default: The value used when the key is absent (already converted).
    @ivar convert: Turns the raw TOML value into the value netd uses; raises
        L{ValueError} with a message when the value is not acceptable.
    @ivar help: One line for the documentation.
    """

    key: str
    default: Any
    convert: Callable[[Any], Any]
    help: str


def joinPath(path: str, key: str | int) -> str:
    """
    Extend a key path.

    @param path: The path so far (C{""} at the top).
    @param key: A table key or a list index.
    @return: The longer path, e.g. C{services.echo} or C{listen[1]}.
    """
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def unknownKey(path: str, key: str, known: Iterable[str]) -> Problem:
    """
    Describe an unknown key, suggesting the closest known one.

    @param path: The path of the table holding the key.
    @param key: The unknown key.
    @param known: The keys that table accepts.
    @return: A L{Problem} naming the key and, if one is close, a suggestion.
    """
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return Problem(joinPath(path, key), f"unknown key ({hint})")


def readTable(
    table: Mapping[str, Any],
    settings: Iterable[Setting],
    path: str,
    problems: list[Problem],
    alsoKnown: Iterable[str] = (),
) -> dict[str, Any]:
    """
    Convert the keys of a TOML table that are described by C{settings}.

    Every key of C{table} must be a setting or one of C{alsoKnown} (keys the
    caller reads itself); missing settings take their defaults.

    @param table: The parsed TOML table.
    @param settings: The settings the table may hold.
    @param path: The key path of the table, for messages.
    @param problems: Where problems are appended.
    @param alsoKnown: Further keys that are valid but not converted here.
    @return: A mapping from each setting's key to its converted value (the
        default where the key is absent or invalid).
    """
    settings = tuple(settings)
    known = {setting.key for setting in settings} | set(alsoKnown)
    for key in table:
        if key not in known:
            problems.append(unknownKey(path, key, known))
    values = {}
    for setting in settings:
        value = setting.default
        if setting.key in table:
            try:
                value = setting.convert(table[setting.key])
            except ValueError as e:
                problems.append(Problem(joinPath(path, setting.key), str(e)))
        values[setting.key] = value
    return values


def describe(value: object) -> str:
    """
    Name a TOML value's type the way a user wrote it.

    @param value: A parsed TOML value.
    @return: C{"a string"}, C{"an integer"}, ...
    """
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def integer(minimum: int, maximum: int) -> Callable[[Any], int]:
    """
    A converter accepting a TOML integer within bounds.

    @param minimum: The smallest acceptable value.
    @param maximum: The largest acceptable value.
    @return: The converter.
    """

    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {describe(value)}")
        if not minimum <= value <= maximum:
            raise ValueError(f"{value} is out of range ({minimum} to {maximum})")
        return value

    return convert


def number(minimum: float, maximum: float) -> Callable[[Any], float]:
    """
    A converter accepting a TOML integer or float within bounds.

    @param minimum: The smallest acceptable value.
    @param maximum: The largest acceptable value.
    @return: The converter.
    """

    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {describe(value)}")
        if not minimum <= value <= maximum:
            raise ValueError(f"{value} is out of range ({minimum:g} to {maximum:g})")
        return float(value)

    return convert


def boolean(value: Any) -> bool:
    """
    Accept a TOML boolean.

    @param value: The raw value.
    @return: The value.
    @raise ValueError: If it is not a boolean.
    """
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


def optionalString(value: Any) -> str | None:
    """
    Accept a non-empty TOML string.

    @param value: The raw value.
    @return: The string.
    @raise ValueError: If it is not a non-empty string.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {describe(value)}")
    return value


def networks(value: Any) -> tuple[Network, ...]:
    """
    Accept a list of CIDR prefixes or addresses, IPv4 or IPv6.

    @param value: The raw value, e.g. C{["10.0.0.0/8", "::1"]}.
    @return: The parsed networks (host bits are allowed and ignored).
    @raise ValueError: Naming the first entry that is not a prefix.
    """
    if not isinstance(value, list):
        raise ValueError(f"expected an array of CIDR prefixes, got {describe(value)}")
    result = []
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            raise ValueError(f"entry {index}: expected a string, got {describe(entry)}")
        try:
            result.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"entry {index}: {entry!r} is not an IPv4 or IPv6 address or prefix"
            ) from None
    return tuple(result)
