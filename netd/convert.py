# -*- test-case-name: tests.test_convert -*-
"""
Bringing an inetd or xinetd configuration over: C{twistd netd
--convert-inetd FILE} and C{--convert-xinetd DIR-or-FILE}.

L{convertInetd} reads an C{inetd.conf} (openbsd-inetd's syntax, which is
the traditional one plus C{host:} prefixes, C{tcp4}/C{tcp6}, C{nowait.max}
and C{user.group}); L{convertXinetd} reads an C{xinetd.conf} with its
C{defaults}, C{include} and C{includedir}, or one C{xinetd.d} directory.
Both return netd TOML text:

  - the built-in services (echo, discard, chargen, daytime, time) become
    netd services of those types;
  - a program becomes a C{type = "exec"} service (C{command} as an argv
    list, C{mode}, C{user}, C{group}); C{tcpd} in front of it is dropped
    (its host rules belong in C{limits.allow}/C{deny});
  - xinetd's C{redirect} becomes a C{type = "forward"} service;
  - C{only_from}/C{no_access} become C{allow}/C{deny}, C{instances}
    C{max_sessions}, C{per_source} C{max_sessions_per_peer}, C{cps} and
    inetd's C{.max} the connection-rate limits, C{bind} and the C{host:}
    prefix the listeners' C{interface};
  - whatever has no netd equivalent is kept as a C{# not converted: ...}
    comment saying why, next to the service it belongs to (or in place of
    it).

Nothing here binds, runs or writes anything; the caller prints the text.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from typing import Any

from attrs import define, field

from netd.tomltext import tomlKey, tomlString, tomlValue

BUILTINS = ("echo", "discard", "chargen", "daytime", "time")

# The built-ins' ports, for a machine without /etc/services.
_WELL_KNOWN = {"echo": 7, "discard": 9, "daytime": 13, "chargen": 19, "time": 37}

# Where tcpd looks for a program named without a path (REAL_DAEMON_DIR).
_TCPD_DIRECTORY = "/usr/sbin"

# How deep xinetd's include and includedir may nest.
_MAX_DEPTH = 8

_SERVICE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class ConvertError(Exception):
    """
    A file to convert cannot be read.

    @ivar path: The file.
    @ivar reason: Why, in words.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@define
class Converted:
    """
    One service of the old configuration, as netd will have it.

    @ivar name: The netd service name wanted (made unique on output).
    @ivar origin: Where it was, C{FILE:LINE}.
    @ivar original: The old text, shown as a comment above it.
    @ivar type: The netd service type, or L{None} if it is not converted.
    @ivar listen: The listener descriptions.
    @ivar settings: The type's keys, in output order.
    @ivar limits: The C{limits} table's keys.
    @ivar enabled: Whether it was switched on.
    @ivar notes: Comments: what was not converted and why.
    @ivar remarks: Comments: what the converter changed on the way.
    """

    name: str
    origin: str
    original: list[str]
    type: str | None = None
    listen: list[str] = field(factory=list)
    settings: dict[str, Any] = field(factory=dict)
    limits: dict[str, Any] = field(factory=dict)
    enabled: bool = True
    notes: list[str] = field(factory=list)
    remarks: list[str] = field(factory=list)

    def skip(self, why: str) -> Converted:
        """
        Mark it as not converted.

        @param why: The reason.
        @return: Itself.
        """
        self.type = None
        self.notes.insert(0, why)
        return self


def _readText(path: str) -> str:
    """
    @param path: A file.
    @return: Its text (undecodable bytes replaced).
    @raise ConvertError: If it cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        raise ConvertError(path, f"cannot read it: {e.strerror}") from None


def servicePort(service: str, protocol: str) -> int | None:
    """
    The port of a service name or number.

    @param service: A name from C{/etc/services}, or a port number.
    @param protocol: C{"tcp"} or C{"udp"}.
    @return: The port, or L{None} if the name is unknown.
    """
    if service.isdigit():
        port = int(service)
        return port if 0 < port < 65536 else None
    try:
        return socket.getservbyname(service, protocol)
    except OSError:
        return _WELL_KNOWN.get(service)


def _escape(value: str) -> str:
    """
    @param value: A value inside an endpoint description.
    @return: It with C{:} and C{\\} escaped.
    """
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _isAddress(text: str) -> bool:
    """
    @param text: A host field.
    @return: Whether it is an IPv4 or IPv6 address.
    """
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def listeners(
    socketType: str, families: Iterable[int], port: int, interface: str | None
) -> list[str]:
    """
    The netd listener descriptions of one old listening socket.

    @param socketType: C{"stream"} or C{"dgram"}.
    @param families: 4 and/or 6, when no interface says which.
    @param port: The port.
    @param interface: The address to listen on, or L{None} (or C{"*"}) for
        every address.
    @return: The descriptions, e.g. C{["tcp:7", "tcp6:7"]}.
    """
    kinds = {4: "tcp", 6: "tcp6"} if socketType == "stream" else {4: "udp", 6: "udp6"}
    if interface in (None, "*", ""):
        return [f"{kinds[family]}:{port}" for family in families]
    assert interface is not None
    family = 6 if ":" in interface else 4
    return [f"{kinds[family]}:{port}:interface={_escape(interface)}"]


def convertAddresses(
    values: Iterable[str], entry: Converted, attribute: str
) -> list[str]:
    """
    Turn xinetd (or tcpd) address patterns into CIDR prefixes.

    @param values: Addresses, C{a.b.c.0} wildcards, C{a.b.{c,d}} factorized
        forms and prefixes; host and network names cannot be converted.
    @param entry: Where notes about the others go.
    @param attribute: The old attribute's name, for the notes.
    @return: The prefixes.
    """
    result = []
    for value in values:
        match = re.fullmatch(r"((?:\d{1,3}\.){1,3})\{([\d,]+)\}", value)
        if match:
            stem = match.group(1)
            for part in match.group(2).split(","):
                result.extend(convertAddresses([stem + part], entry, attribute))
            continue
        if re.fullmatch(r"\d{1,3}(\.\d{1,3}){0,3}", value) and "/" not in value:
            octets = value.split(".")
            known = len(octets)
            while known > 0 and octets[known - 1] == "0" and len(octets) == 4:
                known -= 1
            if len(octets) < 4:
                known = len(octets)
            padded = (octets[:known] + ["0"] * 4)[:4]
            try:
                network = ipaddress.ip_network(f"{'.'.join(padded)}/{8 * known}")
            except ValueError:
                entry.notes.append(f"{attribute} {value}: not an IPv4 address")
                continue
            result.append(str(network))
            continue
        try:
            result.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            entry.notes.append(
                f"{attribute} {value}: host, domain and network names are not "
                "matched by netd (only addresses and CIDR prefixes); add its "
                "addresses by hand"
            )
    return result


def _uniqueName(wanted: str, taken: set[str]) -> str:
    """
    @param wanted: A name.
    @param taken: The names used so far (extended).
    @return: A valid netd service name not yet used.
    """
    name = _SERVICE_NAME.sub("-", wanted).strip("-._")[:60] or "service"
    if not name[0].isalnum():
        name = "s" + name
    candidate, n = name, 2
    while candidate in taken:
        candidate = f"{name}-{n}"
        n += 1
    taken.add(candidate)
    return candidate


def _comment(text: str) -> str:
    """
    @param text: Any text, maybe several lines.
    @return: It as TOML comment lines.
    """
    return "\n".join("# " + line if line else "#" for line in text.splitlines())


def render(entries: list[Converted], source: str, option: str) -> str:
    """
    The netd configuration text of converted services.

    @param entries: The services, in the old file's order.
    @param source: What was converted, for the header.
    @param option: The command-line option used, for the header.
    @return: TOML text.
    """
    out = [
        _comment(
            f"netd configuration converted from {source} by twistd netd {option}.\n"
            "Check it before use: twistd netd --check --config THIS-FILE\n"
            'Read every "not converted" comment: each needs a decision.'
        ),
        "",
        "[netd]",
        _comment(
            "netd binds every listener as root, then runs as this user (exec\n"
            "services run as their own user):"
        ),
        '# user = "nobody"',
    ]
    taken: set[str] = set()
    for entry in entries:
        out.append("")
        original = "\n".join(entry.original)
        if entry.type is None:
            out.append(_comment(f"{entry.origin}: not converted: {entry.notes[0]}"))
            out.append(_comment(original))
            for note in entry.notes[1:]:
                out.append(_comment(f"not converted: {note}"))
            continue
        name = _uniqueName(entry.name, taken)
        out.append(_comment(f"{entry.origin}:\n{original}"))
        if name != entry.name:
            entry.remarks.append(
                f"renamed to {name}: an earlier service is named {entry.name}"
            )
        out.append(f"[services.{tomlKey(name)}]")
        out.append(f"type = {tomlString(entry.type)}")
        out.append(f"listen = {tomlValue(entry.listen)}")
        if not entry.enabled:
            out.append("enabled = false")
        for key, value in entry.settings.items():
            out.append(f"{tomlKey(key)} = {tomlValue(value)}")
        for remark in entry.remarks:
            out.append(_comment(remark))
        for note in entry.notes:
            out.append(_comment(f"not converted: {note}"))
        if entry.limits:
            out.append(f"[services.{tomlKey(name)}.limits]")
            for key, value in entry.limits.items():
                out.append(f"{tomlKey(key)} = {tomlValue(value)}")
    return "\n".join(out) + "\n"


def _program(
    server: str, argv: list[str], entry: Converted, argvZeroGiven: bool
) -> list[str]:
    """
    The C{command} of an exec service, without C{tcpd}.

    @param server: The program the old daemon started.
    @param argv: The arguments it gave it, argv[0] first if
        C{argvZeroGiven}.
    @param entry: Where notes go.
    @param argvZeroGiven: Whether C{argv[0]} is part of C{argv} (inetd,
        xinetd's C{NAMEINARGS}).
    @return: The argv list, the program's path first.
    """
    if argvZeroGiven and argv:
        zero, rest = argv[0], argv[1:]
    else:
        zero, rest = os.path.basename(server), argv
    if os.path.basename(server) == "tcpd" and argvZeroGiven and argv:
        program = zero if zero.startswith("/") else f"{_TCPD_DIRECTORY}/{zero}"
        entry.notes.append(
            "tcpd (TCP wrappers) is dropped: netd does not read /etc/hosts.allow "
            "or /etc/hosts.deny; put their rules in limits.allow and limits.deny"
        )
        return [program] + rest
    if os.path.basename(zero) != os.path.basename(server):
        entry.notes.append(
            f"argv[0] was {zero!r}: the program is started with its own path as argv[0]"
        )
    return [server] + rest


def _account(entry: Converted, user: str | None, group: str | None) -> None:
    """
    Set an exec service's account.

    @param entry: The service.
    @param user: The user, if any.
    @param group: The group, if any.
    """
    if user:
        entry.settings["user"] = user
        if user in ("root", "0"):
            entry.remarks.append(
                'user = "root": an exec service runs as root only with '
                "allow_root; give it its own user if it does not need root"
            )
    if group:
        entry.settings["group"] = group


# inetd


def convertInetd(path: str) -> str:
    """
    Convert an C{inetd.conf}.

    Comment lines are skipped, except C{#<off>#} lines (services that
    update-inetd switched off), which become services with C{enabled =
    false}.

    @param path: The file.
    @return: netd TOML text.
    @raise ConvertError: If it cannot be read.
    """
    text = _readText(path)
    entries = []
    host: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        enabled = True
        if line.startswith("#<off>#"):
            line = line[len("#<off>#") :].strip()
            enabled = False
            if len(line.split()) < 6:
                continue
        elif not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 1 and fields[0].endswith(":"):
            host = fields[0][:-1]
            continue
        entry = inetdEntry(fields, f"{path}:{number}", raw.rstrip(), host)
        entry.enabled = entry.enabled and enabled
        entries.append(entry)
    return render(entries, path, "--convert-inetd")


def inetdEntry(
    fields: list[str], origin: str, raw: str, defaultHost: str | None
) -> Converted:
    """
    Convert one C{inetd.conf} line.

    @param fields: Its whitespace-separated fields.
    @param origin: C{FILE:LINE}.
    @param raw: The line.
    @param defaultHost: The address of the last C{host:} line, if any.
    @return: The service.
    """
    entry = Converted(fields[0], origin, [raw])
    if len(fields) < 6:
        return entry.skip(
            "expected at least 6 fields: service socket-type protocol "
            "wait/nowait user program [arguments]"
        )
    service, socketType, protocol, flags, user, server = fields[:6]
    args = fields[6:]
    protocol, *bufferOptions = protocol.split(",")
    if protocol.startswith("rpc/"):
        return entry.skip("Sun RPC services have no netd equivalent")
    hosts: list[str | None] = [defaultHost]
    if protocol != "unix" and ":" in service:
        prefix, _, service = service.rpartition(":")
        hosts = [h.strip("[]") for h in prefix.split(",")]
    entry.name = service
    if bufferOptions:
        entry.notes.append(
            f"{','.join(bufferOptions)}: netd sets no socket buffer sizes per listener"
        )
    expected = {"stream": "tcp", "dgram": "udp"}.get(socketType)
    if expected is None:
        return entry.skip(f"socket type {socketType!r}: netd has stream and dgram only")
    if protocol == "unix":
        if socketType != "stream":
            return entry.skip("UNIX datagram sockets have no netd equivalent")
        entry.listen = [f"unix:{_escape(service)}"]
        entry.name = os.path.basename(service)
    else:
        match = re.fullmatch(r"(tcp|udp)(4|6|46)?", protocol)
        if match is None or match.group(1) != expected:
            return entry.skip(
                f"protocol {protocol!r} with socket type {socketType!r}: netd "
                "serves tcp, tcp4, tcp6, udp, udp4 and udp6"
            )
        families = {"4": (4,), "6": (6,)}.get(match.group(2) or "", (4, 6))
        port = servicePort(service, expected)
        if port is None:
            return entry.skip(
                f"{service!r} is neither a port number nor a service in /etc/services"
            )
        for host in hosts:
            if host in (None, "*") or _isAddress(host):
                entry.listen.extend(listeners(socketType, families, port, host))
            else:
                entry.notes.append(
                    f"host {host!r}: netd listens on addresses, not names; "
                    "add a listener with its address"
                )
        if not entry.listen:
            return entry.skip(f"no address to listen on (host names: {hosts})")
        if socketType == "dgram":
            entry.name = f"{service}-udp"
    waitMatch = re.fullmatch(r"(wait|nowait)(?:\.(\d+))?", flags)
    if waitMatch is None:
        return entry.skip(f"{flags!r}: expected wait or nowait, with an optional .max")
    if waitMatch.group(2):
        perMinute = int(waitMatch.group(2))
        entry.limits["max_connections_per_second"] = round(perMinute / 60, 6)
        entry.limits["connection_burst"] = max(1, perMinute)
        entry.remarks.append(
            f"{flags}: inetd stops the service for ten minutes past "
            f"{perMinute} starts a minute; netd only refuses the connections "
            "over that rate (per address: max_connections_per_second_per_peer)"
        )
    account = re.fullmatch(r"([^.:/]+)(?:[.:]([^/]+))?(?:/.*)?", user)
    userName, group = account.groups() if account else (user, None)
    if server == "internal":
        if service not in BUILTINS:
            return entry.skip(
                f"inetd's internal {service!r} service has no netd equivalent "
                f"(netd has {', '.join(BUILTINS)})"
            )
        entry.type = service
        return entry
    entry.type = "exec"
    entry.settings["command"] = _program(server, args, entry, True)
    entry.settings["mode"] = waitMatch.group(1)
    _account(entry, userName, group)
    return entry


# xinetd


@define
class Block:
    """
    One C{service} or C{defaults} block of an xinetd file.

    @ivar kind: C{"service"} or C{"defaults"}.
    @ivar name: The service name (C{""} for defaults).
    @ivar origin: C{FILE:LINE} of its first line.
    @ivar lines: Its text.
    @ivar attributes: C{(attribute, operator, values)} in file order.
    """

    kind: str
    name: str
    origin: str
    lines: list[str] = field(factory=list)
    attributes: list[tuple[str, str, list[str]]] = field(factory=list)


def includedFiles(directory: str) -> list[str]:
    """
    The files xinetd's C{includedir} reads.

    @param directory: The directory.
    @return: Its files, except those whose name has a dot or ends with
        C{~}, in C locale (byte) order.
    @raise ConvertError: If it cannot be listed.
    """
    try:
        names = os.listdir(directory)
    except OSError as e:
        raise ConvertError(directory, f"cannot list it: {e.strerror}") from None
    return [
        os.path.join(directory, name)
        for name in sorted(names, key=os.fsencode)
        if "." not in name
        and not name.endswith("~")
        and os.path.isfile(os.path.join(directory, name))
    ]


def parseXinetd(
    path: str, blocks: list[Block], notes: list[str], root: str = "/", depth: int = 0
) -> None:
    """
    Read an xinetd file, following C{include} and C{includedir}.

    @param path: The file.
    @param blocks: Where its blocks are appended.
    @param notes: Where lines that are not understood are noted.
    @param root: Where absolute include paths are looked up.
    @param depth: How deep in includes this file is.
    @raise ConvertError: If it (or an included file) cannot be read.
    """
    lines = _readText(path).splitlines()
    current: Block | None = None
    opened = False
    base = os.path.dirname(path)
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        if current is not None:
            current.lines.append(raw.rstrip())
            if not opened:
                if line.startswith("{"):
                    opened = True
                    line = line[1:].strip()
                    if not line:
                        continue
                else:
                    notes.append(f"{where}: expected {{ after {current.kind}")
                    current = None
                    continue
            if line.startswith("}"):
                blocks.append(current)
                current = None
                continue
            match = re.fullmatch(r"(\S+?)\s*(\+=|-=|=)\s*(.*)", line)
            if match is None:
                notes.append(f"{where}: not an attribute line: {line}")
                continue
            current.attributes.append(
                (match.group(1), match.group(2), match.group(3).split())
            )
            continue
        words = line.split()
        if words[0] in ("service", "defaults"):
            name = words[1] if words[0] == "service" and len(words) > 1 else ""
            current = Block(words[0], name, where, [raw.rstrip()])
            opened = words[-1] == "{"
            continue
        if words[0] in ("include", "includedir") and len(words) == 2:
            target = os.path.join(base, words[1])
            if os.path.isabs(words[1]) and root != "/":
                target = os.path.join(root, words[1].lstrip("/"))
            if depth >= _MAX_DEPTH:
                notes.append(f"{where}: {words[0]} nested too deep, not followed")
                continue
            files = [target] if words[0] == "include" else includedFiles(target)
            for included in files:
                parseXinetd(included, blocks, notes, root, depth + 1)
            continue
        notes.append(f"{where}: not understood: {line}")
    if current is not None:
        notes.append(f"{current.origin}: {current.kind} block not closed")


def _apply(
    values: dict[str, list[str]], attributes: list[tuple[str, str, list[str]]]
) -> None:
    """
    Apply attribute assignments (C{=}, C{+=}, C{-=}) to values.

    @param values: The values so far, by attribute (changed).
    @param attributes: The assignments.
    """
    for attribute, operator, words in attributes:
        if operator == "=":
            values[attribute] = list(words)
        elif operator == "+=":
            values[attribute] = values.get(attribute, []) + words
        else:
            values[attribute] = [w for w in values.get(attribute, []) if w not in words]


# The attributes of a defaults block that services inherit.
_INHERITED = (
    "only_from",
    "no_access",
    "instances",
    "per_source",
    "cps",
    "bind",
    "interface",
    "log_type",
    "log_on_success",
    "log_on_failure",
    "passenv",
    "umask",
    "groups",
    "banner",
    "banner_success",
    "banner_fail",
    "max_load",
)

# Attributes the converter maps (or that need nothing in netd).
_CONVERTED = frozenset(
    {
        "id",
        "disable",
        "type",
        "socket_type",
        "protocol",
        "wait",
        "user",
        "group",
        "server",
        "server_args",
        "port",
        "bind",
        "interface",
        "flags",
        "only_from",
        "no_access",
        "instances",
        "per_source",
        "cps",
        "redirect",
        "nice",
        "env",
        "rlimit_as",
        "rlimit_cpu",
        "rlimit_files",
    }
)

_UNMAPPED = {
    "log_type": "netd logs every session and refusal itself ([netd] log_* keys)",
    "log_on_success": "netd logs every session and refusal itself",
    "log_on_failure": "netd logs every session and refusal itself",
    "access_times": "netd has no time-of-day access rules",
    "max_load": "netd does not refuse by load average",
    "banner": "netd sends no banners",
    "banner_success": "netd sends no banners",
    "banner_fail": "netd sends no banners",
    "passenv": "exec children get a clean environment (set what they need in env)",
    "umask": "netd sets no umask per service",
    "groups": "netd sets no supplementary groups per service",
    "deny_time": "netd has no SENSOR",
    "libwrap": "netd does not use libwrap (use limits.allow/deny)",
    "mdns": "netd does not announce services over mDNS",
    "rpc_version": "Sun RPC services have no netd equivalent",
    "rpc_number": "Sun RPC services have no netd equivalent",
    "rlimit_data": "the exec type limits address space (rlimit_as), not data",
    "rlimit_rss": "the exec type limits address space (rlimit_as), not RSS",
    "rlimit_stack": "the exec type limits address space (rlimit_as), not stack",
}

_FLAG_NOTES = {
    "NAMEINARGS": "",
    "IPv4": "",
    "IPv6": "",
    "REUSE": "",
    "NOLIBWRAP": "",
    "NODELAY": "netd chooses its own socket options",
    "KEEPALIVE": "netd chooses its own socket options",
    "NORETRY": "netd retries nothing: a failed bind ends start-up",
    "INTERCEPT": "netd has no INTERCEPT",
    "SENSOR": "netd has no SENSOR (block the address with limits.deny)",
    "DEDICATED": "",
}


def convertXinetd(path: str, root: str = "/") -> str:
    """
    Convert an C{xinetd.conf} (with what it includes) or an C{xinetd.d}
    directory.

    @param path: The file or directory.
    @param root: Where absolute C{include} and C{includedir} paths are
        looked up: C{/}, or the copy of another machine's file system the
        file came from.
    @return: netd TOML text.
    @raise ConvertError: If a file cannot be read.
    """
    blocks: list[Block] = []
    notes: list[str] = []
    if os.path.isdir(path):
        for included in includedFiles(path):
            parseXinetd(included, blocks, notes, root)
    else:
        parseXinetd(path, blocks, notes, root)
    defaults: dict[str, list[str]] = {}
    for block in blocks:
        if block.kind == "defaults":
            _apply(defaults, block.attributes)
    entries = [
        xinetdEntry(block, defaults) for block in blocks if block.kind == "service"
    ]
    text = render(entries, path, "--convert-xinetd")
    for key in defaults:
        if key in _UNMAPPED:
            notes.append(f"defaults: {key}: {_UNMAPPED[key]}")
        elif key not in _INHERITED and key not in ("enabled", "disabled"):
            notes.append(f"defaults: {key}: unknown to the converter")
    if notes:
        text += "\n" + _comment("\n".join(f"not converted: {n}" for n in notes)) + "\n"
    return text


def _number(value: str) -> int | None:
    """
    @param value: An xinetd number, maybe with a K or M suffix.
    @return: Its value, or L{None} for C{UNLIMITED} or garbage.
    """
    match = re.fullmatch(r"(\d+)([KkMm]?)", value)
    if match is None:
        return None
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return int(match.group(1)) * scale


def xinetdEntry(block: Block, defaults: dict[str, list[str]]) -> Converted:
    """
    Convert one xinetd C{service} block.

    @param block: The block.
    @param defaults: The C{defaults} block's values.
    @return: The service.
    """
    values = {key: list(defaults[key]) for key in _INHERITED if key in defaults}
    _apply(values, block.attributes)

    def one(key: str, default: str = "") -> str:
        words = values.get(key)
        return " ".join(words) if words else default

    serviceId = one("id", block.name)
    entry = Converted(serviceId, block.origin, block.lines)
    if one("disable").lower() == "yes":
        entry.enabled = False
    if serviceId in defaults.get("disabled", []) or (
        "enabled" in defaults and serviceId not in defaults["enabled"]
    ):
        entry.enabled = False
    types = one("type").upper().split()
    flags = values.get("flags", [])
    if "RPC" in types:
        return entry.skip("Sun RPC services have no netd equivalent")
    if "TCPMUX" in types or "TCPMUXPLUS" in types:
        return entry.skip("TCPMUX services have no netd equivalent")
    socketType = one("socket_type")
    protocolName = {"stream": "tcp", "dgram": "udp"}.get(socketType)
    if protocolName is None:
        return entry.skip(
            f"socket_type {socketType or '(missing)'!r}: netd has stream and dgram only"
        )
    protocol = one("protocol", protocolName)
    if protocol != protocolName:
        return entry.skip(f"protocol {protocol!r} with socket_type {socketType!r}")
    port = servicePort(one("port") or block.name, protocol)
    if port is None:
        return entry.skip(
            f"no port: {block.name!r} is not in /etc/services and no port is set"
        )
    families = (4, 6) if "IPv6" in flags else (4,)
    interface = one("bind") or one("interface") or None
    entry.listen = listeners(socketType, families, port, interface)
    if "IPv6" in flags and interface is None:
        entry.remarks.append(
            "flags IPv6: an xinetd IPv6 socket also takes IPv4 clients; netd "
            "listens on tcp: and tcp6: (or udp: and udp6:) for the same effect"
        )
    for flag in flags:
        why = _FLAG_NOTES.get(flag, f"netd has no {flag}")
        if why:
            entry.notes.append(f"flags {flag}: {why}")
    own = {attribute for attribute, operator, words in block.attributes}
    for key in sorted(own, key=list(values).index):
        if key in _UNMAPPED:
            entry.notes.append(f"{key}: {_UNMAPPED[key]}")
        elif key not in _CONVERTED:
            entry.notes.append(f"{key}: unknown to the converter")
    _xinetdLimits(entry, values)
    if "INTERNAL" in types:
        if block.name not in BUILTINS:
            return entry.skip(
                f"xinetd's internal {block.name!r} service has no netd "
                f"equivalent (netd has {', '.join(BUILTINS)})"
            )
        entry.type = block.name
        return entry
    redirect = values.get("redirect")
    if redirect:
        if socketType != "stream" or len(redirect) != 2:
            return entry.skip(
                "redirect: expected a TCP service and redirect = HOST PORT"
            )
        entry.type = "forward"
        entry.settings["to"] = f"tcp:{_escape(redirect[0])}:{redirect[1]}"
        return entry
    server = one("server")
    if not server:
        return entry.skip("no server, redirect or INTERNAL type")
    entry.type = "exec"
    entry.settings["command"] = _program(
        server, values.get("server_args", []), entry, "NAMEINARGS" in flags
    )
    entry.settings["mode"] = "wait" if one("wait").lower() == "yes" else "nowait"
    _account(entry, one("user") or None, one("group") or None)
    nice = one("nice")
    if re.fullmatch(r"-?\d+", nice):
        entry.settings["nice"] = int(nice)
    for old, new in (
        ("rlimit_as", "rlimit_as"),
        ("rlimit_cpu", "rlimit_cpu"),
        ("rlimit_files", "rlimit_nofile"),
    ):
        if old in values:
            limit = _number(one(old))
            if limit is not None:
                entry.settings[new] = limit
    environment = dict(
        word.split("=", 1) for word in values.get("env", []) if "=" in word
    )
    if environment:
        entry.settings["env"] = environment
    return entry


def _within(inner: Any, outer: Any) -> bool:
    """
    @param inner: A network.
    @param outer: Another.
    @return: Whether C{inner} lies inside C{outer} (same family).
    """
    return bool(inner.version == outer.version and inner.subnet_of(outer))


def _xinetdLimits(entry: Converted, values: dict[str, list[str]]) -> None:
    """
    Convert the access and rate attributes of an xinetd service.

    @param entry: The service (its C{limits} and notes are filled).
    @param values: The service's attribute values.
    """
    if "only_from" in values:
        if values["only_from"]:
            allow = convertAddresses(values["only_from"], entry, "only_from")
            if "0.0.0.0/0" in allow:
                allow = []
            if allow:
                entry.limits["allow"] = allow
        else:
            entry.limits["deny"] = ["0.0.0.0/0", "::/0"]
            entry.notes.append("only_from with no value: served to nobody")
    if values.get("no_access"):
        deny = convertAddresses(values["no_access"], entry, "no_access")
        if deny:
            denied = entry.limits.get("deny", [])
            entry.limits["deny"] = denied + [d for d in deny if d not in denied]
        allowed = [ipaddress.ip_network(a) for a in entry.limits.get("allow", [])]
        for network in (ipaddress.ip_network(d) for d in deny):
            inside = [a for a in allowed if _within(a, network)]
            if inside:
                entry.notes.append(
                    f"no_access {network} holds only_from {inside[0]}: xinetd "
                    "lets the more specific rule win, netd's deny always wins"
                )
    for key, limit in (
        ("instances", "max_sessions"),
        ("per_source", "max_sessions_per_peer"),
    ):
        if key in values:
            number = _number(" ".join(values[key]))
            if number is not None and number > 0:
                entry.limits[limit] = min(number, 1_000_000)
            elif " ".join(values[key]).upper() == "UNLIMITED":
                entry.limits[limit] = 1_000_000
    if "cps" in values:
        words = values["cps"]
        rate = _number(words[0]) if words else None
        if rate:
            entry.limits["max_connections_per_second"] = rate
            entry.limits["connection_burst"] = rate
            wait = f" for {words[1]} seconds" if len(words) > 1 else ""
            entry.remarks.append(
                f"cps {' '.join(words)}: xinetd switches the whole service off"
                f"{wait} past the rate; netd only refuses the connections over "
                "it (per address: max_connections_per_second_per_peer)"
            )
