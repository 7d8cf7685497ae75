# -*- test-case-name: tests.test_chat -*-
"""
The chat service: rooms shared by TCP, TLS, UNIX, UDP and browser clients.

One service instance has one L{ChatServer<netd.chat.commands.ChatServer>}
(its settings and its hub), shared by its stream listeners
(L{netd.chat.tcp}), its UDP listeners (L{netd.chat.udp}) and the web page an
http service may mount (L{netd.chat.web}, through C{buildWebResource}).
Session limits (C{max_sessions}, C{max_sessions_per_peer}, C{idle_timeout})
come from the service's C{limits} table, as for every service.
"""

from __future__ import annotations

import weakref
from typing import Any

from netd.chat.commands import ChatServer, ChatSettings
from netd.chat.hub import IChatHub
from netd.chat.redishub import RedisHub
from netd.chat.redisclient import parseHubAddress, readPassword
from netd.chat.tcp import ChatFactory
from netd.chat.text import checkName, sanitise
from netd.chat.udp import ChatDatagramProtocol
from netd.chat.web import ChatWebResource
from netd.counters import Series, series
from netd.descriptions import DatagramListener
from netd.probe import ProbeFailed, ProbeTarget, streamOnly, why
from netd.servicetype import ServiceContext, ServiceType
from netd.settings import Setting, boolean, describe, integer, number

_servers: weakref.WeakKeyDictionary[ServiceContext, ChatServer] = (
    weakref.WeakKeyDictionary()
)


def serverFor(context: ServiceContext) -> ChatServer:
    """
    The chat server of a service instance, made on first use, so that its
    TCP, UDP and web front ends share one hub.

    @param context: The service instance.
    @return: Its L{ChatServer}.
    """
    server = _servers.get(context)
    if server is None:
        settings = ChatSettings.fromMapping(context.settings)
        server = _servers[context] = ChatServer(
            context.name,
            settings,
            context.reactor,
            hub=buildHub(context.name, settings, context.reactor),
            policy=context.policy,
            idleTimeout=context.policy.limits.idleTimeout,
        )
    return server


def metrics(context: ServiceContext) -> list[Series]:
    """
    A chat service's messages, drops, members and rooms, for
    L{netd.metrics}.

    A hub other than the local one reports what it counts through the same
    attributes (C{published}, C{delivered}, C{memberCount()},
    C{roomCount()}), and a shared hub its link: C{connected} (a bool),
    C{reconnects} and C{lostMessages} (counts since start); those it lacks
    are left out.

    @param context: The service instance.
    @return: The series (none before its server is built).
    """
    server = _servers.get(context)
    if server is None:
        return []
    name = context.name
    hub: Any = server.hub
    result = []
    for attribute, metric, help in (
        (
            "published",
            "netd_chat_messages_published_total",
            "Chat events published to rooms (messages, joins, parts, private messages)",
        ),
        (
            "delivered",
            "netd_chat_messages_delivered_total",
            "Chat events handed to members, once per event and member",
        ),
    ):
        value = getattr(hub, attribute, None)
        if value is not None:
            result.append(series(metric, "counter", help, value, service=name))
    for reason in ("flood", "too_long"):
        result.append(
            series(
                "netd_chat_messages_dropped_total",
                "counter",
                "Chat lines refused, never published (flood control, over-long lines)",
                server.linesRefused[reason],
                service=name,
                reason=reason,
            )
        )
    for reason in sorted(set(server.kicks) | {"slow_consumer", "flood"}):
        result.append(
            series(
                "netd_chat_clients_dropped_total",
                "counter",
                "Chat clients disconnected by netd (slow consumer: output pending beyond the bound, flood, ...)",
                server.kicks[reason],
                service=name,
                reason=reason,
            )
        )
    for attribute, metric, kind, help in (
        (
            "connected",
            "netd_chat_hub_connected",
            "gauge",
            "Whether the chat hub's shared backend is connected (1) or not (0)",
        ),
        (
            "reconnects",
            "netd_chat_hub_reconnects_total",
            "counter",
            "Times the chat hub reconnected to its shared backend",
        ),
        (
            "lostMessages",
            "netd_chat_hub_lost_messages_total",
            "counter",
            "Chat events the hub could not deliver through its shared backend",
        ),
    ):
        value = getattr(hub, attribute, None)
        if value is not None:
            result.append(series(metric, kind, help, int(value), service=name))
    for method, metric, help in (
        ("memberCount", "netd_chat_members", "Chat room memberships now"),
        (
            "roomCount",
            "netd_chat_rooms",
            "Chat rooms kept now (with members or history)",
        ),
    ):
        counter = getattr(hub, method, None)
        if counter is not None:
            result.append(series(metric, "gauge", help, counter(), service=name))
    return result


def buildHub(name: str, settings: ChatSettings, reactor: Any) -> IChatHub | None:
    """
    The shared hub a chat service's settings ask for, started once the
    reactor runs and stopped before it shuts down (a service type has no
    start and stop of its own; this builds objects only, as C{makeService}
    must).

    @param name: The service instance's name.
    @param settings: Its settings.
    @param reactor: The reactor.
    @return: A L{RedisHub}, or L{None} for the in-process default.
    """
    if not settings.hub:
        return None
    hub = RedisHub(
        reactor,
        parseHubAddress(settings.hub),
        name,
        prefix=settings.hubPrefix,
        password=(
            readPassword(settings.hubPasswordFile) if settings.hubPasswordFile else ""
        ),
        caFile=settings.hubCaFile,
        historyLines=settings.historyLines,
        maxRooms=settings.maxRooms,
        lease=settings.hubLease,
        timeout=settings.hubTimeout,
        maxDelay=settings.hubMaxDelay,
        bufferEvents=settings.hubBuffer,
        streamLength=settings.hubStreamLength,
        retryMax=settings.hubRetryMax,
    )
    reactor.callWhenRunning(hub.start)
    reactor.addSystemEventTrigger("before", "shutdown", hub.stop)
    return hub


def hubUrl(value: Any) -> str:
    """
    Accept a C{hub}: C{""} or a Redis URL.

    @param value: The raw value.
    @return: It.
    @raise ValueError: If it is neither.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    if value:
        parseHubAddress(value)
    return value


def readableFile(value: Any) -> str:
    """
    Accept a file that must be readable now (C{""}: none).

    @param value: The raw value.
    @return: The path.
    @raise ValueError: If it is not a string or cannot be read.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    if value:
        try:
            open(value, "rb").close()
        except OSError as e:
            raise ValueError(f"cannot read {value}: {e.strerror}") from None
    return value


def passwordFile(value: Any) -> str:
    """
    Accept a password file: readable, the password on its first line.

    @param value: The raw value.
    @return: The path.
    @raise ValueError: If it cannot be read or holds no password.
    """
    value = readableFile(value)
    if value:
        readPassword(value)
    return value


def keyPrefix(value: Any) -> str:
    """
    Accept a Redis key prefix: 1 to 64 letters, digits, C{.}, C{-}, C{_}.

    @param value: The raw value.
    @return: It.
    @raise ValueError: If it is not.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    if not 1 <= len(value) <= 64 or not all(
        c.isascii() and (c.isalnum() or c in ".-_") for c in value
    ):
        raise ValueError("expected 1 to 64 letters, digits, '.', '-' or '_'")
    return value


def needsProcess(settings: Any) -> bool:
    """
    Whether a chat service must run in one process: yes with the
    in-process hub, no with a shared one (every worker serves it).

    @param settings: Its settings.
    @return: C{True} unless C{hub} is set.
    """
    return not settings.get("hub")


def buildStreamFactory(context: ServiceContext) -> ChatFactory:
    """
    @param context: The service instance.
    @return: The factory of line protocols for its stream listeners.
    """
    return ChatFactory(serverFor(context))


def buildDatagramProtocol(
    context: ServiceContext, listener: DatagramListener
) -> ChatDatagramProtocol:
    """
    @param context: The service instance.
    @param listener: The UDP listener.
    @return: The protocol for it.
    """
    return ChatDatagramProtocol(context, serverFor(context))


def buildWebResource(context: ServiceContext) -> ChatWebResource:
    """
    @param context: The service instance.
    @return: The page and WebSocket an http service mounts.
    """
    return ChatWebResource(serverFor(context))


def greeting(value: Any) -> str:
    """
    Accept the greeting: one line of printable text.

    @param value: The raw value.
    @return: The text.
    @raise ValueError: If it is not a string of 1 to 200 printable
        characters.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    if not value or len(value) > 200 or sanitise(value) != value:
        raise ValueError("expected 1 to 200 printable characters on one line")
    return value


def roomName(value: Any) -> str:
    """
    Accept a room name, or C{""} for none.

    @param value: The raw value.
    @return: The name, without a leading C{#}.
    @raise ValueError: If it is not a valid room name.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    if not value:
        return ""
    return checkName(value.removeprefix("#"), 64, "room name")


_defaults = ChatSettings()


def greetingProbe(target: ProbeTarget) -> str:
    """
    A line-based service (chat): it greets a new client with a line.

    @param target: The listener.
    @return: The greeting.
    @raise ProbeFailed: If no line comes.
    """
    streamOnly(target)
    with target.connect() as skt:
        try:
            line = skt.makefile("rb").readline(4096)
        except OSError as e:
            raise ProbeFailed(f"no greeting: {why(e)}") from None
    if not line.endswith(b"\n"):
        raise ProbeFailed(f"no greeting line within {target.timeout:g}s")
    return f"greeted: {line.decode('utf-8', 'replace').strip()[:60]!r}"


chat = ServiceType(
    name="chat",
    description="multi-user line chat with rooms, over TCP, TLS, UDP and a browser page",
    settings=(
        Setting(
            "greeting", _defaults.greeting, greeting, "the first line a client gets"
        ),
        Setting(
            "default_room",
            _defaults.defaultRoom,
            roomName,
            'the room a client joins once it has a nickname ("": none)',
        ),
        Setting(
            "history_lines",
            _defaults.historyLines,
            integer(0, 1000),
            "lines of a room replayed to whoever joins it (0: none)",
        ),
        Setting(
            "max_rooms",
            _defaults.maxRooms,
            integer(1, 100_000),
            "most rooms at once (an empty room is forgotten when one is needed)",
        ),
        Setting(
            "max_line_length",
            _defaults.maxLineLength,
            integer(64, 65536),
            "longest line accepted, in bytes; longer ones are refused",
        ),
        Setting(
            "max_nick_length",
            _defaults.maxNickLength,
            integer(1, 64),
            "longest nickname, in characters",
        ),
        Setting(
            "max_room_length",
            _defaults.maxRoomLength,
            integer(1, 64),
            "longest room name, in characters",
        ),
        Setting(
            "flood_lines_per_second",
            _defaults.floodLinesPerSecond,
            number(0.01, 1e9),
            "lines per second one client may send, sustained",
        ),
        Setting(
            "flood_lines_burst",
            _defaults.floodLinesBurst,
            integer(1, 1_000_000_000),
            "lines one client may send back to back",
        ),
        Setting(
            "flood_bytes_per_second",
            _defaults.floodBytesPerSecond,
            number(1, 1e12),
            "bytes per second one client may send, sustained",
        ),
        Setting(
            "flood_bytes_burst",
            _defaults.floodBytesBurst,
            integer(1, 2**40),
            "bytes one client may send back to back (at least one longest line)",
        ),
        Setting(
            "max_refusals",
            _defaults.maxRefusals,
            integer(1, 1_000_000_000),
            "refused lines in a row (too long, flooding) before a client is disconnected",
        ),
        Setting(
            "max_pending_output",
            _defaults.maxPendingOutput,
            integer(1024, 2**30),
            "bytes waiting for a client that does not read before it is disconnected",
        ),
        Setting(
            "udp_member_timeout",
            _defaults.udpMemberTimeout,
            number(1, 86400 * 7),
            "seconds of silence after which a UDP member leaves",
        ),
        Setting(
            "udp_credit_limit",
            _defaults.udpCreditLimit,
            integer(64, 2**30),
            "most bytes a UDP source may bank (netd never sends a source more than it sent)",
        ),
        Setting(
            "log_messages",
            _defaults.logMessages,
            boolean,
            "log the text of messages (off: only joins, parts, nicks and kicks)",
        ),
        Setting(
            "web_check_origin",
            _defaults.webCheckOrigin,
            boolean,
            "browsers may open the WebSocket only from a page of the same origin",
        ),
        Setting(
            "hub",
            _defaults.hub,
            hubUrl,
            'where the rooms are: "" in this process (a chat service then runs in '
            'one worker), or Redis, "redis://HOST:PORT/DB", "rediss://..." (TLS) or '
            '"unix:///PATH", shared by every worker and host using it',
        ),
        Setting(
            "hub_prefix",
            _defaults.hubPrefix,
            keyPrefix,
            "first part of every Redis key, so that several netd clusters can share "
            "one Redis",
        ),
        Setting(
            "hub_password_file",
            _defaults.hubPasswordFile,
            passwordFile,
            "file whose first line is the Redis password (the user goes in the URL, "
            'redis://USER@HOST); "": none',
        ),
        Setting(
            "hub_ca_file",
            _defaults.hubCaFile,
            readableFile,
            'for rediss://: PEM file of the certificate authorities to trust ("": '
            "the system's)",
        ),
        Setting(
            "hub_lease",
            _defaults.hubLease,
            number(1, 3600),
            "seconds a crashed netd's nicknames and members stay in Redis (a live "
            "one renews them every third of it)",
        ),
        Setting(
            "hub_timeout",
            _defaults.hubTimeout,
            number(0.1, 600),
            "seconds Redis may leave a command unanswered before netd drops the "
            "connection and connects again",
        ),
        Setting(
            "hub_max_delay",
            _defaults.hubMaxDelay,
            number(0.001, 60),
            "longest a message waits for Redis before this netd's own members get it "
            "anyway",
        ),
        Setting(
            "hub_buffer",
            _defaults.hubBuffer,
            integer(1, 10_000_000),
            "most events kept for Redis while it is slow or down; beyond, the oldest "
            "are delivered locally only, and counted in a log line",
        ),
        Setting(
            "hub_stream_length",
            _defaults.hubStreamLength,
            integer(10, 10_000_000),
            "entries (one per room per reactor turn) Redis keeps per room, about",
        ),
        Setting(
            "hub_retry_max",
            _defaults.hubRetryMax,
            number(0.1, 3600),
            "longest pause between attempts to reach Redis (exponential backoff with "
            "jitter)",
        ),
    ),
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=buildDatagramProtocol,
    buildWebResource=buildWebResource,
    perProcess=needsProcess,
    probe=greetingProbe,
    metrics=metrics,
)
