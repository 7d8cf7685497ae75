# -*- test-case-name: tests.test_listeners -*-
"""
Tests for L{netd.listeners} and L{netd.sockets}, with real sockets.

Each test builds a netd service tree from configuration text, starts it on
the real reactor (binding C{127.0.0.1} or C{::1}, port 0 where possible) and
talks to it with real clients: plain sockets run in a thread
(L{deferToThread}) for streams, Twisted L{DatagramProtocol}s for UDP.
"""

from __future__ import annotations

import errno
import io
import os
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.application.service import IServiceCollection
from twisted.internet import reactor
from twisted.internet.error import (
    CannotListenError,
    InvalidAddressError,
    MessageLengthError,
)
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.tcp import makeBinding
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.config import parseConfig
from netd.services import serviceTypes
from netd.daemon import EX_OSERR, NetdService
from netd.instances import ServiceInstance
from netd.listeners import (
    DatagramListenerService,
    ListenError,
    StreamListenerService,
    explainBindError,
)
from netd import sockets
from netd.sockets import TCPPort, UDPPort

LOOPBACK = "127.0.0.1"
LOOPBACK6 = "::1"
# TEST-NET-1 (RFC 5737): documentation only, never configured on a host.
UNCONFIGURED = "192.0.2.1"


def freePort(kind: int = socket.SOCK_STREAM, host: str = LOOPBACK) -> int:
    """
    Find a port that is free now, by binding port 0 and closing the socket.

    @param kind: C{SOCK_STREAM} or C{SOCK_DGRAM}.
    @param host: The address to bind.
    @return: The port number.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def hasIPv6Loopback() -> bool:
    """
    @return: Whether C{::1} can be bound here.
    """
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK6, 0))
    except OSError:
        return False
    return True


def canBind(host: str) -> bool:
    """
    @param host: An IPv4 address.
    @return: Whether a socket can be bound to it (is it configured here?).
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
    except OSError:
        return False
    return True


@frozen
class Exchange:
    """
    What a client saw of one TCP connection (see L{tcpExchange}).

    @ivar received: Every byte received before the end of the stream.
    @ivar sent: How many bytes the kernel accepted.
    @ivar reset: Whether the connection ended with a reset rather than EOF.
    @ivar elapsed: Seconds from connected to end of stream.
    """

    received: bytes
    sent: int
    reset: bool
    elapsed: float


def tcpExchange(
    host: str,
    port: int,
    payload: bytes = b"",
    halfClose: bool = True,
    timeout: float = 20.0,
) -> Exchange:
    """
    Connect, send C{payload} while reading, optionally shut down the sending
    side, then read until the server ends the stream. Blocking: run it in a
    thread.

    @param host: The server address.
    @param port: The server port.
    @param payload: What to send.
    @param halfClose: Whether to C{shutdown(SHUT_WR)} once all is sent.
    @param timeout: The most seconds the whole exchange may take.
    @return: What happened.
    @raise TimeoutError: If the server did not end the stream in time.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    sent = 0
    reset = False
    sendFailed = False
    shut = False
    view = memoryview(payload)
    with (
        socket.socket(family, socket.SOCK_STREAM) as sock,
        selectors.DefaultSelector() as sel,
    ):
        sock.settimeout(timeout)
        sock.connect((host, port))
        started = time.monotonic()
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        for _ in range(10_000_000):
            wantWrite = sent < len(payload) and not sendFailed
            if not wantWrite and halfClose and not shut and not sendFailed:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                shut = True
            sel.modify(
                sock,
                selectors.EVENT_READ | (selectors.EVENT_WRITE if wantWrite else 0),
            )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"stream not ended after {timeout}s "
                    f"({sent} bytes sent, {sum(map(len, chunks))} received)"
                )
            for _key, mask in sel.select(remaining):
                if mask & selectors.EVENT_READ:
                    try:
                        data = sock.recv(1 << 16)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        reset = True
                        data = b""
                    if not data:
                        return Exchange(
                            b"".join(chunks),
                            sent,
                            reset,
                            time.monotonic() - started,
                        )
                    chunks.append(data)
                if mask & selectors.EVENT_WRITE:
                    try:
                        sent += sock.send(view[sent : sent + (1 << 16)])
                    except BlockingIOError:
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        sendFailed = True
        raise TimeoutError("too many iterations")


class DatagramCollector(DatagramProtocol):
    """
    A UDP client that records every datagram it receives.

    @ivar received: C{(data, addr)} pairs, in order.
    """

    noisy = False

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """
        Record a datagram.

        @param data: The payload.
        @param addr: Its source.
        """
        self.received.append((data, addr))


async def waitFor(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """
    Let the reactor run until C{predicate()} is true.

    @param predicate: The condition.
    @param timeout: The most seconds to wait.
    @param what: The condition, for the failure message.
    @raise AssertionError: If it did not become true in time.
    """
    deadline = time.monotonic() + timeout
    for _ in range(100_000):
        if predicate():
            return
        if time.monotonic() > deadline:
            break
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"{what} not true after {timeout}s")


async def settle(seconds: float) -> None:
    """
    Let the reactor run for a while.

    @param seconds: How long.
    """
    await deferLater(reactor, seconds, lambda: None)


class NetdTestMixin:
    """
    Starting netd service trees from configuration text, with cleanup.
    """

    addCleanup: Any

    def startNetd(self, text: str, stderr: io.StringIO | None = None) -> NetdService:
        """
        Build and start a netd service tree; stop it after the test.

        @param text: TOML configuration text.
        @param stderr: Passed to L{NetdService}.
        @return: The running root service.
        """
        service = NetdService(
            parseConfig(serviceTypes(), text, "<test>"), stderr=stderr
        )
        self.addCleanup(service.stopService)
        service.startService()
        return service

    def instance(self, service: NetdService, name: str) -> ServiceInstance:
        """
        @param service: A root service.
        @param name: A service instance name.
        @return: The instance.
        """
        found = IServiceCollection(service.served).getServiceNamed(name)
        assert isinstance(found, ServiceInstance)
        return found

    def listenerService(
        self, service: NetdService, name: str, transport: str
    ) -> StreamListenerService | DatagramListenerService:
        """
        The one listener service of a transport in a service instance.

        @param service: A root service.
        @param name: A service instance name.
        @param transport: C{"stream"} or C{"datagram"}.
        @return: The listener service.
        """
        found = [
            child
            for child in self.instance(service, name)
            if child.listener.transport == transport
        ]
        assert len(found) == 1, found
        return found[0]

    def port(self, service: NetdService, name: str, transport: str) -> Any:
        """
        @param service: A root service.
        @param name: A service instance name.
        @param transport: C{"stream"} or C{"datagram"}.
        @return: The bound L{IListeningPort} of that listener.
        """
        port = self.listenerService(service, name, transport).port
        assert port is not None
        return port

    def portNumber(self, service: NetdService, name: str, transport: str) -> int:
        """
        @param service: A root service.
        @param name: A service instance name.
        @param transport: C{"stream"} or C{"datagram"}.
        @return: The bound port number of that listener.
        """
        return int(self.port(service, name, transport).getHost().port)

    def udpClient(self, port: int = 0, host: str = LOOPBACK) -> Any:
        """
        Bind a UDP client that records what it receives.

        @param port: Its local port (0 for any).
        @param host: Its local address.
        @return: The L{DatagramCollector}, with its C{transport}.
        """
        client = DatagramCollector()
        udp = reactor.listenUDP(port, client, interface=host)
        self.addCleanup(udp.stopListening)
        return client

    def captureEvents(self) -> list[dict[str, Any]]:
        """
        Record every log event for the rest of the test.

        @return: The list the events are appended to.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events


def echoConfig(
    listen: str = '"tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"',
    limits: str = "",
    settings: str = "",
    netd: str = "",
    name: str = "echo",
    type: str = "echo",
) -> str:
    """
    Configuration text for one service.

    @param listen: The body of its C{listen} array.
    @param limits: Lines for its C{limits} table.
    @param settings: Lines of type-specific settings.
    @param netd: Lines for the C{[netd]} table.
    @param name: The instance name.
    @param type: The service type.
    @return: TOML text.
    """
    return (
        f"[netd]\n{netd}\n"
        f'[services.{name}]\ntype = "{type}"\nlisten = [{listen}]\n{settings}\n'
        f"[services.{name}.limits]\n{limits}\n"
    )


class EchoTests(NetdTestMixin, TestCase):
    """
    The echo service over real TCP and UDP sockets.
    """

    async def test_tcpRoundTrip(self) -> None:
        """
        Bytes sent to TCP echo come back identical, and the session is counted
        with its byte counts once it ends.
        """
        service = self.startNetd(echoConfig())
        port = self.portNumber(service, "echo", "stream")
        payload = os.urandom(100_000)
        result = await deferToThread(tcpExchange, LOOPBACK, port, payload)
        self.assertEqual(result.received, payload)
        self.assertFalse(result.reset)
        counters = self.instance(service, "echo").context.counters
        await waitFor(lambda: counters.sessions == 1, what="session ended")
        self.assertEqual(counters.bytesIn, len(payload))
        self.assertEqual(counters.bytesOut, len(payload))

    async def test_tcpHalfClose(self) -> None:
        """
        A client that sends 1 MB and then shuts down its sending side still
        receives the whole megabyte back, followed by a clean EOF.
        """
        service = self.startNetd(echoConfig())
        port = self.portNumber(service, "echo", "stream")
        payload = os.urandom(1 << 20)
        result = await deferToThread(tcpExchange, LOOPBACK, port, payload, True)
        self.assertEqual(result.sent, len(payload))
        self.assertEqual(len(result.received), len(payload))
        self.assertEqual(result.received, payload)
        self.assertFalse(result.reset, "the stream ended with a reset, not EOF")

    async def test_udpRoundTrip(self) -> None:
        """
        A 1400-byte datagram comes back intact, from the echo port, and is
        counted in and out.
        """
        service = self.startNetd(echoConfig())
        port = self.portNumber(service, "echo", "datagram")
        client = self.udpClient()
        payload = os.urandom(1400)
        client.transport.write(payload, (LOOPBACK, port))
        await waitFor(lambda: client.received, what="echo reply")
        self.assertEqual(client.received, [(payload, (LOOPBACK, port))])
        counters = self.instance(service, "echo").context.counters
        self.assertEqual(
            (counters.datagramsIn, counters.datagramsOut, counters.datagramBytesOut),
            (1, 1, 1400),
        )

    async def test_udpNoReplyToOwnPort(self) -> None:
        """
        A datagram whose source port is one of netd's own listening ports
        (here the TCP echo port, bound over UDP by the client) gets no reply
        and is counted as dropped, while a datagram from an ordinary port
        sent just after it is answered.
        """
        service = self.startNetd(echoConfig())
        tcpPort = self.portNumber(service, "echo", "stream")
        udpPort = self.portNumber(service, "echo", "datagram")
        try:
            looped = self.udpClient(tcpPort)
        except CannotListenError:
            raise self.skipTest(f"UDP port {tcpPort} is busy")
        ordinary = self.udpClient()
        looped.transport.write(b"loop?", (LOOPBACK, udpPort))
        ordinary.transport.write(b"hello", (LOOPBACK, udpPort))
        await waitFor(lambda: ordinary.received, what="reply to the ordinary port")
        await settle(0.2)
        self.assertEqual(looped.received, [])
        context = self.instance(service, "echo").context
        self.assertEqual(context.counters.datagramsDropped, 1)
        self.assertEqual(
            context.datagramDrops.totals["source is a netd service port"], 1
        )

    async def test_udpNoReplyToPrivilegedPort(self) -> None:
        """
        With the default C{udp_min_source_port} (1024), a datagram from a port
        below 1024 (where servers, not clients, live) gets no reply.
        """
        if os.geteuid() != 0:
            raise self.skipTest("binding a port below 1024 needs root")
        service = self.startNetd(echoConfig())
        udpPort = self.portNumber(service, "echo", "datagram")
        low = None
        for candidate in range(1023, 900, -1):
            try:
                low = self.udpClient(candidate)
            except CannotListenError:
                continue
            break
        if low is None:
            raise self.skipTest("no free UDP port between 901 and 1023")
        ordinary = self.udpClient()
        low.transport.write(b"from a server port", (LOOPBACK, udpPort))
        ordinary.transport.write(b"from a client port", (LOOPBACK, udpPort))
        await waitFor(lambda: ordinary.received, what="reply to the ordinary port")
        await settle(0.2)
        self.assertEqual(low.received, [])
        context = self.instance(service, "echo").context
        self.assertEqual(context.datagramDrops.totals["privileged source port"], 1)

    async def test_udpReplyBudget(self) -> None:
        """
        With C{udp_reply_rate = 1} and C{udp_reply_burst = 3}, ten datagrams
        sent back to back get exactly three replies; the other seven are
        counted as dropped.
        """
        service = self.startNetd(
            echoConfig(settings="udp_reply_rate = 1\nudp_reply_burst = 3")
        )
        udpPort = self.portNumber(service, "echo", "datagram")
        counters = self.instance(service, "echo").context.counters
        client = self.udpClient()
        for i in range(10):
            client.transport.write(b"%d" % (i,), (LOOPBACK, udpPort))
        await waitFor(lambda: counters.datagramsIn == 10, what="10 datagrams in")
        await settle(0.3)
        self.assertEqual([data for data, _ in client.received], [b"0", b"1", b"2"])
        self.assertEqual((counters.datagramsOut, counters.datagramsDropped), (3, 7))


class DiscardTests(NetdTestMixin, TestCase):
    """
    The discard service over real TCP and UDP sockets.
    """

    async def test_tcpDiscard(self) -> None:
        """
        Bytes sent to TCP discard get nothing back (the server closes after
        the client's EOF) and are counted when the session ends.
        """
        service = self.startNetd(echoConfig(name="discard", type="discard"))
        port = self.portNumber(service, "discard", "stream")
        payload = os.urandom(50_000)
        result = await deferToThread(tcpExchange, LOOPBACK, port, payload)
        self.assertEqual(result.received, b"")
        self.assertEqual(result.sent, len(payload))
        counters = self.instance(service, "discard").context.counters
        await waitFor(lambda: counters.sessions == 1, what="session ended")
        self.assertEqual((counters.bytesIn, counters.bytesOut), (len(payload), 0))

    async def test_udpDiscard(self) -> None:
        """
        Datagrams sent to UDP discard get no reply and are counted in, with
        their bytes, and never out.
        """
        service = self.startNetd(echoConfig(name="discard", type="discard"))
        port = self.portNumber(service, "discard", "datagram")
        counters = self.instance(service, "discard").context.counters
        client = self.udpClient()
        for size in (1, 100, 1400):
            client.transport.write(b"x" * size, (LOOPBACK, port))
        await waitFor(lambda: counters.datagramsIn == 3, what="3 datagrams in")
        await settle(0.2)
        self.assertEqual(client.received, [])
        self.assertEqual(counters.datagramBytesIn, 1501)
        self.assertEqual((counters.datagramsOut, counters.datagramBytesOut), (0, 0))


class SocketOptionTests(NetdTestMixin, TestCase):
    """
    The socket options netd sets on its listeners.
    """

    def option(self, port: Any, name: int) -> int:
        """
        @param port: A listening port with a C{socket}.
        @param name: A C{SOL_SOCKET} option.
        @return: Its value.
        """
        return int(port.socket.getsockopt(socket.SOL_SOCKET, name))

    def test_reuseAddressAlways(self) -> None:
        """
        C{SO_REUSEADDR} is set on every TCP and UDP listener, and
        C{SO_REUSEPORT} is not unless asked for.
        """
        service = self.startNetd(echoConfig())
        for transport in ("stream", "datagram"):
            port = self.port(service, "echo", transport)
            self.assertTrue(self.option(port, socket.SO_REUSEADDR), transport)
            self.assertFalse(self.option(port, socket.SO_REUSEPORT), transport)

    def test_reusePortShared(self) -> None:
        """
        With C{reuse_port = true}, C{SO_REUSEPORT} is set on TCP and UDP
        listeners, and two separate netd trees can bind the same TCP and UDP
        port.
        """
        tcpPort = freePort(socket.SOCK_STREAM)
        udpPort = freePort(socket.SOCK_DGRAM)
        text = echoConfig(
            listen=f'"tcp:{tcpPort}:interface=127.0.0.1", '
            f'"udp:{udpPort}:interface=127.0.0.1"',
            netd="reuse_port = true",
        )
        first = self.startNetd(text)
        second = self.startNetd(text)
        for service in (first, second):
            for transport, number in (("stream", tcpPort), ("datagram", udpPort)):
                port = self.port(service, "echo", transport)
                self.assertEqual(port.getHost().port, number)
                self.assertTrue(self.option(port, socket.SO_REUSEPORT), transport)
                self.assertTrue(self.option(port, socket.SO_REUSEADDR), transport)

    def test_reusePortPerListener(self) -> None:
        """
        C{reuse_port} in a listener's table sets C{SO_REUSEPORT} on that
        listener only.
        """
        service = self.startNetd(
            echoConfig(
                listen='{ address = "tcp:0:interface=127.0.0.1", reuse_port = true }, '
                '"udp:0:interface=127.0.0.1"'
            )
        )
        self.assertTrue(
            self.option(self.port(service, "echo", "stream"), socket.SO_REUSEPORT)
        )
        self.assertFalse(
            self.option(self.port(service, "echo", "datagram"), socket.SO_REUSEPORT)
        )


class IPv6Tests(NetdTestMixin, TestCase):
    """
    Listeners on C{::1}.
    """

    def setUp(self) -> None:
        if not hasIPv6Loopback():
            raise self.skipTest("::1 is not available")

    async def test_tcp6AndUdp6(self) -> None:
        """
        TCP and UDP echo on C{::1} bind there and echo bytes and datagrams.
        """
        service = self.startNetd(
            echoConfig(listen=r'"tcp6:0:interface=\\:\\:1", "udp6:0:interface=\\:\\:1"')
        )
        tcp = self.port(service, "echo", "stream").getHost()
        udp = self.port(service, "echo", "datagram").getHost()
        self.assertEqual((tcp.host, udp.host), (LOOPBACK6, LOOPBACK6))
        payload = os.urandom(10_000)
        result = await deferToThread(tcpExchange, LOOPBACK6, tcp.port, payload)
        self.assertEqual(result.received, payload)
        client = self.udpClient(host=LOOPBACK6)
        client.transport.write(b"over six", (LOOPBACK6, udp.port))
        await waitFor(lambda: client.received, what="echo reply over IPv6")
        self.assertEqual(client.received[0][0], b"over six")

    def test_ipv6OnlySockets(self) -> None:
        """
        The sockets of IPv6 listeners are made IPv6 only (C{IPV6_V6ONLY})
        before they are bound, so that a wildcard C{tcp6:PORT} and
        C{tcp:PORT} (or C{udp6}/C{udp}) on one port both bind, as the
        configuration says, instead of the second failing with "address in
        use" on a dual-stack host. The sockets are created but never bound
        (tests bind loopback only, and Linux reports a socket bound to C{::1}
        as IPv6 only whatever was asked).
        """
        tcpPort = TCPPort(makeBinding("::", 0), Factory(), 50, "::", reactor)
        udpPort = UDPPort(0, DatagramProtocol(), "::", 8192, reactor)
        for port in (tcpPort, udpPort):
            skt = port.createInternetSocket()
            self.addCleanup(skt.close)
            self.assertEqual(skt.family, socket.AF_INET6)
            self.assertEqual(
                skt.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), 1, port
            )
        ipv4 = TCPPort(makeBinding("127.0.0.1", 0), Factory(), 50, "127.0.0.1", reactor)
        skt = ipv4.createInternetSocket()
        self.addCleanup(skt.close)
        self.assertEqual(skt.family, socket.AF_INET)


class UDPPortWriteTests(SynchronousTestCase):
    """
    L{UDPPort.write} keeps L{udp.Port.write}'s contract while skipping the
    address checks for hosts it has already checked.
    """

    def setUp(self) -> None:
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sink.close)
        self.sink.bind((LOOPBACK, 0))
        self.sink.settimeout(5)
        self.port = UDPPort(0, DatagramProtocol(), LOOPBACK, 8192, reactor)
        self.port.startListening()
        self.addCleanup(self.port.stopListening)

    def test_sendsAndRemembers(self) -> None:
        """
        Datagrams reach the destination, the first through Twisted's checks
        and the following ones straight to C{sendto}; the host is remembered.
        """
        address = self.sink.getsockname()
        for payload in (b"one", b"two", b"three"):
            self.port.write(payload, address)
            self.assertEqual(self.sink.recv(100), payload)
        self.assertEqual(self.port._checkedHosts, {LOOPBACK})

    def test_refusedAddressesNotRemembered(self) -> None:
        """
        A host name, or an address of the other family, is refused every
        time, as Twisted refuses it (no blocking name lookup by C{sendto}).
        """
        for _ in range(2):
            self.assertRaises(
                InvalidAddressError, self.port.write, b"x", ("localhost", 9)
            )
            self.assertRaises(InvalidAddressError, self.port.write, b"x", ("::1", 9))
        self.assertEqual(self.port._checkedHosts, set())

    def test_errorsTakeTwistedsPath(self) -> None:
        """
        An error from C{sendto} for a remembered host is handled as Twisted
        handles it: an oversized datagram raises L{MessageLengthError}.
        """
        address = self.sink.getsockname()
        self.port.write(b"x", address)
        self.assertRaises(MessageLengthError, self.port.write, b"x" * 70000, address)

    def test_rememberedHostsBounded(self) -> None:
        """
        However many hosts it sends to, the set of remembered hosts stays
        bounded.
        """
        self.patch(sockets, "_CHECKED_HOSTS_MAX", 10)
        for i in range(25):
            self.port.write(b"x", (f"127.0.0.{i + 1}", 9))
        self.assertLessEqual(len(self.port._checkedHosts), 10)


class BindFailureTests(NetdTestMixin, TestCase):
    """
    A listener that cannot be bound stops start-up with one clear line.
    """

    def holdPort(self, kind: int) -> int:
        """
        Bind (and for TCP, listen on) a loopback port until the test ends.

        @param kind: C{SOCK_STREAM} or C{SOCK_DGRAM}.
        @return: The port.
        """
        holder = socket.socket(socket.AF_INET, kind)
        self.addCleanup(holder.close)
        holder.bind((LOOPBACK, 0))
        if kind == socket.SOCK_STREAM:
            holder.listen(1)
        return int(holder.getsockname()[1])

    def assertBusy(self, description: str) -> None:
        """
        Starting netd on a busy address raises L{ListenError}, one line naming
        the service, the listener and the cause.

        @param description: The listener description.
        """
        config = parseConfig(
            serviceTypes(), echoConfig(listen=f'"{description}"'), "<test>"
        )
        service = NetdService(config)
        self.addCleanup(service.stopService)
        error = self.assertRaises(ListenError, service.startService)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith("echo cannot listen on "), message)
        self.assertIn(description, message)
        self.assertIn("address already in use", message)
        self.assertEqual((error.service, error.listener), ("echo", description))

    def test_tcpAddressInUse(self) -> None:
        """
        A TCP port another socket listens on gives a L{ListenError} saying
        "address already in use".
        """
        port = self.holdPort(socket.SOCK_STREAM)
        self.assertBusy(f"tcp:{port}:interface=127.0.0.1")

    def test_udpAddressInUse(self) -> None:
        """
        A UDP port another socket is bound to gives a L{ListenError} saying
        "address already in use".
        """
        port = self.holdPort(socket.SOCK_DGRAM)
        self.assertBusy(f"udp:{port}:interface=127.0.0.1")

    def test_foregroundExits(self) -> None:
        """
        With a C{stderr} stream, a busy port ends start-up with
        C{SystemExit(71)} and exactly one C{netd: ...} line on the stream.
        """
        port = self.holdPort(socket.SOCK_STREAM)
        description = f"tcp:{port}:interface=127.0.0.1"
        stderr = io.StringIO()
        config = parseConfig(
            serviceTypes(), echoConfig(listen=f'"{description}"'), "<test>"
        )
        service = NetdService(config, stderr=stderr)
        self.addCleanup(service.stopService)
        exit = self.assertRaises(SystemExit, service.startService)
        self.assertEqual(exit.code, EX_OSERR)
        self.assertEqual(EX_OSERR, 71)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("netd: echo cannot listen on "), lines)
        self.assertIn(description, lines[0])
        self.assertIn("address already in use", lines[0])

    def test_failureReleasesEarlierPorts(self) -> None:
        """
        When the second listener fails, stopping the tree closes the first,
        whose port can then be bound again.
        """
        busy = self.holdPort(socket.SOCK_STREAM)
        free = freePort(socket.SOCK_DGRAM)
        config = parseConfig(
            serviceTypes(),
            echoConfig(
                listen=f'"udp:{free}:interface=127.0.0.1", '
                f'"tcp:{busy}:interface=127.0.0.1"'
            ),
            "<test>",
        )
        service = NetdService(config)
        self.assertRaises(ListenError, service.startService)
        d = service.stopService()

        def rebind(ignored: object) -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((LOOPBACK, free))

        return d.addCallback(rebind)

    def test_addressNotAvailable(self) -> None:
        """
        Binding an address no local interface has (TEST-NET-1) gives a
        L{ListenError} saying "address not available", for TCP and UDP.
        """
        if canBind(UNCONFIGURED):
            raise self.skipTest(f"{UNCONFIGURED} is configured on this host")
        for description in (
            f"tcp:0:interface={UNCONFIGURED}",
            f"udp:0:interface={UNCONFIGURED}",
        ):
            service = NetdService(
                parseConfig(
                    serviceTypes(), echoConfig(listen=f'"{description}"'), "<test>"
                )
            )
            self.addCleanup(service.stopService)
            error = self.assertRaises(ListenError, service.startService)
            self.assertIn(description, str(error))
            self.assertIn("address not available", str(error))
            self.assertNotIn("\n", str(error))


class ExplainBindErrorTests(SynchronousTestCase):
    """
    Tests for L{explainBindError}.
    """

    def error(self, code: int, port: int) -> CannotListenError:
        """
        @param code: An errno.
        @param port: The port being bound.
        @return: The exception Twisted raises for that failure.
        """
        return CannotListenError(LOOPBACK, port, OSError(code, os.strerror(code)))

    def test_privilegedPortPermission(self) -> None:
        """
        Permission denied on a port below 1024 names every fix: start as root
        with C{user}, systemd socket activation, C{CAP_NET_BIND_SERVICE}.
        """
        for code in (errno.EACCES, errno.EPERM):
            message = explainBindError(self.error(code, 7), 7)
            self.assertTrue(message.startswith("permission denied; "), message)
            self.assertIn("root", message)
            self.assertIn('user = "NAME"', message)
            self.assertIn("systemd", message)
            self.assertIn("socket activation", message)
            self.assertIn("CAP_NET_BIND_SERVICE", message)
            self.assertNotIn("\n", message)

    def test_unprivilegedPortPermission(self) -> None:
        """
        Permission denied on a port of 1024 or above is just "permission
        denied": the privileged-port fixes would mislead.
        """
        self.assertEqual(
            explainBindError(self.error(errno.EACCES, 8000), 8000),
            "permission denied",
        )

    def test_addressInUse(self) -> None:
        """
        C{EADDRINUSE} says "address already in use" and how to share a port.
        """
        message = explainBindError(self.error(errno.EADDRINUSE, 7000), 7000)
        self.assertTrue(message.startswith("address already in use"), message)
        self.assertIn("reuse_port", message)

    def test_addressNotAvailable(self) -> None:
        """
        C{EADDRNOTAVAIL} says "address not available".
        """
        message = explainBindError(self.error(errno.EADDRNOTAVAIL, 7000), 7000)
        self.assertTrue(message.startswith("address not available"), message)

    def test_otherErrors(self) -> None:
        """
        Another error is its C{strerror}, lower-cased at the start; a bare
        exception is its C{str}.
        """
        self.assertEqual(
            explainBindError(OSError(errno.ENOBUFS, "No buffer space available"), 7),
            "no buffer space available",
        )
        self.assertEqual(explainBindError(ValueError("odd"), None), "odd")


class LimitTests(NetdTestMixin, TestCase):
    """
    Session limits, enforced on real connections.
    """

    async def test_maxSessionsPerPeer(self) -> None:
        """
        With C{max_sessions_per_peer = 2}, two connections are served and a
        third from the same address is closed at once by the server, and the
        refusal is counted.
        """
        service = self.startNetd(echoConfig(limits="max_sessions_per_peer = 2"))
        port = self.portNumber(service, "echo", "stream")

        def connect() -> tuple[list[bytes], bytes, float]:
            held = []
            try:
                echoes = []
                for _ in range(2):
                    s = socket.create_connection((LOOPBACK, port), timeout=10)
                    held.append(s)
                    s.sendall(b"x")
                    echoes.append(s.recv(1))
                third = socket.create_connection((LOOPBACK, port), timeout=10)
                held.append(third)
                started = time.monotonic()
                try:
                    data = third.recv(1)
                except ConnectionResetError:
                    data = b""
                return echoes, data, time.monotonic() - started
            finally:
                for s in held:
                    s.close()

        echoes, third, elapsed = await deferToThread(connect)
        self.assertEqual(echoes, [b"x", b"x"])
        self.assertEqual(third, b"")
        self.assertLess(elapsed, 5)
        policy = self.instance(service, "echo").context.policy
        self.assertEqual(
            dict(policy.refusals.totals), {"address at its limit of 2 sessions": 1}
        )

    async def test_denyTCP(self) -> None:
        """
        A denied peer's TCP connection is closed at once, without a session,
        and the refusal is counted.
        """
        service = self.startNetd(echoConfig(limits='deny = ["127.0.0.0/8"]'))
        port = self.portNumber(service, "echo", "stream")
        result = await deferToThread(tcpExchange, LOOPBACK, port, b"", False, 10.0)
        self.assertEqual(result.received, b"")
        self.assertLess(result.elapsed, 5)
        context = self.instance(service, "echo").context
        self.assertEqual(dict(context.policy.refusals.totals), {"in the deny list": 1})
        self.assertEqual(context.counters.sessions, 0)

    async def test_denyUDP(self) -> None:
        """
        A denied peer's datagram gets no echo and is counted as dropped.
        """
        service = self.startNetd(echoConfig(limits='deny = ["127.0.0.0/8"]'))
        port = self.portNumber(service, "echo", "datagram")
        counters = self.instance(service, "echo").context.counters
        client = self.udpClient()
        client.transport.write(b"let me in", (LOOPBACK, port))
        await waitFor(lambda: counters.datagramsIn == 1, what="datagram in")
        await settle(0.2)
        self.assertEqual(client.received, [])
        self.assertEqual((counters.datagramsOut, counters.datagramsDropped), (0, 1))

    async def test_idleTimeout(self) -> None:
        """
        With C{idle_timeout = 0.5}, a session that sends nothing is closed by
        the server after about half a second, and its session event gives
        "idle timeout" as the reason.
        """
        events = self.captureEvents()
        service = self.startNetd(echoConfig(limits="idle_timeout = 0.5"))
        port = self.portNumber(service, "echo", "stream")
        result = await deferToThread(tcpExchange, LOOPBACK, port, b"", False, 10.0)
        self.assertGreater(result.elapsed, 0.4)
        self.assertLess(result.elapsed, 5)
        await waitFor(lambda: any("bytesIn" in e for e in events), what="session event")
        sessions = [e for e in events if "bytesIn" in e]
        self.assertEqual(len(sessions), 1)
        self.assertEqual(sessions[0]["reason"], "idle timeout")
        self.assertEqual(sessions[0]["service"], "echo")

    async def test_maxBytes(self) -> None:
        """
        With C{max_bytes = 1000}, a session that sends 5000 bytes is cut:
        the client gets at most 1000 bytes back and the stream ends, and the
        session event says why.
        """
        events = self.captureEvents()
        service = self.startNetd(echoConfig(limits="max_bytes = 1000"))
        port = self.portNumber(service, "echo", "stream")
        result = await deferToThread(
            tcpExchange, LOOPBACK, port, b"y" * 5000, False, 10.0
        )
        self.assertLessEqual(len(result.received), 1000)
        await waitFor(lambda: any("bytesIn" in e for e in events), what="session event")
        (session,) = [e for e in events if "bytesIn" in e]
        self.assertEqual(session["reason"], "maximum session bytes reached")
        self.assertLessEqual(session["bytesOut"], 1000)


class FlowControlTests(NetdTestMixin, TestCase):
    """
    A client that sends but never reads cannot make echo buffer without
    bound.
    """

    async def test_echoStopsReading(self) -> None:
        """
        A client sends up to 64 MB to TCP echo without reading. The kernel
        stops accepting far short of 64 MB, because netd stopped reading:
        its transport is paused and its write buffer stays within a few
        times its C{bufferSize}.
        """
        service = self.startNetd(echoConfig())
        listener = self.listenerService(service, "echo", "stream")
        port = listener.port.getHost().port
        total = 64 << 20
        stall = 2.0

        def flood() -> tuple[socket.socket, int, bool]:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Fixed client buffers (no autotuning): what the kernel accepts
            # then depends on netd's side only.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            sock.settimeout(10)
            sock.connect((LOOPBACK, port))
            sock.setblocking(False)
            chunk = b"z" * (1 << 16)
            sent = 0
            lastProgress = time.monotonic()
            deadline = lastProgress + 30
            stalled = False
            with selectors.DefaultSelector() as sel:
                sel.register(sock, selectors.EVENT_WRITE)
                for _ in range(1_000_000):
                    now = time.monotonic()
                    if sent >= total or now > deadline:
                        break
                    if now - lastProgress > stall:
                        stalled = True
                        break
                    if not sel.select(0.1):
                        continue
                    try:
                        sent += sock.send(chunk)
                    except BlockingIOError:
                        continue
                    lastProgress = time.monotonic()
            return sock, sent, stalled

        sock, sent, stalled = await deferToThread(flood)
        self.addCleanup(sock.close)
        self.assertTrue(stalled, f"the kernel accepted {sent} bytes without stalling")
        self.assertLess(sent, 16 << 20)
        sessions = list(listener.factory.protocols)
        self.assertEqual(len(sessions), 1)
        transport = sessions[0].transport
        self.assertTrue(transport.producerPaused)
        buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        self.assertLessEqual(buffered, 4 * transport.bufferSize)
        self.assertLess(sessions[0].bytesIn, 16 << 20)
