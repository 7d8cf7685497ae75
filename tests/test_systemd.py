# -*- test-case-name: tests.test_systemd -*-
"""
Tests for L{netd.systemd}: notifications, the watchdog, and sockets passed
by systemd (descriptions, checks, adoption), with real sockets.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.systemd import ListenFDs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd import listeners
from netd.config import parseConfig
from netd.services import serviceTypes
from netd.daemon import NetdService
from netd.descriptions import DatagramListener, StreamListener, parseListener
from netd.listeners import ListenError
from netd.systemd import (
    InheritedSockets,
    Notifier,
    SocketActivationError,
    Watchdog,
    checkSocket,
    watchdogInterval,
)
from tests.test_listeners import LOOPBACK, DatagramCollector, tcpExchange, waitFor


class NotifySocket:
    """
    A stand-in for systemd's notification socket.

    @ivar address: The C{NOTIFY_SOCKET} value.
    @ivar socket: The bound datagram socket.
    """

    def __init__(self, address: str, bindTo: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(bindTo)
        self.socket.settimeout(5)

    def receive(self) -> str:
        """
        @return: The next message.
        """
        return self.socket.recv(4096).decode("utf-8")

    def close(self) -> None:
        """
        Close the socket.
        """
        self.socket.close()


class NotifierTests(SynchronousTestCase):
    """
    Tests for L{Notifier}.
    """

    def pathSocket(self) -> NotifySocket:
        """
        @return: A notification socket bound to a file path.
        """
        path = os.path.abspath(self.mktemp())
        server = NotifySocket(path, path)
        self.addCleanup(server.close)
        return server

    def test_pathSocket(self) -> None:
        """
        L{Notifier.ready} sends C{READY=1} and a C{STATUS=} line, in one
        datagram, to a C{NOTIFY_SOCKET} that is a path.
        """
        server = self.pathSocket()
        notifier = Notifier.fromEnvironment({"NOTIFY_SOCKET": server.address})
        self.addCleanup(notifier.close)
        self.assertTrue(notifier.enabled)
        self.assertTrue(notifier.ready("serving 2 services"))
        self.assertEqual(server.receive(), "READY=1\nSTATUS=serving 2 services")

    def test_abstractSocket(self) -> None:
        """
        A C{NOTIFY_SOCKET} starting with C{@} names an abstract socket.
        """
        name = f"netd-test-{os.getpid()}-{id(self)}"
        server = NotifySocket(f"@{name}", f"\0{name}")
        self.addCleanup(server.close)
        notifier = Notifier(server.address)
        self.addCleanup(notifier.close)
        notifier.watchdog()
        self.assertEqual(server.receive(), "WATCHDOG=1")

    def test_messages(self) -> None:
        """
        C{RELOADING=1} carries C{MONOTONIC_USEC}; C{STOPPING=1} and C{STATUS=}
        are sent as given, a status on one line.
        """
        server = self.pathSocket()
        notifier = Notifier(server.address)
        self.addCleanup(notifier.close)
        notifier.reloading()
        lines = server.receive().split("\n")
        self.assertEqual(lines[0], "RELOADING=1")
        self.assertTrue(lines[-1].startswith("MONOTONIC_USEC="), lines)
        self.assertGreater(int(lines[-1].split("=")[1]), 0)
        notifier.stopping("draining\n3 sessions")
        self.assertEqual(server.receive(), "STOPPING=1\nSTATUS=draining 3 sessions")
        notifier.status("ok")
        self.assertEqual(server.receive(), "STATUS=ok")

    def test_disabled(self) -> None:
        """
        Without C{NOTIFY_SOCKET} nothing is sent and nothing fails.
        """
        notifier = Notifier.fromEnvironment({})
        self.assertFalse(notifier.enabled)
        self.assertFalse(notifier.ready("x"))
        self.assertFalse(notifier.watchdog())

    def test_failureLoggedOnce(self) -> None:
        """
        A socket that is gone makes L{Notifier.notify} return C{False} and log
        one warning, however many messages follow.
        """
        events: list[dict[str, Any]] = []
        self.patch(Notifier, "_log", Logger(observer=events.append))
        notifier = Notifier(os.path.abspath(self.mktemp()))
        self.addCleanup(notifier.close)
        self.assertFalse(notifier.ready("a"))
        self.assertFalse(notifier.watchdog())
        self.assertEqual(len(events), 1)
        self.assertIn("cannot notify", events[0]["log_format"])


class WatchdogTests(SynchronousTestCase):
    """
    Tests for L{watchdogInterval} and L{Watchdog}.
    """

    def test_interval(self) -> None:
        """
        C{WATCHDOG_USEC} gives the timeout in seconds, for this process or
        when C{WATCHDOG_PID} is absent; otherwise there is no watchdog.
        """
        self.assertEqual(watchdogInterval({"WATCHDOG_USEC": "30000000"}, 7), 30.0)
        self.assertEqual(
            watchdogInterval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, 7),
            2.0,
        )
        self.assertIsNone(
            watchdogInterval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, 7)
        )
        self.assertIsNone(watchdogInterval({}, 7))
        self.assertIsNone(watchdogInterval({"WATCHDOG_USEC": "soon"}, 7))
        self.assertIsNone(watchdogInterval({"WATCHDOG_USEC": "0"}, 7))

    def test_pingsAtHalfTheTimeout(self) -> None:
        """
        L{Watchdog} pings at once, then every half timeout, and stops when
        stopped.
        """
        pings: list[str] = []

        class Recorder(Notifier):
            def notify(self, *assignments: str) -> bool:
                pings.extend(assignments)
                return True

        clock = Clock()
        watchdog = Watchdog(Recorder("/nowhere"), 10.0, clock)
        watchdog.startService()
        self.assertEqual(pings, ["WATCHDOG=1"])
        clock.advance(4.9)
        self.assertEqual(len(pings), 1)
        clock.advance(0.1)
        self.assertEqual(len(pings), 2)
        clock.advance(5)
        self.assertEqual(len(pings), 3)
        watchdog.stopService()
        clock.advance(50)
        self.assertEqual(len(pings), 3)


class SystemdDescriptionTests(SynchronousTestCase):
    """
    Tests for C{systemd:} listener descriptions.
    """

    def test_streamByName(self) -> None:
        """
        C{systemd:NAME} and C{systemd:name=NAME} are stream listeners naming
        a passed socket.
        """
        for text in ("systemd:web", "systemd:name=web", "systemd:web:type=stream"):
            listener = parseListener(text)
            self.assertIsInstance(listener, StreamListener)
            self.assertEqual(
                (listener.kind, listener.fdName, listener.transport),
                ("systemd", "web", "stream"),
            )

    def test_datagram(self) -> None:
        """
        C{type=datagram} makes a datagram listener, with C{maxPacketSize}.
        """
        listener = parseListener("systemd:dns:type=datagram:maxPacketSize=1500")
        self.assertIsInstance(listener, DatagramListener)
        self.assertEqual(
            (listener.kind, listener.fdName, listener.maxPacketSize),
            ("systemd", "dns", 1500),
        )
        self.assertEqual(listener.transport, "datagram")

    def test_twistedSyntax(self) -> None:
        """
        Twisted's C{systemd:domain=INET:index=N} is accepted.
        """
        listener = parseListener("systemd:domain=INET:index=1")
        self.assertEqual((listener.fdIndex, listener.domain), (1, "INET"))

    def test_errors(self) -> None:
        """
        Each mistake gets a message naming it.
        """
        for text, message in (
            ("systemd:", "printable"),
            ("systemd:a:index=0", "not both"),
            ("systemd:a:type=seqpacket", "stream or datagram"),
            ("systemd:a:domain=IPX", "domain 'IPX'"),
            ("systemd:a:type=datagram:domain=UNIX", "UNIX datagram"),
            ("systemd:a:maxPacketSize=900", "type=datagram only"),
            ("systemd:a:bogus=1", "unknown option 'bogus'"),
            ("systemd:a:b", "expected systemd:NAME"),
        ):
            error = self.assertRaises(ValueError, parseListener, text)
            self.assertIn(message, str(error), text)

    def test_sameSocketTwice(self) -> None:
        """
        Naming one passed socket twice, in any transport, is a configuration
        error; the file validates without systemd (nothing is looked up).
        """
        config = parseConfig(
            serviceTypes(),
            '[services.a]\ntype = "echo"\n'
            'listen = ["systemd:x", "systemd:y:type=datagram"]\n',
            "<test>",
        )
        self.assertEqual(len(config.services[0].listeners), 2)
        error = self.assertRaises(
            Exception,
            parseConfig,
            serviceTypes(),
            '[services.a]\ntype = "echo"\n'
            'listen = ["systemd:x", "systemd:x:type=datagram"]\n',
            "<test>",
        )
        self.assertIn("same address", str(error))


class CheckSocketTests(SynchronousTestCase):
    """
    Tests for L{checkSocket} and L{InheritedSockets.find}.
    """

    def socket(self, kind: int, listen: bool = True) -> socket.socket:
        """
        @param kind: C{SOCK_STREAM} or C{SOCK_DGRAM}.
        @param listen: For a stream socket, whether to listen.
        @return: A socket bound on loopback, closed after the test.
        """
        skt = socket.socket(socket.AF_INET, kind)
        self.addCleanup(skt.close)
        skt.bind((LOOPBACK, 0))
        if kind == socket.SOCK_STREAM and listen:
            skt.listen(5)
        return skt

    def test_matching(self) -> None:
        """
        A listening stream socket serves a stream listener, a datagram socket
        a datagram one; the family is returned.
        """
        stream = self.socket(socket.SOCK_STREAM)
        datagram = self.socket(socket.SOCK_DGRAM)
        self.assertEqual(checkSocket(stream.fileno(), "stream", None), socket.AF_INET)
        self.assertEqual(
            checkSocket(datagram.fileno(), "datagram", "INET"), socket.AF_INET
        )

    def test_typeMismatch(self) -> None:
        """
        A datagram socket for a stream listener (and the other way round) is
        an error saying which is which and what to fix.
        """
        datagram = self.socket(socket.SOCK_DGRAM)
        error = self.assertRaises(
            SocketActivationError, checkSocket, datagram.fileno(), "stream", None
        )
        self.assertIn(
            "passed a datagram socket but this listener is stream", str(error)
        )
        self.assertIn("type=datagram", str(error))
        stream = self.socket(socket.SOCK_STREAM)
        error = self.assertRaises(
            SocketActivationError, checkSocket, stream.fileno(), "datagram", None
        )
        self.assertIn(
            "passed a stream socket but this listener is datagram", str(error)
        )

    def test_notListening(self) -> None:
        """
        A stream socket that is not listening (C{Accept=yes}) is refused.
        """
        stream = self.socket(socket.SOCK_STREAM, listen=False)
        error = self.assertRaises(
            SocketActivationError, checkSocket, stream.fileno(), "stream", None
        )
        self.assertIn("Accept=no", str(error))

    def test_familyMismatch(self) -> None:
        """
        A C{domain=} that does not match the socket's family is an error.
        """
        stream = self.socket(socket.SOCK_STREAM)
        error = self.assertRaises(
            SocketActivationError, checkSocket, stream.fileno(), "stream", "INET6"
        )
        self.assertIn("not AF_INET6", str(error))

    def test_find(self) -> None:
        """
        L{InheritedSockets.find} finds by name or index, and otherwise says
        what was passed.
        """
        sockets = InheritedSockets([3, 4], ["web", "dns"])
        self.assertEqual(sockets.find("dns", None), 4)
        self.assertEqual(sockets.find(None, 0), 3)
        error = self.assertRaises(SocketActivationError, sockets.find, "x", None)
        self.assertIn("no socket named 'x'", str(error))
        self.assertIn("passed: web, dns", str(error))
        error = self.assertRaises(
            SocketActivationError, InheritedSockets([], []).find, "x", None
        )
        self.assertIn("no sockets were passed", str(error))

    def test_fromListenFDs(self) -> None:
        """
        Names come in order, duplicates included (systemd's default name is
        the unit's, shared by every socket of the unit).
        """
        record = ListenFDs([3, 4, 5], ("a.socket", "a.socket", "b"))
        sockets = InheritedSockets.fromListenFDs(record)
        self.assertEqual(
            (sockets.fds, sockets.names), ([3, 4, 5], ["a.socket"] * 2 + ["b"])
        )


class AdoptionTests(TestCase):
    """
    Listeners serving sockets "passed by systemd" (bound by the test).
    """

    def passSockets(self, sockets: dict[str, socket.socket]) -> None:
        """
        Make netd believe systemd passed these sockets.

        @param sockets: By C{FileDescriptorName=}.
        """
        inherited = InheritedSockets(
            [s.fileno() for s in sockets.values()], list(sockets)
        )
        self.patch(listeners, "inheritedSockets", lambda: inherited)

    def bound(self, kind: int) -> socket.socket:
        """
        @param kind: C{SOCK_STREAM} or C{SOCK_DGRAM}.
        @return: A blocking socket on loopback (as systemd passes them),
            listening if a stream one.
        """
        skt = socket.socket(socket.AF_INET, kind)
        self.addCleanup(skt.close)
        skt.bind((LOOPBACK, 0))
        if kind == socket.SOCK_STREAM:
            skt.listen(5)
        return skt

    async def test_tcpAndUdp(self) -> None:
        """
        A stream and a datagram socket passed by systemd are served by echo,
        and logged with their real addresses.
        """
        tcp, udp = self.bound(socket.SOCK_STREAM), self.bound(socket.SOCK_DGRAM)
        self.passSockets({"e-tcp": tcp, "e-udp": udp})
        events: list[dict[str, Any]] = []
        self.patch(listeners.ListenerService, "_log", Logger(observer=events.append))
        service = NetdService(
            parseConfig(
                serviceTypes(),
                '[services.echo]\ntype = "echo"\n'
                'listen = ["systemd:e-tcp", "systemd:e-udp:type=datagram"]\n',
                "<test>",
            )
        )
        self.addCleanup(service.stopService)
        service.startService()
        tcpPort, udpPort = tcp.getsockname()[1], udp.getsockname()[1]
        result = await deferToThread(tcpExchange, LOOPBACK, tcpPort, b"adopted")
        self.assertEqual(result.received, b"adopted")
        client = DatagramCollector()
        clientPort = reactor.listenUDP(0, client, interface=LOOPBACK)
        self.addCleanup(clientPort.stopListening)
        client.transport.write(b"datagram", (LOOPBACK, udpPort))
        await waitFor(lambda: client.received, what="UDP echo")
        self.assertEqual(client.received[0][0], b"datagram")
        lines = [e["address"] + e["note"] for e in events]
        self.assertIn(f"tcp:127.0.0.1:{tcpPort} (systemd socket e-tcp)", lines)
        self.assertIn(f"udp:127.0.0.1:{udpPort} (systemd socket e-udp)", lines)
        self.assertEqual(service.served.ownPorts, {tcpPort, udpPort})

    def test_mismatchIsAListenError(self) -> None:
        """
        A datagram socket named by a stream listener stops start-up with a
        L{ListenError} naming the service, the listener and the mismatch.
        """
        self.passSockets({"x": self.bound(socket.SOCK_DGRAM)})
        service = NetdService(
            parseConfig(
                serviceTypes(),
                '[services.echo]\ntype = "echo"\nlisten = ["systemd:x"]\n',
                "t",
            )
        )
        self.addCleanup(service.stopService)
        error = self.assertRaises(ListenError, service.startService)
        self.assertEqual((error.service, error.listener), ("echo", "systemd:x"))
        self.assertIn("datagram socket but this listener is stream", str(error))

    def test_missingIsAListenError(self) -> None:
        """
        A name systemd did not pass stops start-up with a L{ListenError}.
        """
        self.passSockets({})
        service = NetdService(
            parseConfig(
                serviceTypes(),
                '[services.echo]\ntype = "echo"\nlisten = ["systemd:x"]\n',
                "t",
            )
        )
        self.addCleanup(service.stopService)
        error = self.assertRaises(ListenError, service.startService)
        self.assertIn("no socket named 'x' was passed by systemd", str(error))
