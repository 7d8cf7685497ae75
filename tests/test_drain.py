# -*- test-case-name: tests.test_drain -*-
"""
Tests for L{netd.drain} and the graceful stop of
L{NetdService<netd.daemon.NetdService>}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.config import parseConfig
from netd.services import serviceTypes
from netd.daemon import NetdService
from netd.drain import DRAIN_REASON, Drain, abortSession
from netd.sessions import Session
from tests.test_listeners import LOOPBACK, freePort, settle, waitFor
from tests.test_reload import Client, RecordingNotifier


class FakeTransport:
    """
    Records an abort.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class FakeSession:
    """
    A session with a transport and a close reason.
    """

    closeReason: str | None = None

    def __init__(self) -> None:
        self.transport = FakeTransport()


class DrainTests(SynchronousTestCase):
    """
    Tests for L{Drain}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.open: list[FakeSession] = []
        self.patch(Drain, "_log", Logger(observer=lambda event: None))

    def drain(self, timeout: float) -> tuple[Drain, list[int]]:
        """
        @param timeout: The deadline.
        @return: A started drain over C{self.open}, and where its result goes.
        """
        drain = Drain(lambda: list(self.open), self.clock, timeout)
        results: list[int] = []
        drain.start().addCallback(results.append)
        return drain, results

    def test_nothingOpen(self) -> None:
        """
        With no open session the drain is over at once.
        """
        drain, results = self.drain(30)
        self.assertEqual(results, [0])

    def test_sessionsEndInTime(self) -> None:
        """
        Sessions that end before the deadline are left alone; the drain is
        over when the last one ends.
        """
        first, second = FakeSession(), FakeSession()
        self.open += [first, second]
        drain, results = self.drain(30)
        self.open.remove(first)
        self.clock.advance(10)
        self.assertEqual(results, [])
        self.open.remove(second)
        self.clock.advance(0.05)
        self.assertEqual(results, [0])
        self.assertFalse(first.transport.aborted or second.transport.aborted)

    def test_deadline(self) -> None:
        """
        At the deadline, the sessions still open are aborted with the reason
        L{DRAIN_REASON}; the drain is over when they are gone.
        """
        session = FakeSession()
        self.open.append(session)
        drain, results = self.drain(2)
        self.clock.advance(1.95)
        self.assertFalse(session.transport.aborted)
        self.clock.advance(0.05)
        self.assertTrue(session.transport.aborted)
        self.assertEqual(session.closeReason, DRAIN_REASON)
        self.assertEqual(results, [])
        self.open.remove(session)
        self.clock.advance(0.05)
        self.assertEqual(results, [1])

    def test_abortNow(self) -> None:
        """
        L{Drain.abortNow} (a second SIGTERM) aborts at once.
        """
        session = FakeSession()
        self.open.append(session)
        drain, results = self.drain(30)
        drain.abortNow()
        self.assertTrue(session.transport.aborted)

    def test_giveUpOnStuckSessions(self) -> None:
        """
        Sessions that never report their end after the abort do not hold the
        stop forever.
        """
        self.open.append(FakeSession())
        drain, results = self.drain(1)
        self.clock.advance(1)
        self.clock.advance(Drain.graceAfterAbort)
        self.assertEqual(results, [1])

    def test_abortKeepsEarlierReason(self) -> None:
        """
        A session already closing for its own reason keeps it.
        """
        session = FakeSession()
        session.closeReason = "idle timeout"
        abortSession(session)
        self.assertEqual(session.closeReason, "idle timeout")
        self.assertTrue(session.transport.aborted)


class GracefulStopTests(TestCase):
    """
    Stopping a real netd with open sessions.
    """

    def start(self, netd: str = "") -> tuple[NetdService, int, RecordingNotifier]:
        """
        @param netd: Lines of the C{[netd]} table.
        @return: A started netd with echo on a TCP port, the port, and its
            notifier.
        """
        port = freePort()
        notifier = RecordingNotifier()
        root = NetdService(
            parseConfig(
                serviceTypes(),
                f"[netd]\n{netd}\n"
                f'[services.echo]\ntype = "echo"\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n',
                "<test>",
            ),
            notifier=notifier,
        )
        root.startService()
        return root, port, notifier

    async def connect(self, port: int) -> Client:
        """
        @param port: The port.
        @return: A connected client.
        """
        client = Client()
        connector = reactor.connectTCP(
            LOOPBACK, port, ClientFactory.forProtocol(lambda: client)
        )
        self.addCleanup(connector.disconnect)
        await waitFor(lambda: client.connected, what="connected")
        return client

    async def test_stopsListeningThenWaits(self) -> None:
        """
        L{NetdService.stopService} closes the listener at once (new
        connections are refused) and tells systemd C{STOPPING=1}, while an
        open session keeps working; the stop is over when it ends.
        """
        root, port, notifier = self.start()
        client = await self.connect(port)
        done: list[Any] = []
        root.stopService().addCallback(done.append)
        self.assertEqual(notifier.messages[-1][0], "STOPPING=1")
        await settle(0.05)
        with socket.socket() as probe:
            self.assertNotEqual(probe.connect_ex((LOOPBACK, port)), 0)
        client.transport.write(b"in flight")
        await waitFor(lambda: client.received == b"in flight", what="echo")
        self.assertEqual(done, [])
        client.transport.loseConnection()
        await waitFor(lambda: done, what="stop")
        self.assertTrue(client.lost)

    async def test_deadlineAbortsTheRest(self) -> None:
        """
        A session still open after C{drain_timeout} is aborted, and its
        session event says why.
        """
        events: list[dict[str, Any]] = []
        self.patch(Session, "_log", Logger(observer=events.append))
        root, port, notifier = self.start("drain_timeout = 0.2")
        client = await self.connect(port)
        done: list[Any] = []
        root.stopService().addCallback(done.append)
        await settle(0.1)
        self.assertFalse(client.lost)
        await waitFor(lambda: done, timeout=3, what="stop")
        self.assertTrue(client.lost)
        self.assertEqual([e["reason"] for e in events], [DRAIN_REASON])
