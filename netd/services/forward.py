# -*- test-case-name: tests.test_forward -*-
"""
The forward service (xinetd's C{redirect}): every connection, or every
datagram, goes on to one target fixed by the configuration.

TCP: on accept, L{ForwardServer} stops reading from the client and connects
to C{to}, a Twisted client endpoint description (C{tcp:}, C{ssl:},
C{unix:}) parsed with L{clientFromString}. Once connected, the two
transports are spliced: each is registered as the other's streaming
producer, so a slow reader on one side pauses reading on the other (netd
buffers at most about one socket read plus the transport's high-water
mark per direction), and a half-close on one side is passed on as
C{loseWriteConnection} to the other. Twisted's
L{twisted.protocols.portforward} is the same idea in a few lines but has
neither flow control nor half-close, and connects with no timeout, so a
fast sender to a slow receiver makes it buffer without bound; hence this
module rather than a subclass of it. A target that refuses, cannot be
reached or does not answer within C{connect_timeout} ends the session with
a reason in words (C{"target refused: connection refused"}).

With C{proxy_protocol = "v2"} the first bytes the target sees are a PROXY
protocol version 2 header (L{proxyV2Header}) naming the real client.

UDP: L{ForwardDatagram} keeps one connected UDP socket to C{to_udp} per
client source address and port (L{UDPMapping}); what the target sends on
it goes back to that client only, through a L{ReplyGuard}. A mapping is
forgotten after C{udp_idle_timeout} seconds without traffic, and at most
C{udp_max_mappings} exist at once.

It is not an open relay: the target is the configuration's, never the
client's.
"""

from __future__ import annotations

import ipaddress
import math
import struct
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.datagrams import ServiceDatagramProtocol
from netd.descriptions import DatagramListener
from netd.reflection import ReplyGuard, guardFor, guardSettings
from netd.servicetype import ServiceContext, ServiceType
from netd.settings import Problem, Setting, integer, number

STREAM_SCHEMES = ("tcp", "ssl", "unix")

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class _NoReactor:
    """
    Stands in for a reactor when a description is only being checked:
    L{clientFromString} stores its reactor and calls nothing on it.
    """


def streamTarget(value: Any) -> str:
    """
    A converter accepting a Twisted client endpoint description of a stream
    target, or C{""} (none).

    @param value: The TOML value.
    @return: The description, unchanged.
    @raise ValueError: If it is not a string, not one of L{STREAM_SCHEMES},
        or Twisted cannot parse it.
    """
    if not isinstance(value, str):
        raise ValueError(
            'must be a client endpoint description such as "tcp:HOST:PORT"'
        )
    if value == "":
        return value
    scheme = value.split(":", 1)[0]
    if scheme not in STREAM_SCHEMES:
        raise ValueError(
            f"{scheme!r} is not a stream target: use tcp:HOST:PORT, "
            "ssl:HOST:PORT or unix:PATH (UDP targets go in to_udp)"
        )
    try:
        clientFromString(_NoReactor(), value)
    except Exception as e:
        raise ValueError(f"{value!r} is not a valid {scheme}: endpoint ({e})")
    return value


def datagramTarget(value: Any) -> tuple[str, int] | None:
    """
    A converter accepting C{"udp:HOST:PORT"} (an IP address, not a name:
    a datagram target is resolved once, at config time), or C{""} (none).

    @param value: The TOML value.
    @return: C{(host, port)}, or L{None}.
    @raise ValueError: If it is not of that form.
    """
    if value == "":
        return None
    hint = 'must be "udp:HOST:PORT" with HOST an IP address, e.g. "udp:127.0.0.1:53"'
    if not isinstance(value, str) or not value.startswith("udp:"):
        raise ValueError(hint)
    host, _, port = value[4:].rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(hint)
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is out of range 1..65535")
    return host, number


def proxyProtocol(value: Any) -> str | None:
    """
    A converter accepting C{"v2"} or C{""}/C{false} (off).

    @param value: The TOML value.
    @return: C{"v2"} or L{None}.
    @raise ValueError: Otherwise.
    """
    if value in ("", False):
        return None
    if value == "v2":
        return "v2"
    raise ValueError('must be "v2" (PROXY protocol version 2) or "" (off)')


def proxyV2Header(source: Any, destination: Any) -> bytes:
    """
    The PROXY protocol version 2 header for a TCP connection (section 2.2
    of the HAProxy specification, C{proxy-protocol.txt}).

    @param source: The client's address (L{IPv4Address} or L{IPv6Address}).
    @param destination: netd's address the client connected to.
    @return: The binary header: C{PROXY} over TCP/IPv4 or TCP/IPv6 with the
        addresses and ports, or C{LOCAL} with no addresses when either is
        not an IP address (a UNIX socket listener).
    """
    if isinstance(source, (IPv4Address, IPv6Address)) and isinstance(
        destination, (IPv4Address, IPv6Address)
    ):
        src = ipaddress.ip_address(source.host.split("%", 1)[0])
        dst = ipaddress.ip_address(destination.host.split("%", 1)[0])
        if src.version != dst.version:
            if isinstance(src, ipaddress.IPv4Address):
                src = ipaddress.IPv6Address(f"::ffff:{src}")
            if isinstance(dst, ipaddress.IPv4Address):
                dst = ipaddress.IPv6Address(f"::ffff:{dst}")
        family = 0x11 if src.version == 4 else 0x21
        body = (
            src.packed + dst.packed + struct.pack("!HH", source.port, destination.port)
        )
        return PROXY_V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(body)) + body
    return PROXY_V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0)


def describeConnectFailure(reason: Failure, timeout: float) -> str:
    """
    Say in words why the target could not be connected to.

    @param reason: The connect failure.
    @param timeout: The connect timeout, in seconds.
    @return: E.g. C{"target refused: connection refused"}.
    """
    if reason.check(error.ConnectionRefusedError):
        return "target refused: connection refused"
    if reason.check(
        defer.TimeoutError,
        defer.CancelledError,
        error.ConnectingCancelledError,
        error.TimeoutError,
    ):
        return f"target timed out: not connected after {timeout:g}s"
    if reason.check(error.DNSLookupError):
        return "target unreachable: host name not found"
    if reason.check(error.NoRouteError):
        return "target unreachable: no route to host"
    message = reason.getErrorMessage()
    return f"target unreachable: {message}"


@implementer(IHalfCloseableProtocol)
class ForwardClient(Protocol):
    """
    netd's connection to the target, on behalf of one L{ForwardServer}.

    @ivar server: The client side.
    """

    # Set by the connection before any call (never None once connected).
    transport: Any

    def __init__(self, server: ForwardServer) -> None:
        self.server = server

    def connectionMade(self) -> None:
        """
        Hand the target's transport to the client side.
        """
        # Bound here: every chunk from the target goes straight to the client
        # transport's write (tests.test_forward, test_spliceBothWays).
        self.dataReceived = self.server.transport.write  # type: ignore[method-assign]

    def readConnectionLost(self) -> None:
        """
        The target sent its last byte: pass the half-close on to the client.
        """
        self.server.targetEof()

    def writeConnectionLost(self) -> None:
        """
        Our half-close towards the target (after the client's) is done.

        Twisted calls this once a C{loseWriteConnection} of ours has shut the
        socket's sending side; the target may still be sending, so nothing
        is closed here (closing here lost the end of an echo: see
        C{tests.test_forward_net.ForwardSocketTests.test_echoThroughForward}).
        """

    def connectionLost(self, reason: Failure = error.ConnectionDone()) -> None:  # type: ignore[assignment]
        """
        The target connection is gone: close the client side (gracefully).

        @param reason: Why.
        """
        self.server.targetLost(reason)


class _ClientFactory(Factory):
    """
    Builds the one L{ForwardClient} of a L{ForwardServer}.
    """

    noisy = False

    def __init__(self, server: ForwardServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> ForwardClient:
        """
        @param addr: The target's address.
        @return: The target-side protocol.
        """
        return ForwardClient(self.server)


@implementer(IHalfCloseableProtocol)
class ForwardServer(Protocol):
    """
    One forwarded client connection.

    @ivar peer: The target side once connected, else L{None}.
    @ivar connecting: The connect attempt in progress, else L{None}.
    """

    factory: ForwardFactory
    # The client's transport, or the L{netd.sessions.Session} around it.
    transport: Any
    peer: ForwardClient | None = None
    connecting: defer.Deferred[Any] | None = None
    _clientEof = False
    _targetEof = False
    _gone = False

    def connectionMade(self) -> None:
        """
        Stop reading from the client and connect to the target.
        """
        factory = self.factory
        self.transport.pauseProducing()
        d = factory.endpoint.connect(_ClientFactory(self))
        d.addTimeout(factory.connectTimeout, factory.reactor)
        self.connecting = d
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, peer: ForwardClient) -> None:
        """
        Splice: each transport is the other's streaming producer, then the
        client may be read again.

        @param peer: The target-side protocol.
        """
        self.connecting = None
        self.peer = peer
        if self._gone:
            peer.transport.loseConnection()
            return
        if self.factory.proxyProtocol == "v2":
            peer.transport.write(
                proxyV2Header(self.transport.getPeer(), self.transport.getHost())
            )
        self.transport.registerProducer(peer.transport, True)
        peer.transport.registerProducer(self.transport, True)
        self.transport.resumeProducing()

    def _failed(self, reason: Failure) -> None:
        """
        No target connection: close the client with the reason in words.

        @param reason: The connect failure.
        """
        self.connecting = None
        if self._gone:
            return
        self.setCloseReason(describeConnectFailure(reason, self.factory.connectTimeout))
        self.transport.loseConnection()

    def setCloseReason(self, reason: str) -> None:
        """
        Give the session event of L{netd.sessions.Session} a reason, if this
        protocol runs inside one (and it has none yet).

        @param reason: Why the session ends, in words.
        """
        if getattr(self.transport, "closeReason", False) is None:
            self.transport.closeReason = reason

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes from the client, for the target.

        Not rebound to the target's C{write} once spliced: a session on
        netd's transport has already taken this bound method (see
        L{netd.sessions.Session.makeConnection}). Before the splice there
        are none (the client is paused until then).

        @param data: The bytes.
        """
        if self.peer is not None:
            self.peer.transport.write(data)

    def readConnectionLost(self) -> None:
        """
        The client sent its last byte: half-close towards the target.
        """
        self._clientEof = True
        if self.peer is None:
            return
        self.peer.transport.loseWriteConnection()
        if self._targetEof:
            self._closeBoth()

    def targetEof(self) -> None:
        """
        The target sent its last byte: half-close towards the client.
        """
        self._targetEof = True
        self.transport.loseWriteConnection()
        if self._clientEof:
            self._closeBoth()

    def _closeBoth(self) -> None:
        """
        Both directions are finished: close both connections once their
        pending bytes are written.
        """
        self.transport.loseConnection()
        if self.peer is not None:
            self.peer.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Our half-close towards the client (after the target's) is done; the
        client may still be sending, so nothing is closed here.
        """

    def targetLost(self, reason: Failure) -> None:
        """
        The target connection closed: close the client once what the target
        sent is written.

        @param reason: Why the target connection ended.
        """
        if not self._gone:
            if not reason.check(error.ConnectionDone):
                self.setCloseReason(
                    f"target connection lost: {reason.getErrorMessage()}"
                )
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = error.ConnectionDone()) -> None:  # type: ignore[assignment]
        """
        The client is gone: stop connecting, or close the target side.

        @param reason: Why.
        """
        self._gone = True
        if self.connecting is not None:
            self.connecting.cancel()
        if self.peer is not None:
            self.peer.transport.loseConnection()


class ForwardFactory(Factory):
    """
    The factory of one forward service's stream listeners.

    @ivar endpoint: The target (an L{IStreamClientEndpoint}).
    @ivar connectTimeout: Seconds to wait for the target.
    @ivar proxyProtocol: C{"v2"} or L{None}.
    @ivar reactor: For the connect timeout.
    """

    protocol = ForwardServer  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        endpoint: Any,
        connectTimeout: float,
        proxyProtocol: str | None,
        reactor: Any,
    ) -> None:
        self.endpoint = endpoint
        self.connectTimeout = connectTimeout
        self.proxyProtocol = proxyProtocol
        self.reactor = reactor


def withEndpointTimeout(description: str, timeout: float) -> str:
    """
    Give a client endpoint description a C{timeout=} beyond C{timeout}.

    Twisted's C{tcp:}, C{ssl:} and C{unix:} client endpoints give up after
    their own C{timeout=} (30 s unless given); without this a
    C{connect_timeout} above 30 would never be reached. The endpoint's is
    set a second later, so that netd's own timer (which says how long it
    waited) fires first. A C{timeout=} written in C{to} is kept.

    @param description: The C{to} setting.
    @param timeout: C{connect_timeout}.
    @return: The description to connect with.
    """
    if ":timeout=" in description:
        return description
    return f"{description}:timeout={math.ceil(timeout) + 1}"


def buildStreamFactory(context: ServiceContext) -> ForwardFactory:
    """
    @param context: The service instance.
    @return: A factory of L{ForwardServer} protocols, connecting to C{to}
        with the instance's reactor.
    """
    settings = context.settings
    return ForwardFactory(
        clientFromString(
            context.reactor,
            withEndpointTimeout(settings["to"], settings["connect_timeout"]),
        ),
        settings["connect_timeout"],
        settings["proxy_protocol"],
        context.reactor,
    )


class UDPMapping(DatagramProtocol):
    """
    One client source's connected UDP socket to the target.

    @ivar owner: The listener's protocol.
    @ivar client: The client's C{(host, port)}.
    @ivar lastUsed: When a datagram last went either way.
    """

    noisy = False

    def __init__(self, owner: ForwardDatagram, client: tuple[str, int]) -> None:
        self.owner = owner
        self.client = client
        self.lastUsed = owner.context.reactor.seconds()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """
        A datagram from the target: back to this mapping's client only.

        @param data: The payload.
        @param addr: The target's address (the socket is connected to it).
        """
        self.lastUsed = self.owner.context.reactor.seconds()
        self.owner.replyFromTarget(data, self.client)

    def connectionRefused(self) -> None:
        """
        The target's port is closed (ICMP): counted, nothing is sent back.
        """
        self.owner.drop("target refused", self.client[0])


class ForwardDatagram(ServiceDatagramProtocol):
    """
    The UDP side of a forward service: one L{UDPMapping} per client source.

    @ivar target: The target's C{(host, port)}.
    @ivar guard: Decides which clients get the target's replies.
    @ivar mappings: By client C{(host, port)}.
    @ivar idleTimeout: Seconds after which an unused mapping is closed.
    @ivar maxMappings: The most mappings at once.
    """

    def __init__(
        self,
        context: ServiceContext,
        guard: ReplyGuard,
        target: tuple[str, int],
        idleTimeout: float,
        maxMappings: int,
    ) -> None:
        super().__init__(context)
        self.guard = guard
        self.target = target
        self.idleTimeout = idleTimeout
        self.maxMappings = maxMappings
        self.mappings: dict[tuple[str, int], tuple[UDPMapping, Any]] = {}
        self._sweep: Any = None

    def startProtocol(self) -> None:
        """
        Start the idle sweep.
        """
        self._scheduleSweep()

    def stopProtocol(self) -> None:
        """
        Close every mapping and stop the sweep.
        """
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        for client in list(self.mappings):
            self._close(client)

    def _scheduleSweep(self) -> None:
        self._sweep = self.context.reactor.callLater(
            max(self.idleTimeout / 4, 0.05), self.expire
        )

    def expire(self) -> None:
        """
        Close the mappings idle for C{idleTimeout} or more, and look again
        in a quarter of it.
        """
        now = self.context.reactor.seconds()
        for client, (mapping, _) in list(self.mappings.items()):
            if now - mapping.lastUsed >= self.idleTimeout:
                self._close(client)
        self._scheduleSweep()

    def _close(self, client: tuple[str, int]) -> None:
        mapping, port = self.mappings.pop(client)
        port.stopListening()

    def serviceDatagram(self, data: bytes, addr: Any) -> None:
        """
        Send a client's datagram to the target on its own mapping.

        @param data: The payload.
        @param addr: The client's C{(host, port, ...)}.
        """
        client = (addr[0], addr[1])
        entry = self.mappings.get(client)
        if entry is None:
            # Check the guard's static rules before opening a socket: a
            # client the target's reply could never reach gets no mapping.
            if addr[1] < self.guard.minSourcePort or addr[1] in self.guard.ownPorts:
                self.drop("source may get no reply", addr[0])
                return
            if len(self.mappings) >= self.maxMappings:
                self.drop("too many UDP mappings", addr[0])
                return
            mapping = UDPMapping(self, client)
            host = self.target[0]
            interface = "::" if ":" in host else ""
            try:
                port = self.context.reactor.listenUDP(0, mapping, interface=interface)
                port.connect(host, self.target[1])
            except Exception as e:
                self.drop(f"cannot open a UDP mapping ({e})", addr[0])
                return
            entry = self.mappings[client] = (mapping, port)
        mapping, port = entry
        mapping.lastUsed = self.context.reactor.seconds()
        try:
            port.write(data)
        except OSError as e:
            self.drop(f"send to target failed ({e.strerror or e})", addr[0])

    def replyFromTarget(self, data: bytes, client: tuple[str, int]) -> None:
        """
        Send the target's datagram to the client, if the guard allows.

        @param data: The payload.
        @param client: The client's C{(host, port)}.
        """
        reason = self.guard.check(client[0], client[1])
        if reason is not None:
            self.drop(reason, client[0])
            return
        self.reply(data, client)


def buildDatagramProtocol(
    context: ServiceContext, listener: DatagramListener
) -> ForwardDatagram:
    """
    @param context: The service instance.
    @param listener: The UDP listener.
    @return: The protocol for it, with its own reply guard and mappings.
    """
    settings = context.settings
    return ForwardDatagram(
        context,
        guardFor(context),
        settings["to_udp"],
        settings["udp_idle_timeout"],
        settings["udp_max_mappings"],
    )


def checkConfig(config: Any, services: Mapping[str, Any]) -> list[Problem]:
    """
    A forward service needs C{to} if it has a stream listener and C{to_udp}
    if it has a datagram listener.

    @param config: This service's L{ServiceConfig<netd.config.ServiceConfig>}.
    @param services: Every enabled service, by name.
    @return: The problems found.
    """
    problems = []
    path = f"services.{config.name}"
    kinds = {isinstance(listener, DatagramListener) for listener in config.listeners}
    if False in kinds and not config.settings["to"]:
        problems.append(
            Problem(
                f"{path}.to",
                'a forward service with a stream listener needs to = "tcp:HOST:PORT" '
                "(or ssl:HOST:PORT, unix:PATH): the one target it forwards to",
            )
        )
    if True in kinds and config.settings["to_udp"] is None:
        problems.append(
            Problem(
                f"{path}.to_udp",
                'a forward service with a udp listener needs to_udp = "udp:HOST:PORT"',
            )
        )
    return problems


forward = ServiceType(
    name="forward",
    description="forward each connection or datagram to one configured target",
    settings=(
        Setting(
            "to",
            "",
            streamTarget,
            "the target of stream listeners: tcp:HOST:PORT, ssl:HOST:PORT or unix:PATH",
        ),
        Setting(
            "to_udp",
            None,
            datagramTarget,
            "the target of udp listeners: udp:IP:PORT",
        ),
        Setting(
            "connect_timeout",
            10.0,
            number(0.001, 3600),
            "seconds to wait for the target to accept a connection",
        ),
        Setting(
            "proxy_protocol",
            None,
            proxyProtocol,
            '"v2": send a PROXY protocol v2 header so the target sees the client',
        ),
        Setting(
            "udp_idle_timeout",
            60.0,
            number(0.01, 86400),
            "seconds after which an unused UDP mapping is closed",
        ),
        Setting(
            "udp_max_mappings",
            1024,
            integer(1, 1_000_000),
            "the most UDP client sources forwarded at once",
        ),
    )
    + guardSettings(),
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=buildDatagramProtocol,
    checkConfig=checkConfig,
)
