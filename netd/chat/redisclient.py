# -*- test-case-name: tests.test_redisclient -*-
"""
A small Redis client for the reactor: RESP on hiredis's parser, pipelined,
with a reconnecting connection that logs state changes, not attempts.

Why not C{txredisapi}: it blocks nothing either, but it reconnects on its
own schedule (a fixed delay), logs every attempt, hides the pipeline behind
a per-command Deferred chain, and parses RESP in Python; netd's hub needs
its own reconnect policy (capped exponential backoff with jitter, one log
line per state change), a watchdog that drops a connection Redis stopped
answering, and a whole turn's commands written in one C{write}. hiredis's
C{Reader} (C) does the parsing and C{pack_command} the encoding; the rest
is this module. C{bench/redis_client.py} measures both.

L{RedisProtocol} is one connection: L{RedisProtocol.execute} sends a
command, L{RedisProtocol.pipeline} several in one write; replies come back
in order. L{RedisConnection} keeps one connection up (L{HubAddress} says
where), authenticates, selects the database and calls its owner back when
the connection is ready or lost.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from attrs import frozen
from twisted.application.internet import backoffPolicy
from twisted.internet.abstract import isIPAddress as isIPv4Address
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

#: A reply Redis sent as an error (C{-ERR ...}); also found inside arrays.
ReplyError = hiredis.ReplyError

Command = Sequence[Any]


class RedisConnectionLost(ConnectionLost):
    """
    The connection closed before Redis answered.
    """


@frozen
class HubAddress:
    """
    Where a Redis server is, from a C{hub} URL.

    @ivar url: The URL as configured.
    @ivar scheme: C{"redis"}, C{"rediss"} (TLS) or C{"unix"}.
    @ivar host: The host name or address (C{""} for C{unix}).
    @ivar port: The TCP port.
    @ivar path: The UNIX socket's path (C{""} otherwise).
    @ivar db: The database number.
    @ivar user: The ACL user name, or C{""} for the default user.
    """

    url: str
    scheme: str
    host: str = ""
    port: int = 6379
    path: str = ""
    db: int = 0
    user: str = ""

    def endpoint(self, reactor: Any, timeout: float, caFile: str = "") -> Any:
        """
        @param reactor: The reactor.
        @param timeout: Seconds a connection attempt may take.
        @param caFile: For C{rediss}: a PEM file of the certificate
            authorities to trust (C{""}: the system's).
        @return: An L{IStreamClientEndpoint} for the server.
        """
        if self.scheme == "unix":
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        endpoint: Any
        if isIPv4Address(self.host):
            endpoint = TCP4ClientEndpoint(reactor, self.host, self.port, timeout)
        elif isIPv6Address(self.host):
            endpoint = TCP6ClientEndpoint(reactor, self.host, self.port, timeout)
        else:
            endpoint = HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)
        if self.scheme == "rediss":
            from twisted.internet.ssl import Certificate, optionsForClientTLS

            trustRoot: Any = None
            if caFile:
                with open(caFile, "rb") as f:
                    trustRoot = Certificate.loadPEM(f.read())
            options = optionsForClientTLS(self.host, trustRoot=trustRoot)
            endpoint = wrapClientTLS(options, endpoint)
        return endpoint

    def display(self) -> str:
        """
        @return: The address for log lines (never a password: there is none
            in the URL).
        """
        return self.url


def parseHubAddress(url: str) -> HubAddress:
    """
    Read a C{hub} URL: C{redis://[user@]host[:port][/db]},
    C{rediss://...} (TLS), or C{unix:///path[?db=N]}.

    @param url: The URL.
    @return: The address.
    @raise ValueError: If it is not one of those, or carries a password.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"expected redis://HOST[:PORT][/DB], rediss://... or unix:///PATH, got {url!r}"
        )
    if parts.password is not None:
        raise ValueError(
            "a password does not belong in the URL (it would show in logs and "
            "--check): put it in the file named by hub_password_file"
        )
    user = unquote(parts.username or "")
    query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
    dbText = query.pop("db", "")
    if query:
        raise ValueError(f"unknown URL parameter(s) {', '.join(sorted(query))}")
    if scheme == "unix":
        if not parts.path.startswith("/"):
            raise ValueError(f"expected unix:///ABSOLUTE/PATH, got {url!r}")
        return HubAddress(url, scheme, path=parts.path, db=_db(dbText), user=user)
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"no host in {url!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    path = parts.path.strip("/")
    if path and dbText:
        raise ValueError(f"the database is given twice in {url!r}")
    return HubAddress(url, scheme, host, port, db=_db(path or dbText), user=user)


def _db(text: str) -> int:
    """
    @param text: A database number, or C{""} for 0.
    @return: It.
    @raise ValueError: If it is not a number from 0 to 65535.
    """
    if not text:
        return 0
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"expected a database number (0 to 65535), got {text!r}")
    return int(text)


def readPassword(path: str) -> str:
    """
    Read a password file: the password on its first line.

    @param path: The file.
    @return: The password.
    @raise ValueError: If it cannot be read or its first line is empty.
    """
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', e)}") from None
    if not line:
        raise ValueError(f"{path}: the first line (the password) is empty")
    return line


class RedisProtocol(Protocol):
    """
    One Redis connection: commands go out pipelined, replies come back in
    order and fire the L{Deferred}s in order.

    A reply that is a Redis error fires L{execute}'s L{Deferred} with a
    L{Failure} of L{ReplyError}; L{pipeline} fires with the list of replies,
    errors among them as L{ReplyError} values. Unparseable bytes from the
    server drop the connection.

    @ivar clock: An L{IReactorTime} provider, for L{oldestAge}.
    """

    transport: Any

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._reader = hiredis.Reader()
        self._waiting: deque[list[Any]] = deque()
        self.lost = False

    def execute(self, *command: bytes | str | int | float) -> Deferred[Any]:
        """
        Send one command.

        @param command: The command and its arguments.
        @return: A L{Deferred} firing with the reply.
        """
        d: Deferred[Any] = Deferred()
        if self.lost:
            d.errback(RedisConnectionLost())
            return d
        self._waiting.append([d, 1, None, self.clock.seconds(), True])
        self.transport.write(hiredis.pack_command(command))  # type: ignore[arg-type]
        return d

    def pipeline(self, commands: Sequence[Command]) -> Deferred[list[Any]]:
        """
        Send commands in one write.

        @param commands: The commands.
        @return: A L{Deferred} firing with their replies, in order.
        """
        d: Deferred[list[Any]] = Deferred()
        if self.lost:
            d.errback(RedisConnectionLost())
            return d
        if not commands:
            d.callback([])
            return d
        self._waiting.append([d, len(commands), [], self.clock.seconds(), False])
        pack = hiredis.pack_command
        self.transport.write(b"".join([pack(tuple(c)) for c in commands]))
        return d

    def oldestAge(self) -> float:
        """
        @return: Seconds the oldest unanswered command has waited (0 if none).
        """
        if not self._waiting:
            return 0.0
        return self.clock.seconds() - self._waiting[0][3]

    def pending(self) -> int:
        """
        @return: How many L{execute}/L{pipeline} calls wait for replies.
        """
        return len(self._waiting)

    def dataReceived(self, data: bytes) -> None:
        """
        Parse replies and fire whoever waits for them.

        @param data: Bytes from Redis.
        """
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError:
                self.transport.abortConnection()
                return
            if reply is False:
                return
            if not waiting:
                # A reply nobody asked for: the stream is out of step.
                self.transport.abortConnection()
                return
            slot = waiting[0]
            if slot[4]:
                waiting.popleft()
                if isinstance(reply, ReplyError):
                    slot[0].errback(Failure(reply))
                else:
                    slot[0].callback(reply)
                continue
            slot[2].append(reply)
            slot[1] -= 1
            if slot[1] == 0:
                waiting.popleft()
                slot[0].callback(slot[2])

    def connectionLost(self, reason: Failure = ConnectionLost()) -> None:  # type: ignore[assignment]
        """
        Fail every command still waiting.

        @param reason: Why.
        """
        self.lost = True
        waiting, self._waiting = self._waiting, deque()
        for slot in waiting:
            slot[0].errback(RedisConnectionLost(str(reason.value)))


def describeFailure(failure: Failure) -> str:
    """
    @param failure: Why a connection attempt or a connection failed.
    @return: A few words.
    """
    value = failure.value
    text = str(value).strip() or type(value).__name__
    return text.replace("\n", " ")[:300].rstrip(". ")


class RedisConnection:
    """
    Keeps one connection to Redis up: connects, authenticates, selects the
    database, and when the connection fails or closes, tries again after a
    capped exponential backoff with jitter (Twisted's C{backoffPolicy}).

    Twisted's C{ClientService} does the reconnecting part too, but logs
    every attempt; this logs once per change of state (the first failure,
    a different failure, back up) so that Redis being down for an hour is
    a few lines, not thousands.

    A watchdog drops the connection when a command has waited longer than
    C{timeout} (a stopped or partitioned Redis), so that buffers stay
    bounded and the next attempt starts.

    @ivar protocol: The ready connection, or L{None}.
    @ivar attempts: Failed attempts since the last success.
    @ivar connects: Times a connection became ready.
    """

    _log = Logger(namespace="netd.chat.redis")

    def __init__(
        self,
        reactor: Any,
        address: HubAddress,
        name: str,
        role: str,
        onReady: Callable[[RedisProtocol], Any],
        onLost: Callable[[], None],
        password: str = "",
        caFile: str = "",
        timeout: float = 5.0,
        retryMax: float = 10.0,
        blockAllowance: float = 0.0,
        jitter: Callable[[], float] | None = None,
        quiet: bool = False,
    ) -> None:
        """
        @param reactor: The reactor.
        @param address: Where Redis is.
        @param name: The chat service's name, for log lines.
        @param role: What the connection is for (C{"commands"}, C{"reader"}).
        @param onReady: Called with the protocol once it is ready; may return
            a L{Deferred} (the connection counts as ready once it fires).
        @param onLost: Called when a ready connection is lost.
        @param password: The password (C{""}: none).
        @param caFile: For C{rediss}: the certificate authorities' file.
        @param timeout: Seconds a command may wait before the connection is
            dropped (and a connection attempt may take).
        @param retryMax: The longest pause between attempts (before jitter).
        @param blockAllowance: Seconds a blocking command may add to
            C{timeout} (the reader's C{XREAD BLOCK}).
        @param jitter: Random seconds added to each pause.
        @param quiet: Log nothing (a second connection to the same server,
            whose state the first one's log lines already tell).
        """
        self.reactor = reactor
        self.address = address
        self.name = name
        self.role = role
        self.onReady = onReady
        self.onLost = onLost
        self.password = password
        self.caFile = caFile
        self.timeout = timeout
        self.blockAllowance = blockAllowance
        self.quiet = quiet
        self.retryMax = retryMax
        self._connecting: Deferred[Any] | None = None
        self._lastReason: Failure | None = None
        rng = random.Random()
        self._policy = backoffPolicy(
            initialDelay=0.1,
            maxDelay=retryMax,
            factor=2.0,
            jitter=jitter if jitter is not None else (lambda: rng.random() * 0.25),
        )
        self.protocol: RedisProtocol | None = None
        self._candidate: RedisProtocol | None = None
        self.attempts = 0
        self.connects = 0
        self._running = False
        self._retry: Any = None
        self._watchdog: Any = None
        self._problem: str | None = None

    def start(self) -> None:
        """
        Connect (and keep connecting).
        """
        if self._running:
            return
        self._running = True
        self._connect()
        self._watchdog = self.reactor.callLater(self.timeout / 4, self._watch)

    def stop(self) -> None:
        """
        Close the connection and stop trying.
        """
        self._running = False
        for call in (self._retry, self._watchdog):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._watchdog = None
        if self._connecting is not None:
            self._connecting.cancel()
        for protocol in (self.protocol, self._candidate):
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abortConnection()
        self.protocol = self._candidate = None

    def _connect(self) -> None:
        self._retry = None
        if not self._running:
            return
        try:
            endpoint = self.address.endpoint(self.reactor, self.timeout, self.caFile)
        except OSError as e:
            self._failed(f"cannot read hub_ca_file {self.caFile}: {e.strerror}")
            return
        factory = Factory.forProtocol(lambda: _Connected(self, self.reactor))
        factory.noisy = False
        d = self._connecting = endpoint.connect(factory)
        d.addCallbacks(self._connected, self._connectFailed)

    def _connectFailed(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(CancelledError):
            return
        self._failed(f"cannot connect: {describeFailure(failure)}")

    def _connected(self, protocol: RedisProtocol) -> None:
        self._connecting = None
        if not self._running:
            protocol.transport.abortConnection()
            return
        self._candidate = protocol
        commands: list[Command] = []
        if self.password:
            if self.address.user:
                commands.append(("AUTH", self.address.user, self.password))
            else:
                commands.append(("AUTH", self.password))
        if self.address.db:
            commands.append(("SELECT", self.address.db))
        commands.append(("CLIENT", "SETNAME", f"netd-{self.role}"))
        commands.append(("PING",))
        protocol.pipeline(commands).addCallback(self._prepared, protocol).addErrback(
            self._prepareFailed, protocol
        )

    def _prepared(self, replies: list[Any], protocol: RedisProtocol) -> Any:
        for reply in replies:
            if isinstance(reply, ReplyError):
                text = str(reply)
                if self.password or "NOAUTH" in text or "WRONGPASS" in text:
                    if "NOAUTH" in text:
                        text += " (set hub_password_file)"
                    elif "WRONGPASS" in text or "invalid" in text.lower():
                        text += " (check hub_password_file and the user in hub)"
                raise _Refused(text)
        result = self.onReady(protocol)
        if isinstance(result, Deferred):
            return result.addCallback(lambda _: self._ready(protocol))
        self._ready(protocol)
        return None

    def _ready(self, protocol: RedisProtocol) -> None:
        if protocol.lost:
            return
        self._candidate = None
        self.protocol = protocol
        self.connects += 1
        if (self._problem is not None or self.connects == 1) and not self.quiet:
            self._log.info(
                "{service}: Redis hub {address} connected ({role}){after}",
                service=self.name,
                address=self.address.display(),
                role=self.role,
                after=(
                    f" after {self.attempts} failed attempts" if self.attempts else ""
                ),
                hubEvent="connected",
            )
        self._problem = None
        self.attempts = 0

    def _prepareFailed(self, failure: Failure, protocol: RedisProtocol) -> None:
        if protocol.transport is not None:
            protocol.transport.abortConnection()
        if failure.check(_Refused):
            self._failed(f"refused: {failure.value}")
        else:
            self._failed(f"connection failed: {self._why(failure)}")

    def _why(self, failure: Failure) -> str:
        text = describeFailure(failure)
        if self.address.scheme == "rediss" and (
            "SSL" in text or "certificate" in text or "TLS" in text or "tls" in text
        ):
            text = f"TLS error ({text}); check hub (rediss://) and hub_ca_file"
        elif self.address.scheme == "rediss":
            text += " (is this a TLS port? check hub and hub_ca_file)"
        return text

    def lostConnection(self, protocol: RedisProtocol, reason: Failure) -> None:
        """
        A connection closed (called by the protocol).

        @param protocol: Which.
        @param reason: Why.
        """
        if protocol is self._candidate:
            self._candidate = None
            # _prepareFailed reports it, through the failed pipeline; a TLS
            # failure arrives here first, so keep its reason.
            self._lastReason = reason
            return
        if protocol is not self.protocol:
            return
        self.protocol = None
        if self._running and not self.quiet:
            self._log.warn(
                "{service}: Redis hub {address} connection lost ({role}): {why}; "
                "serving local members, reconnecting",
                service=self.name,
                address=self.address.display(),
                role=self.role,
                why=describeFailure(reason),
                hubEvent="lost",
            )
            self._problem = "lost"
        self.onLost()
        self._schedule()

    def _failed(self, problem: str) -> None:
        self.attempts += 1
        reason = self._lastReason
        if reason is not None:
            self._lastReason = None
            if problem.startswith("connection failed"):
                problem = f"connection failed: {self._why(reason)}"
        kind = problem.split(":", 1)[0]
        if self._problem != kind and self._running and not self.quiet:
            self._log.error(
                "{service}: Redis hub {address} ({role}) {problem}; chat serves "
                "local members only, retrying with backoff (at most every "
                "{retryMax:g}s)",
                service=self.name,
                address=self.address.display(),
                role=self.role,
                problem=problem,
                retryMax=self.retryMax,
                hubEvent="unavailable",
            )
            self._problem = kind
        self._schedule()

    def _schedule(self) -> None:
        if self._running and self._retry is None:
            self._retry = self.reactor.callLater(
                self._policy(self.attempts), self._connect
            )

    def _watch(self) -> None:
        self._watchdog = None
        if not self._running:
            return
        for protocol in (self.protocol, self._candidate):
            if protocol is None or protocol.transport is None:
                continue
            if protocol.oldestAge() > self.timeout + self.blockAllowance:
                if not self.quiet:
                    self._log.warn(
                        "{service}: Redis hub {address} did not answer for {timeout:g}s "
                        "({role}); dropping the connection",
                        service=self.name,
                        address=self.address.display(),
                        role=self.role,
                        timeout=self.timeout,
                        hubEvent="timeout",
                    )
                protocol.transport.abortConnection()
            elif protocol is self.protocol and not protocol.pending():
                protocol.execute("PING").addErrback(lambda f: None)
        self._watchdog = self.reactor.callLater(self.timeout / 4, self._watch)


class _Refused(Exception):
    """
    Redis refused the connection's set-up (authentication, database).
    """


class _Connected(RedisProtocol):
    """
    A L{RedisProtocol} that tells its L{RedisConnection} when it closes.
    """

    def __init__(self, owner: RedisConnection, clock: Any) -> None:
        super().__init__(clock)
        self.owner = owner

    def connectionLost(self, reason: Failure = ConnectionLost()) -> None:  # type: ignore[assignment]
        # The owner first: a failed set-up's pipeline errback (fired by
        # super) then knows the reason (a TLS error, say).
        self.owner.lostConnection(self, reason)
        super().connectionLost(reason)
