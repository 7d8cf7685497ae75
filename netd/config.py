# -*- test-case-name: tests.test_config -*-
"""
netd's configuration file: loading, validation and the embedded default.

The file is TOML::

    [netd]                      # global settings
    [netd.limits]               # default limits for every service
    [services.<name>]           # any number of named service instances
    type = "echo"
    listen = ["tcp:7:interface=127.0.0.1", "udp:7:interface=127.0.0.1"]
    [services.<name>.limits]    # this service's limits, over the defaults

L{loadConfig} reads a file (or the embedded default) and returns a
L{NetdConfig}, or raises L{ConfigError} listing every problem at once, each
naming the file and the key path. Nothing here binds or writes anything.

C{include = ["conf.d/*.toml"]} in C{[netd]} adds the services of other files
(L{_include}), which are validated with the main file's as one document; a
problem in one of them names that file and its line. So C{--check}, start-up
and every reload see the whole set through L{parseConfig} alone.
"""

from __future__ import annotations

import difflib
import glob
import grp
import ipaddress
import os
import pwd
import re
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from types import MappingProxyType
from typing import Any

import attrs
from attrs import evolve, field, frozen

from netd.descriptions import (
    REUSE_PORT_KINDS,
    DatagramListener,
    Listener,
    parseListener,
    splitDescription,
)
from netd.limits import LIMIT_FIELDS, LIMIT_SETTINGS, Limits
from netd.servicetype import ServiceType
from netd.settings import (
    Network,
    Problem,
    Setting,
    boolean,
    describe,
    integer,
    joinPath,
    networks,
    number,
    optionalString,
    readTable,
    unknownKey,
)
from netd.tomltext import dumpDocument

EMBEDDED_DEFAULT = "<embedded default>"

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@frozen
class ServiceConfig:
    """
    One configured service instance.

    @ivar name: The instance name (the key under C{[services]}).
    @ivar type: The service type, a key of L{netd.services.serviceTypes}.
    @ivar listeners: Where it listens.
    @ivar limits: Its session limits.
    @ivar settings: Its type-specific settings, converted, defaults filled.
    @ivar serviceType: The L{ServiceType} that C{type} names.
    """

    name: str
    type: str
    listeners: tuple[Listener, ...]
    limits: Limits
    settings: Mapping[str, Any]
    serviceType: ServiceType


@frozen
class MetricsConfig:
    """
    The metrics endpoint, C{[netd.metrics]} (see L{netd.metrics}).

    @ivar listeners: Where it listens (stream listeners only).
    @ivar limits: Its admission limits: C{allow} and C{deny} (loopback
        only by default), C{max_sessions}, C{max_sessions_per_peer},
        C{idle_timeout}; the other limits are not used.
    """

    listeners: tuple[Listener, ...]
    limits: Limits


# The metrics endpoint serves loopback clients only unless told otherwise:
# what it shows (services, addresses, traffic) is for the operator.
LOOPBACK = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)

_METRICS_LIMITS = Limits(
    maxSessions=64, maxSessionsPerPeer=16, idleTimeout=60.0, allow=LOOPBACK
)

METRICS_SETTINGS = tuple(
    Setting(
        s.key,
        getattr(_METRICS_LIMITS, LIMIT_FIELDS[s.key]),
        s.convert,
        (
            "serve only these CIDR prefixes (default: loopback only; "
            '[] or ["0.0.0.0/0", "::/0"] for any)'
            if s.key == "allow"
            else s.help.replace("the service", "the endpoint")
        ),
    )
    for s in LIMIT_SETTINGS
    if s.key
    in ("allow", "deny", "max_sessions", "max_sessions_per_peer", "idle_timeout")
)


class _MetricsEndpoint:
    """
    What L{_readListeners} needs to know of the metrics endpoint: its name
    and that it takes stream listeners only.
    """

    name = "metrics"
    transports = frozenset({"stream"})


@frozen
class NetdConfig:
    """
    A whole, valid configuration.

    @ivar source: The file it came from, or L{EMBEDDED_DEFAULT}.
    @ivar services: The enabled service instances, in file order.
    @ivar user: The user to run as after binding, if any.
    @ivar group: The group to run as after binding, if any.
    @ivar statsInterval: Seconds between periodic counter log events.
    @ivar allowRoot: Whether netd may keep running as root when no user to
        switch to is configured.
    @ivar drainTimeout: Seconds open sessions get to finish after a stop
        (SIGTERM) or a reload that retires their service, before they are
        closed.
    @ivar logFormat: C{"text"} or C{"json"}: the format of the log
        destinations netd opens itself (see L{netd.logsetup}).
    @ivar logFile: A file netd logs to (with rotation), or L{None}.
    @ivar logRotateSize: Bytes after which L{logFile} is rotated; 0 never.
    @ivar logRotateKeep: How many rotated files of L{logFile} are kept.
    @ivar logSyslog: Whether netd also logs to syslog.
    @ivar workers: How many worker processes serve the listeners (1: the
        main process serves them itself), or C{"auto"} for one per CPU
        this process may run on (see L{resolveWorkers}).
    @ivar metrics: The metrics endpoint, or L{None} if there is none.
    @ivar text: The TOML text it was read from, exactly as validated (what
        worker processes are given); with C{include}, the main file and every
        included file as one document, without C{include}. Not part of its
        value.
    @ivar included: The files C{include} added, in the order they were read.
    """

    source: str
    services: tuple[ServiceConfig, ...]
    user: str | None = None
    group: str | None = None
    statsInterval: float = 60.0
    allowRoot: bool = False
    drainTimeout: float = 30.0
    logFormat: str = "text"
    logFile: str | None = None
    logRotateSize: int = 10_000_000
    logRotateKeep: int = 10
    logSyslog: bool = False
    workers: int | str = 1
    metrics: MetricsConfig | None = None
    text: str = field(default="", eq=False, repr=False)
    included: tuple[str, ...] = field(default=(), eq=False)


MAX_WORKERS = 256


def resolveWorkers(workers: int | str, cpus: int | None = None) -> int:
    """
    The number of worker processes a C{workers} value asks for.

    @param workers: An integer, or C{"auto"}.
    @param cpus: The CPUs this process may run on (from
        L{os.sched_getaffinity} if L{None}).
    @return: At least 1, at most L{MAX_WORKERS}.
    """
    if workers != "auto":
        return int(workers)
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def describeWorkers(workers: int | str) -> str:
    """
    Say how many processes a C{workers} value makes, for C{--check}.

    @param workers: An integer, or C{"auto"}.
    @return: e.g. C{"4 workers"}, C{"workers = auto: 2 workers"}.
    """
    count = resolveWorkers(workers)
    what = "no workers" if count == 1 else f"{count} workers"
    return f"workers = auto: {what}" if workers == "auto" else what


def _workers(value: Any) -> int | str:
    """
    Accept a worker count: an integer from 1 to L{MAX_WORKERS}, or
    C{"auto"}.

    @param value: The raw value.
    @return: The count, or C{"auto"}.
    @raise ValueError: Saying what is accepted (and, for a misspelt
        C{"auto"} or a quoted number, what was probably meant).
    """
    expected = f'expected an integer (1 to {MAX_WORKERS}) or "auto"'
    if isinstance(value, str):
        if value == "auto":
            return value
        if value.strip().isdecimal():
            raise ValueError(
                f"{expected}, got the string {value!r} "
                f"(write workers = {value.strip()}, without quotes)"
            )
        if difflib.get_close_matches(value.lower(), ["auto"], n=1):
            raise ValueError(f'{expected}, got {value!r} (did you mean "auto"?)')
        raise ValueError(f"{expected}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{expected}, got {describe(value)}")
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f'{value} is out of range (1 to {MAX_WORKERS}, or "auto")')
    return value


def _choice(*choices: str) -> Any:
    """
    A converter accepting one of a few strings.

    @param choices: The acceptable values.
    @return: The converter.
    """

    def convert(value: Any) -> str:
        if value not in choices:
            raise ValueError(
                f"expected one of {', '.join(map(repr, choices))}, got {value!r}"
            )
        return str(value)

    return convert


def _absolutePath(value: Any) -> str:
    """
    Accept an absolute file path.

    @param value: The raw value.
    @return: The path.
    @raise ValueError: If it is not an absolute path.
    """
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute path, got {value!r}")
    return value


def _includePatterns(value: Any) -> tuple[str, ...]:
    """
    Accept the C{include} list: file names or glob patterns.

    @param value: The raw value.
    @return: The patterns.
    @raise ValueError: If it is not an array of non-empty strings.
    """
    if not isinstance(value, list):
        raise ValueError(
            f'expected an array of file patterns (e.g. ["conf.d/*.toml"]), '
            f"got {describe(value)}"
        )
    for index, entry in enumerate(value):
        if not isinstance(entry, str) or not entry:
            raise ValueError(
                f"entry {index}: expected a non-empty string, got {describe(entry)}"
            )
    return tuple(value)


GLOBAL_SETTINGS = (
    Setting(
        "include",
        (),
        _includePatterns,
        "files (glob patterns, relative to this file's directory) whose "
        "[services.NAME] tables are added, read in name order",
    ),
    Setting(
        "user",
        None,
        optionalString,
        "user (name or uid) to switch to after binding, when started as root",
    ),
    Setting(
        "group",
        None,
        optionalString,
        "group to switch to after binding (default: the user's group)",
    ),
    Setting(
        "reuse_port",
        False,
        boolean,
        "set SO_REUSEPORT on every listener (processes can share a port)",
    ),
    Setting(
        "stats_interval",
        60.0,
        number(1, 86400),
        "seconds between periodic counter log events (UDP traffic, refusals)",
    ),
    Setting(
        "allow_root",
        False,
        boolean,
        "keep running as root when no user is configured (refused otherwise)",
    ),
    Setting(
        "drain_timeout",
        30.0,
        number(0, 86400),
        "seconds open sessions get to finish after SIGTERM before they are closed",
    ),
    Setting(
        "log_format",
        "text",
        _choice("text", "json"),
        "the format of the log destinations: text lines or JSON lines",
    ),
    Setting(
        "log_file",
        None,
        _absolutePath,
        "an absolute path to log to, opened as root before privileges are dropped",
    ),
    Setting(
        "log_rotate_size",
        10_000_000,
        integer(0, 2**40),
        "bytes after which log_file is rotated (0: never)",
    ),
    Setting("log_rotate_keep", 10, integer(1, 10_000), "rotated log files kept"),
    Setting("log_syslog", False, boolean, "also log to syslog"),
    Setting(
        "workers",
        1,
        _workers,
        'worker processes serving the listeners (1: none, "auto": one per CPU)',
    ),
)

COMMON_SERVICE_KEYS = ("type", "listen", "enabled", "limits")


class ConfigError(Exception):
    """
    A configuration file cannot be used.

    @ivar source: The file, or L{EMBEDDED_DEFAULT}.
    @ivar problems: Everything found wrong, in file order.
    """

    def __init__(self, source: str, problems: list[Problem]) -> None:
        super().__init__(source, problems)
        self.source = source
        self.problems = problems

    def lines(self) -> list[str]:
        """
        One line per problem: C{FILE: KEY.PATH: what is wrong}, or
        C{FILE:LINE: KEY.PATH: what is wrong} for a problem in an included
        file.

        @return: The lines.
        """
        lines = []
        for p in self.problems:
            where = p.file or self.source
            if p.line:
                where = f"{where}:{p.line}"
            lines.append(
                f"{where}: {p.path}: {p.message}" if p.path else f"{where}: {p.message}"
            )
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


def defaultConfigText() -> str:
    """
    The embedded default configuration (C{netd/default.toml}).

    @return: Its TOML text.
    """
    return resources.files("netd").joinpath("default.toml").read_text("utf-8")


def loadConfig(types: Mapping[str, ServiceType], path: str | None = None) -> NetdConfig:
    """
    Read and validate a configuration file.

    @param types: The service types a C{type} key may name, by name (the
        registry L{netd.services.serviceTypes}, which config does not import).
    @param path: The file, or L{None} for the embedded default.
    @return: The configuration.
    @raise ConfigError: Listing every problem found.
    """
    if path is None:
        try:
            text = defaultConfigText()
        except OSError as e:
            # The installed package unreadable by the account netd switched
            # to (a checkout under /root, on a reload).
            raise ConfigError(
                EMBEDDED_DEFAULT,
                [Problem("", f"cannot read netd's embedded default: {e.strerror}")],
            )
        return parseConfig(types, text, EMBEDDED_DEFAULT)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(path, [Problem("", f"cannot read the file: {e.strerror}")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            path, [Problem("", f"not UTF-8 text ({e.reason} at byte {e.start})")]
        )
    return parseConfig(types, text, path)


def parseConfig(types: Mapping[str, ServiceType], text: str, source: str) -> NetdConfig:
    """
    Validate configuration text.

    @param types: The service types a C{type} key may name, by name.
    @param text: TOML text.
    @param source: Where it came from, for messages.
    @return: The configuration.
    @raise ConfigError: Listing every problem found.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [Problem("", f"invalid TOML: {e}")])
    problems: list[Problem] = []
    netd = document.get("netd")
    included: list[Included] = []
    if isinstance(netd, dict) and "include" in netd:
        document = _include(document, source, text, included, problems)
        text = dumpDocument(document)
    config = _readDocument(types, document, source, text, problems)
    if included:
        problems[:] = [_placeProblem(problem, included) for problem in problems]
        config = evolve(config, included=tuple(i.path for i in included))
    if problems:
        raise ConfigError(source, problems)
    return config


@frozen
class Included:
    """
    A file read because of C{include}.

    @ivar path: Its path.
    @ivar text: Its text.
    @ivar services: The names of the services it defines.
    """

    path: str
    text: str
    services: tuple[str, ...]


def _readText(path: str) -> tuple[str | None, str | None]:
    """
    Read a UTF-8 text file.

    @param path: The file.
    @return: C{(text, None)}, or C{(None, why not)}.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, f"cannot read the file: {e.strerror}"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text ({e.reason} at byte {e.start})"


def _include(
    document: dict[str, Any],
    source: str,
    text: str,
    included: list[Included],
    problems: list[Problem],
) -> dict[str, Any]:
    """
    Add the services of the files C{[netd] include} names.

    Each pattern is a file name or a glob, relative to the directory of
    C{source}; the files a glob matches are read in name order, each once
    (the main file never). An included file holds C{[services.NAME]} tables
    only, and a service is defined in one file only.

    @param document: The main file's document.
    @param source: The main file.
    @param text: Its text (for the lines of its services).
    @param included: Where the files read are appended.
    @param problems: Where problems are appended, each naming its file.
    @return: The document with every service and without C{include} (what
        L{NetdConfig.text} holds); C{document} itself if the patterns or the
        main file's services are not readable (then L{readTable} or
        L{_readDocument} report why).
    """
    netd = dict(document["netd"])
    try:
        patterns = _includePatterns(netd.pop("include"))
    except ValueError:
        return document
    services = document.get("services", {})
    if not isinstance(services, dict):
        return document
    merged = dict(services)
    definedIn = {name: (source, serviceLine(text, name)) for name in services}
    base = os.path.dirname(os.path.abspath(source))
    seen = {os.path.abspath(source)}
    for index, pattern in enumerate(patterns):
        full = os.path.join(base, pattern)
        paths = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        if paths == [full] and os.path.isdir(full):
            problems.append(
                Problem(
                    joinPath("netd.include", index),
                    f"{pattern!r} is a directory (include its files with a "
                    f"pattern such as {os.path.join(pattern, '*.toml')!r})",
                )
            )
            continue
        for path in paths:
            if os.path.abspath(path) in seen or os.path.isdir(path):
                continue
            seen.add(os.path.abspath(path))
            names = _includeFile(
                path, f"netd.include[{index}]", merged, definedIn, problems
            )
            if names is not None:
                included.append(Included(path, names[0], names[1]))
    result = dict(document)
    result["netd"] = netd
    result["services"] = merged
    return result


def _includeFile(
    path: str,
    includedBy: str,
    merged: dict[str, Any],
    definedIn: dict[str, tuple[str, int]],
    problems: list[Problem],
) -> tuple[str, tuple[str, ...]] | None:
    """
    Read one included file and add its services.

    @param path: The file.
    @param includedBy: The C{include} entry that named it, for messages.
    @param merged: The services so far, by name (extended here).
    @param definedIn: The file and line of each service so far (extended).
    @param problems: Where problems are appended.
    @return: The file's text and the names of the services it added, or
        L{None} if it could not be read.
    """
    text, why = _readText(path)
    if text is None:
        problems.append(Problem("", f"{why} (named by {includedBy})", file=path))
        return None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.append(Problem("", f"invalid TOML: {e}", file=path))
        return None
    for key in document:
        if key == "netd":
            problems.append(
                Problem(
                    "netd",
                    "[netd] settings belong in the main file; an included "
                    "file only adds [services.NAME] tables",
                    file=path,
                    line=_headerLine(text, ["netd"]),
                )
            )
        elif key != "services":
            problems.append(
                Problem(
                    key,
                    "unknown key (an included file only adds [services.NAME] tables)",
                    file=path,
                )
            )
    services = document.get("services", {})
    if not isinstance(services, dict):
        problems.append(
            Problem(
                "services", f"expected a table, got {describe(services)}", file=path
            )
        )
        return text, ()
    names = []
    for name, table in services.items():
        line = serviceLine(text, name)
        if name in definedIn:
            otherFile, otherLine = definedIn[name]
            where = f"{otherFile}:{otherLine}" if otherLine else otherFile
            problems.append(
                Problem(
                    joinPath("services", name),
                    f"defined twice: also in {where} (a service is defined in "
                    "one file only; rename one of them)",
                    file=path,
                    line=line,
                )
            )
            continue
        definedIn[name] = (path, line)
        merged[name] = table
        names.append(name)
    return text, tuple(names)


def _origin(path: str, included: list[Included]) -> tuple[str, int] | None:
    """
    Where a key path of the assembled document came from, if from an
    included file.

    @param path: A key path, e.g. C{services.echo.limits.max_sessions}.
    @param included: The included files.
    @return: The file and line (0 if not found), or L{None} if the path is
        not in a service from an included file.
    """
    best: tuple[Included, str] | None = None
    for entry in included:
        for name in entry.services:
            prefix = joinPath("services", name)
            if path == prefix or path.startswith((prefix + ".", prefix + "[")):
                if best is None or len(name) > len(best[1]):
                    best = (entry, name)
    if best is None:
        return None
    entry, name = best
    rest = path[len(joinPath("services", name)) :]
    keys = re.findall(r"\.([^.\[]+)", rest)
    return entry.path, keyLine(entry.text, name, keys)


def _placeProblem(problem: Problem, included: list[Included]) -> Problem:
    """
    Point a problem in a service from an included file at that file and
    line, and name the file of any other such service its message names
    (e.g. the service whose address a listener repeats).

    @param problem: A problem found in the assembled document.
    @param included: The included files.
    @return: The problem, with its file and line if its service came from
        an included file.
    """
    if problem.file:
        return problem
    origin = _origin(problem.path, included)
    if origin is not None:
        problem = evolve(problem, file=origin[0], line=origin[1])
    ownFile = problem.file

    def locate(match: re.Match[str]) -> str:
        where = _origin(match.group(0), included)
        if where is None or where[0] == ownFile:
            return match.group(0)
        return f"{match.group(0)} in {where[0]}:{where[1]}"

    message = re.sub(
        r"\bservices\.[A-Za-z0-9][\w.-]*(?:\[\d+\])?", locate, problem.message
    )
    return evolve(problem, message=message)


def _keyPattern(key: str) -> str:
    """
    @param key: A TOML key.
    @return: A regular expression matching it bare or quoted.
    """
    quoted = re.escape(key)
    return rf"(?:{quoted}|\"{quoted}\"|'{quoted}')"


def _headerLine(text: str, keys: list[str]) -> int:
    """
    Find a table header such as C{[services.echo.limits]}.

    @param text: TOML text.
    @param keys: The header's keys.
    @return: Its line number (from 1), or 0.
    """
    dotted = r"[ \t]*\.[ \t]*".join(_keyPattern(key) for key in keys)
    match = re.search(rf"^[ \t]*\[[ \t]*{dotted}[ \t]*\]", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else 0


def _keyInTable(text: str, headerLine: int, key: str) -> int:
    """
    Find a key (or a dotted key starting with it) in the table whose header
    is on C{headerLine}.

    @param text: TOML text.
    @param headerLine: The table header's line (from 1).
    @param key: The key.
    @return: Its line number (from 1), or 0.
    """
    lines = text.splitlines()
    pattern = re.compile(rf"^\s*{_keyPattern(key)}\s*[=.]")
    for number in range(headerLine, len(lines)):
        line = lines[number]
        if line.lstrip().startswith("["):
            break
        if pattern.match(line):
            return number + 1
    return 0


def serviceLine(text: str, name: str) -> int:
    """
    The line where a service is defined.

    @param text: A configuration file's text.
    @param name: The service name.
    @return: The line of its C{[services.NAME]} header (or of its first
        dotted key), from 1; 0 if it cannot be found.
    """
    line = _headerLine(text, ["services", name])
    if line:
        return line
    pattern = re.compile(rf"^\s*(?:services\s*\.\s*)?{_keyPattern(name)}\s*[=.]")
    for number, candidate in enumerate(text.splitlines()):
        if pattern.match(candidate):
            return number + 1
    return 0


def keyLine(text: str, name: str, keys: list[str]) -> int:
    """
    The line of a key in a service's tables, as near as can be found.

    @param text: A configuration file's text.
    @param name: The service name.
    @param keys: The key path under C{services.NAME}, e.g. C{["limits",
        "idle_timeout"]}; empty for the service itself.
    @return: The key's line, else its table's, else the service's (from 1);
        0 if none is found.
    """
    line = serviceLine(text, name)
    if not keys or not line:
        return line
    if len(keys) > 1:
        subTable = _headerLine(text, ["services", name, keys[0]])
        if subTable:
            return _keyInTable(text, subTable, keys[1]) or subTable
    return _keyInTable(text, line, keys[0]) or line


def _table(
    document: Mapping[str, Any], key: str, path: str, problems: list[Problem]
) -> Mapping[str, Any]:
    """
    Fetch a sub-table, reporting a value of the wrong type.

    @param document: The enclosing table.
    @param key: The key.
    @param path: The enclosing table's path.
    @param problems: Where problems are appended.
    @return: The table, or an empty one.
    """
    value = document.get(key, {})
    if not isinstance(value, dict):
        problems.append(
            Problem(joinPath(path, key), f"expected a table, got {describe(value)}")
        )
        return {}
    return value


def _readDocument(
    types: Mapping[str, ServiceType],
    document: Mapping[str, Any],
    source: str,
    text: str,
    problems: list[Problem],
) -> NetdConfig:
    """
    Validate a parsed TOML document.

    @param document: The parsed document.
    @param source: Where it came from.
    @param text: Its TOML text.
    @param problems: Where problems are appended.
    @return: The configuration (meaningful only if no problem was added).
    """
    for key in document:
        if key not in ("netd", "services"):
            problems.append(unknownKey("", key, ("netd", "services")))
    netd = _table(document, "netd", "", problems)
    values = readTable(
        netd, GLOBAL_SETTINGS, "netd", problems, alsoKnown=("limits", "metrics")
    )
    defaultLimits = _readLimits(
        _table(netd, "limits", "netd", problems), Limits(), "netd.limits", problems
    )
    _checkAccount(values["user"], values["group"], problems)

    services = []
    servicesTable = _table(document, "services", "", problems)
    if not servicesTable and isinstance(document.get("services", {}), dict):
        problems.append(
            Problem("services", "no services configured (add a [services.NAME] table)")
        )
    seen: list[tuple[tuple[Any, ...], str, Listener]] = []
    for name, table in servicesTable.items():
        service = _readService(
            types, name, table, defaultLimits, values["reuse_port"], seen, problems
        )
        if service is not None:
            services.append(service)
    if servicesTable and not services and not problems:
        problems.append(
            Problem(
                "services",
                "every service is disabled (enabled = false): nothing to run",
            )
        )
    _checkAcrossServices(services, problems)
    _checkWorkerSockets(services, values.get("workers", 1), problems)
    metrics = None
    if "metrics" in netd:
        metrics = _readMetrics(
            _table(netd, "metrics", "netd", problems),
            values["reuse_port"],
            seen,
            problems,
        )
    return NetdConfig(
        source=source,
        services=tuple(services),
        user=values["user"],
        group=values["group"],
        statsInterval=values["stats_interval"],
        allowRoot=values["allow_root"],
        drainTimeout=values["drain_timeout"],
        logFormat=values["log_format"],
        logFile=values["log_file"],
        logRotateSize=values["log_rotate_size"],
        logRotateKeep=values["log_rotate_keep"],
        logSyslog=values["log_syslog"],
        workers=values["workers"],
        metrics=metrics,
        text=text,
    )


def _readMetrics(
    table: Mapping[str, Any],
    reusePort: bool,
    seen: list[tuple[tuple[Any, ...], str, Listener]],
    problems: list[Problem],
) -> MetricsConfig | None:
    """
    Validate the C{[netd.metrics]} table.

    @param table: The table.
    @param reusePort: The global C{reuse_port}.
    @param seen: The addresses of the services, to report one the endpoint
        shares.
    @param problems: Where problems are appended.
    @return: The endpoint's configuration, or L{None} for a table without
        listeners.
    """
    path = "netd.metrics"
    values = readTable(table, METRICS_SETTINGS, path, problems, alsoKnown=("listen",))
    listeners = _readListeners(
        table, _MetricsEndpoint(), path, reusePort, seen, problems
    )
    if not listeners:
        return None
    limits = attrs.evolve(
        _METRICS_LIMITS,
        **{LIMIT_FIELDS[key]: value for key, value in values.items()},
    )
    return MetricsConfig(listeners, limits)


def pinnedServices(services: Iterable[ServiceConfig]) -> frozenset[str]:
    """
    The services that must run in one process when netd has workers: those
    whose state is per process (chat rooms), and those that use one (an
    http service mounting it).

    @param services: The enabled services.
    @return: Their names.
    """
    services = list(services)
    pinned = {s.name for s in services if s.serviceType.isPerProcess(s.settings)}
    for service in services:
        uses = service.serviceType.uses
        if uses is not None and pinned.intersection(uses(service.settings)):
            pinned.add(service.name)
    return frozenset(pinned)


def _checkWorkerSockets(
    services: list[ServiceConfig], workers: int | str, problems: list[Problem]
) -> None:
    """
    With workers, a datagram listener that carries connections (HTTP/3)
    (L{ServiceType.datagramConnections<netd.servicetype.ServiceType.datagramConnections>})
    must give each worker its own socket, unless its service runs in one
    process.

    @param services: The enabled services.
    @param workers: The C{workers} setting.
    @param problems: Where problems are appended.
    """
    count = resolveWorkers(workers)
    if count == 1:
        return
    pinned = pinnedServices(services)
    for service in services:
        what = service.serviceType.datagramConnections
        if what is None or service.name in pinned:
            continue
        for listener in service.listeners:
            if isinstance(listener, DatagramListener) and not listener.socketPerWorker:
                problems.append(
                    Problem(
                        f"services.{service.name}.listen",
                        f"{listener.description!r} carries {what} connections, each"
                        " of which must stay on the worker that accepted it, but"
                        f" with {describeWorkers(workers)} all workers would share"
                        " this one socket: write { address ="
                        f' "{_fixedExample(listener)}", reuse_port = true }}'
                        " (a fixed port: each worker then gets its own"
                        " SO_REUSEPORT socket), or set workers = 1",
                    )
                )


def _fixedExample(listener: DatagramListener) -> str:
    """
    @param listener: A datagram listener.
    @return: Its description, or one on a fixed port if it has none (for a
        hint).
    """
    if listener.kind == "udp" and listener.port != 0:
        return listener.description
    return "udp:8443"


def _checkAcrossServices(
    services: list[ServiceConfig], problems: list[Problem]
) -> None:
    """
    Run the checks that need every service (see
    L{ServiceType.checkConfig<netd.servicetype.ServiceType.checkConfig>}),
    such as an http service naming the chat service it mounts.

    @param services: The enabled services, in file order.
    @param problems: Where problems are appended.
    """
    byName = {service.name: service for service in services}
    for service in services:
        check = service.serviceType.checkConfig
        if check is not None:
            problems.extend(check(service, byName))


def _checkAccount(user: str | None, group: str | None, problems: list[Problem]) -> None:
    """
    Check that the user and group to run as exist.

    @param user: The user name or number, if given.
    @param group: The group name or number, if given.
    @param problems: Where problems are appended.
    """
    if user is not None:
        try:
            lookupUser(user)
        except (KeyError, ValueError, OverflowError):
            problems.append(Problem("netd.user", f"no such user {user!r}"))
    if group is not None:
        try:
            lookupGroup(group)
        except (KeyError, ValueError, OverflowError):
            problems.append(Problem("netd.group", f"no such group {group!r}"))


def lookupUser(user: str) -> pwd.struct_passwd:
    """
    Find a user by name or number.

    @param user: A name or a decimal uid.
    @return: The password database entry.
    @raise KeyError: If there is no such user.
    """
    return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)


def lookupGroup(group: str) -> grp.struct_group:
    """
    Find a group by name or number.

    @param group: A name or a decimal gid.
    @return: The group database entry.
    @raise KeyError: If there is no such group.
    """
    return grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)


def _readLimits(
    table: Mapping[str, Any], defaults: Limits, path: str, problems: list[Problem]
) -> Limits:
    """
    Validate a limits table over defaults.

    @param table: The C{limits} table.
    @param defaults: The limits that apply where a key is absent.
    @param path: The table's path.
    @param problems: Where problems are appended.
    @return: The limits.
    """
    settings = [
        Setting(s.key, getattr(defaults, LIMIT_FIELDS[s.key]), s.convert, s.help)
        for s in LIMIT_SETTINGS
    ]
    values = readTable(table, settings, path, problems)
    limits = Limits(**{LIMIT_FIELDS[key]: value for key, value in values.items()})
    for burst, rate, rateValue in (
        (
            "connection_burst",
            "max_connections_per_second",
            limits.maxConnectionsPerSecond,
        ),
        (
            "connection_burst_per_peer",
            "max_connections_per_second_per_peer",
            limits.maxConnectionsPerSecondPerPeer,
        ),
    ):
        if table.get(burst) and not rateValue:
            problems.append(
                Problem(
                    joinPath(path, burst),
                    f"has no effect without {rate} (set a rate, or remove it)",
                )
            )
    return limits


def _readService(
    types: Mapping[str, ServiceType],
    name: str,
    table: Any,
    defaultLimits: Limits,
    reusePort: bool,
    seen: list[tuple[tuple[Any, ...], str, Listener]],
    problems: list[Problem],
) -> ServiceConfig | None:
    """
    Validate one C{[services.NAME]} table.

    @param name: The instance name.
    @param table: Its table.
    @param defaultLimits: The limits from C{[netd.limits]}.
    @param reusePort: The global C{reuse_port}.
    @param seen: The addresses of the enabled services read so far, to
        report one listed twice (see L{_checkConflict}).
    @param problems: Where problems are appended.
    @return: The service, or L{None} if it is disabled or too broken to read.
    """
    path = joinPath("services", name)
    if not isinstance(table, dict):
        problems.append(Problem(path, f"expected a table, got {describe(table)}"))
        return None
    if not _SERVICE_NAME.match(name):
        problems.append(
            Problem(path, "service names are 1-64 letters, digits, '_', '-' or '.'")
        )
    typeName = table.get("type")
    if typeName is None:
        problems.append(
            Problem(joinPath(path, "type"), f"missing (one of: {', '.join(types)})")
        )
        return None
    if not isinstance(typeName, str) or typeName not in types:
        problems.append(
            Problem(
                joinPath(path, "type"),
                f"unknown service type {typeName!r} (one of: {', '.join(types)})",
            )
        )
        return None
    serviceType = types[typeName]
    enabled = True
    if "enabled" in table:
        try:
            enabled = boolean(table["enabled"])
        except ValueError as e:
            problems.append(Problem(joinPath(path, "enabled"), str(e)))
    settings = readTable(
        table, serviceType.settings, path, problems, alsoKnown=COMMON_SERVICE_KEYS
    )
    limits = _readLimits(
        _table(table, "limits", path, problems),
        defaultLimits,
        joinPath(path, "limits"),
        problems,
    )
    listeners = _readListeners(
        table, serviceType, path, reusePort, seen if enabled else [], problems
    )
    if not enabled:
        return None
    return ServiceConfig(
        name, typeName, listeners, limits, MappingProxyType(settings), serviceType
    )


def _readListeners(
    table: Mapping[str, Any],
    serviceType: Any,
    path: str,
    reusePort: bool,
    seen: list[tuple[tuple[Any, ...], str, Listener]],
    problems: list[Problem],
) -> tuple[Listener, ...]:
    """
    Validate a service's C{listen} array.

    Each entry is a description string or a table
    C{{address = "...", reuse_port = true}}.

    @param table: The service's table.
    @param serviceType: Its L{netd.servicetype.ServiceType}.
    @param path: The service's path.
    @param reusePort: The global C{reuse_port}, the default per listener.
    @param seen: The addresses read so far (extended here).
    @param problems: Where problems are appended.
    @return: The listeners that are valid.
    """
    listenPath = joinPath(path, "listen")
    entries = table.get("listen")
    if entries is None:
        problems.append(
            Problem(listenPath, 'missing (e.g. listen = ["tcp:7:interface=127.0.0.1"])')
        )
        return ()
    if not isinstance(entries, list) or not entries:
        problems.append(
            Problem(listenPath, "expected a non-empty array of listener descriptions")
        )
        return ()
    listeners = []
    for index, entry in enumerate(entries):
        entryPath = joinPath(listenPath, index)
        entryReusePort = reusePort
        explicitReusePort = False
        if isinstance(entry, dict):
            for key in entry:
                if key not in ("address", "reuse_port"):
                    problems.append(
                        unknownKey(entryPath, key, ("address", "reuse_port"))
                    )
            if "reuse_port" in entry:
                explicitReusePort = True
                try:
                    entryReusePort = boolean(entry["reuse_port"])
                except ValueError as e:
                    problems.append(Problem(joinPath(entryPath, "reuse_port"), str(e)))
            entryPath = joinPath(entryPath, "address")
            if "address" not in entry:
                problems.append(Problem(entryPath, 'missing (e.g. address = "tcp:7")'))
                continue
            entry = entry["address"]
        if not isinstance(entry, str):
            problems.append(
                Problem(
                    entryPath,
                    f"expected a listener description string, got {describe(entry)}",
                )
            )
            continue
        if not explicitReusePort and (
            splitDescription(entry)[0][0] not in REUSE_PORT_KINDS
        ):
            # The global reuse_port applies to the listeners that have ports.
            entryReusePort = False
        try:
            listener = parseListener(entry, entryReusePort)
        except ValueError as e:
            problems.append(Problem(entryPath, f"{entry!r}: {e}"))
            continue
        if listener.transport not in serviceType.transports:
            problems.append(
                Problem(
                    entryPath,
                    f"{entry!r}: a {serviceType.name} service has no {listener.transport} listeners",
                )
            )
            continue
        _checkConflict(listener, entryPath, seen, problems)
        listeners.append(listener)
    return tuple(listeners)


def _overlaps(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """
    Whether two conflict keys name addresses that cannot both be bound.

    @param a: A listener's L{conflictKey<netd.descriptions.StreamListener.conflictKey>}.
    @param b: Another's.
    @return: C{True} for the same address, or the same port with one side a
        wildcard address of the other's family.
    """
    if a == b:
        return True
    if a[0] != b[0] or a[0] not in ("tcp", "udp") or a[1] != b[1]:
        return False
    addressA, addressB = ipaddress.ip_address(a[2]), ipaddress.ip_address(b[2])
    if addressA.version != addressB.version:
        return False
    return addressA.is_unspecified or addressB.is_unspecified


def _checkConflict(
    listener: Listener,
    path: str,
    seen: list[tuple[tuple[Any, ...], str, Listener]],
    problems: list[Problem],
) -> None:
    """
    Report an address listed twice (in one service or across services).

    @param listener: A listener just read.
    @param path: Its key path.
    @param seen: The conflict keys, paths and listeners read before it; it
        is added.
    @param problems: Where problems are appended.
    """
    key = listener.conflictKey()
    if key is None:
        return
    for otherKey, otherPath, other in seen:
        if _overlaps(key, otherKey):
            problems.append(
                Problem(
                    path,
                    f"{listener.description!r} is the same address as "
                    f"{otherPath} ({other.description!r})",
                )
            )
            return
    seen.append((key, path, listener))
