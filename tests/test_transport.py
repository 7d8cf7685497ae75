# -*- test-case-name: tests.test_transport -*-
"""
Tests for L{netd.transport}.

Three layers: Twisted's own reactor-builder tests for TCP and TLS
transports, run with a reactor whose C{listenTCP} (and so C{listenSSL})
binds netd's L{TCPPort}, so every accepted connection is a
L{WriteThroughServer}; unit tests of the write-through decision on a fake
socket; and real-socket tests of ordering, flow control, closing,
half-close and TLS through netd's own listeners.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    TCP4ClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.test import test_tcp, test_tls
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from netd.config import loadConfig
from netd.services import serviceTypes
from netd.daemon import NetdService
from netd.sockets import TCPEndpoint, TCPPort
from netd.transport import WriteThroughServer, sendBufferEmpty
from tests.support import writeSelfSignedCertificate
from tests.test_listeners import LOOPBACK, freePort

EPOLL = "netd.reactor.NetdEPollReactor"


class _NetdListenTCPMixin:
    """
    Make a reactor-builder test listen with netd's L{TCPPort}.

    C{listenSSL} wraps its factory in TLS and calls C{listenTCP}, so the TLS
    tests run over L{WriteThroughServer} too. Only the epoll reactor, the
    one C{twistd} uses on Linux, is built.
    """

    _reactors = [EPOLL]

    def buildReactor(self) -> Any:
        """
        Build the reactor and replace its C{listenTCP} with one that binds a
        L{TCPPort}.

        @return: The reactor.
        """
        built = super().buildReactor()  # type: ignore[misc]

        def listenTCP(
            port: int, factory: Any, backlog: int = 50, interface: str = ""
        ) -> TCPPort:
            listening = TCPPort(port, factory, backlog, interface, built)
            listening.startListening()
            return listening

        built.listenTCP = listenTCP
        return built


class NetdTCP4ClientTests(_NetdListenTCPMixin, test_tcp.TCP4ClientTestsBuilder):
    """
    Twisted's IPv4 connection tests against a L{WriteThroughServer}.
    """


class NetdTCP6ClientTests(_NetdListenTCPMixin, test_tcp.TCP6ClientTestsBuilder):
    """
    Twisted's IPv6 connection tests against a L{WriteThroughServer}.
    """


class NetdTCPConnectionTests(_NetdListenTCPMixin, test_tcp.TCPConnectionTestsBuilder):
    """
    Twisted's TCP connection tests (half-close, producers, reading) against
    a L{WriteThroughServer}.
    """


class NetdTCPTransportTests(_NetdListenTCPMixin, test_tcp.TCPTransportTestsBuilder):
    """
    Twisted's stream transport and C{writeSequence} tests against a
    L{WriteThroughServer}.
    """


class NetdTCP4ConnectorTests(_NetdListenTCPMixin, test_tcp.TCP4ConnectorTestsBuilder):
    """
    Twisted's connector tests against a L{TCPPort}.
    """


class NetdTCPPortTests(_NetdListenTCPMixin, test_tcp.TCPPortTestsBuilder):
    """
    Twisted's C{listenTCP} port tests against a L{TCPPort}.
    """


class NetdAbortConnectionTests(_NetdListenTCPMixin, test_tcp.AbortConnectionTests):
    """
    Twisted's C{abortConnection} tests (with producers and pending writes)
    against a L{WriteThroughServer}.
    """


class NetdSSLClientTests(_NetdListenTCPMixin, test_tls.SSLClientTestsMixin):
    """
    Twisted's TLS connection tests, TLS over a L{WriteThroughServer}.
    """


class NetdStartTLSClientTests(_NetdListenTCPMixin, test_tls.StartTLSClientTestsMixin):
    """
    Twisted's C{startTLS} tests: the server side starts TLS on a
    L{WriteThroughServer}.
    """


class NetdTLSPortTests(_NetdListenTCPMixin, test_tls.TLSPortTestsBuilder):
    """
    Twisted's C{listenSSL} port tests against a L{TCPPort}.
    """


class NetdAbortSSLConnectionTests(
    _NetdListenTCPMixin, test_tls.AbortSSLConnectionTests
):
    """
    Twisted's C{abortConnection} tests over TLS on a L{WriteThroughServer}.
    """


for _builder in (
    NetdTCP4ClientTests,
    NetdTCP6ClientTests,
    NetdTCPConnectionTests,
    NetdTCPTransportTests,
    NetdTCP4ConnectorTests,
    NetdTCPPortTests,
    NetdAbortConnectionTests,
    NetdSSLClientTests,
    NetdStartTLSClientTests,
    NetdTLSPortTests,
    NetdAbortSSLConnectionTests,
):
    globals().update(_builder.makeTestCaseClasses())
del _builder


class FakeSocket:
    """
    A socket whose C{send} follows a script.

    @ivar script: What each C{send} does, in turn: an C{int} takes at most
        that many bytes, an exception is raised, and once the script is used
        up every C{send} takes everything.
    @ivar sent: The bytes taken by each C{send}.
    """

    def __init__(self, script: list[int | BaseException] | None = None) -> None:
        self.script = list(script or [])
        self.sent: list[bytes] = []

    def setblocking(self, flag: bool) -> None:
        """
        Ignore the blocking mode.

        @param flag: Ignored.
        """

    def fileno(self) -> int:
        """
        A file descriptor number that is never used.

        @return: C{-1}.
        """
        return -1

    incoming: list[bytes | BaseException] = []

    def recv(self, size: int) -> bytes:
        """
        Return or raise the next item of C{incoming}.

        @param size: The most bytes to return.
        @return: The bytes.
        """
        item = self.incoming.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item[:size]

    def shutdown(self, how: int) -> None:
        """
        Ignore a shutdown.

        @param how: Ignored.
        """

    def close(self) -> None:
        """
        Ignore a close.
        """

    def send(self, data: Any) -> int:
        """
        Take bytes as the script says.

        @param data: The bytes offered.
        @return: How many were taken.
        """
        action = self.script.pop(0) if self.script else len(data)
        if isinstance(action, BaseException):
            raise action
        taken = bytes(data[:action])
        self.sent.append(taken)
        return len(taken)


@implementer(IPushProducer)
class RecordingProducer:
    """
    A streaming producer that records the calls it gets.

    @ivar calls: The names of the methods called, in order.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        """
        Record a pause.
        """
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        """
        Record a resume.
        """
        self.calls.append("resume")

    def stopProducing(self) -> None:
        """
        Record a stop.
        """
        self.calls.append("stop")


class WriteThroughUnitTests(SynchronousTestCase):
    """
    When L{WriteThroughServer.write} sends at once and when it leaves the
    bytes to Twisted's buffering.
    """

    def makeServer(
        self, script: list[int | BaseException] | None = None
    ) -> tuple[WriteThroughServer, FakeSocket, MemoryReactor]:
        """
        Build a connected L{WriteThroughServer} on a L{FakeSocket}.

        @param script: The socket's script.
        @return: The transport, its socket and its reactor.
        """
        skt = FakeSocket(script)
        memory = MemoryReactorClock()
        server = WriteThroughServer(
            skt, Protocol(), ("127.0.0.1", 1234), None, 0, memory  # type: ignore[arg-type]
        )
        return server, skt, memory

    def queued(self, server: WriteThroughServer) -> bytes:
        """
        The bytes Twisted has queued on C{server}, in order.

        @param server: The transport.
        @return: The unsent bytes.
        """
        return server.dataBuffer[server.offset :] + b"".join(server._tempDataBuffer)

    def test_sendsAtOnceWhenIdle(self) -> None:
        """
        With nothing queued, a write is sent at once and the transport does
        not ask the reactor to watch for writability.
        """
        server, skt, memory = self.makeServer()
        server.write(b"hello")
        self.assertEqual(skt.sent, [b"hello"])
        self.assertEqual(self.queued(server), b"")
        self.assertNotIn(server, memory.getWriters())

    def test_partialSendQueuesTheRest(self) -> None:
        """
        What the kernel does not take is queued, and C{doWrite} sends it.
        """
        server, skt, memory = self.makeServer([2])
        server.write(b"hello")
        self.assertEqual(self.queued(server), b"llo")
        self.assertIn(server, memory.getWriters())
        server.doWrite()
        self.assertEqual(skt.sent, [b"he", b"llo"])
        self.assertNotIn(server, memory.getWriters())

    def test_wouldBlockQueuesAll(self) -> None:
        """
        C{EAGAIN} queues the whole write.
        """
        server, skt, memory = self.makeServer([OSError(errno.EAGAIN, "again")])
        server.write(b"hello")
        self.assertEqual(skt.sent, [])
        self.assertEqual(self.queued(server), b"hello")
        self.assertIn(server, memory.getWriters())

    def test_errorIsReportedByDoWrite(self) -> None:
        """
        A send error queues the write, so that C{doWrite} meets the error and
        reports the lost connection as Twisted always does.
        """
        reset = OSError(errno.ECONNRESET, "reset")
        server, skt, memory = self.makeServer([reset, reset])
        server.write(b"hello")
        self.assertEqual(self.queued(server), b"hello")
        self.assertIsInstance(server.doWrite(), Exception)

    def test_queuedBytesKeepOrder(self) -> None:
        """
        While anything is queued, writes are queued behind it, not sent.
        """
        server, skt, memory = self.makeServer([1])
        server.write(b"ab")
        server.write(b"cd")
        server.writeSequence([b"e", b"f"])
        self.assertEqual(skt.sent, [b"a"])
        self.assertEqual(self.queued(server), b"bcdef")
        server.doWrite()
        self.assertEqual(b"".join(skt.sent), b"abcdef")
        server.write(b"g")
        self.assertEqual(skt.sent[-1], b"g")

    def test_noWriteThroughWhenClosing(self) -> None:
        """
        After C{loseConnection} or C{loseWriteConnection}, writes take
        Twisted's path.
        """
        for close in ("loseConnection", "loseWriteConnection"):
            server, skt, memory = self.makeServer()
            getattr(server, close)()
            server.write(b"late")
            self.assertEqual(skt.sent, [], close)
            self.assertEqual(self.queued(server), b"late", close)

    def test_noWriteThroughWhenDisconnected(self) -> None:
        """
        A write on a lost connection is dropped, as Twisted drops it.
        """
        server, skt, memory = self.makeServer()
        server.connectionLost(Failure(ConnectionDone()))
        server.write(b"gone")
        self.assertEqual(skt.sent, [])
        self.assertEqual(self.queued(server), b"")

    def test_noWriteThroughAfterAbort(self) -> None:
        """
        After C{abortConnection}, nothing more reaches the socket, although
        the connection is only lost on the next turn of the reactor.
        """
        server, skt, memory = self.makeServer()
        server.abortConnection()
        server.write(b"late")
        self.assertEqual(skt.sent, [])

    def test_noWriteThroughWithPausedProducer(self) -> None:
        """
        While a streaming producer is paused, writes are queued, so that
        C{doWrite} drains them and resumes it.
        """
        server, skt, memory = self.makeServer([0])
        producer = RecordingProducer()
        server.registerProducer(producer, True)
        server.write(b"x" * (server.bufferSize + 1))
        self.assertEqual(producer.calls, ["pause"])
        server.write(b"data")
        self.assertEqual(skt.sent, [b""])
        server.doWrite()
        self.assertEqual(b"".join(skt.sent), b"x" * (server.bufferSize + 1) + b"data")
        self.assertEqual(producer.calls, ["pause", "pause", "resume"])
        server.write(b"after")
        self.assertEqual(skt.sent[-1], b"after")

    @settings(max_examples=500, deadline=None)
    @example([("registerPull", 0, 0), ("unregisterProducer", 0, 0)])
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "write",
                        "writeSequence",
                        "doWrite",
                        "registerStreaming",
                        "registerPull",
                        "unregisterProducer",
                        "loseConnection",
                        "loseWriteConnection",
                        "abortConnection",
                        "connectionLost",
                    ]
                ),
                st.integers(0, 3),
                st.sampled_from([0, 1, 9, 4000, 70000]),
            ),
            max_size=12,
        )
    )
    def test_cachedAnswerFollowsEveryTransition(
        self, steps: list[tuple[str, int, int]]
    ) -> None:
        """
        Whatever a connection goes through, the cached answer that L{write}
        tests is what L{WriteThroughServer._canWriteThrough} says after each
        step, and the socket gets the written bytes in order.

        @param steps: Operations, each with what the socket takes next (0
            to 3: nothing, a little, half, everything) and a size.
        """
        server, skt, memory = self.makeServer()
        written = b""
        counter = 0
        for name, take, size in steps:
            skt.script = [[0, 7, size // 2 + 1, size + 1][take]] * 2
            if name == "write":
                data = bytes([counter % 251]) * size
                counter += 1
                server.write(data)
                if server.connected and not server._writeDisconnected:
                    written += data
            elif name == "writeSequence":
                chunks = [bytes([counter % 251]) * 3] * (size % 10)
                counter += 1
                server.writeSequence(chunks)
                if server.connected and not server._writeDisconnected:
                    written += b"".join(chunks)
            elif name == "doWrite":
                if server.connected and not server._aborting:
                    server.doWrite()
            elif name == "registerStreaming":
                if server.producer is None:
                    server.registerProducer(RecordingProducer(), True)
            elif name == "registerPull":
                if server.producer is None:
                    server.registerProducer(RecordingProducer(), False)
            elif name == "connectionLost":
                if server.connected:
                    server.connectionLost(Failure(ConnectionDone()))
            else:
                getattr(server, name)()
            self.assertEqual(server._writeThrough, server._canWriteThrough(), name)
            self.assertTrue(written.startswith(b"".join(skt.sent)), name)

    def test_noWriteThroughWithPullProducer(self) -> None:
        """
        With a pull producer, writes are queued: C{doWrite} is what asks it
        for more.
        """
        server, skt, memory = self.makeServer()
        producer = RecordingProducer()
        server.registerProducer(producer, False)
        server.write(b"data")
        self.assertEqual(skt.sent, [])
        server.doWrite()
        self.assertEqual(skt.sent, [b"data"])
        self.assertEqual(producer.calls, ["resume", "resume"])

    def test_streamingProducerPausedWhenQueueFull(self) -> None:
        """
        A streaming producer is paused when the bytes the kernel did not
        take exceed C{bufferSize}, not before.
        """
        server, skt, memory = self.makeServer([10, 0])
        producer = RecordingProducer()
        server.registerProducer(producer, True)
        server.write(b"x" * (server.bufferSize + 10))
        self.assertEqual(producer.calls, [])
        server.write(b"y")
        self.assertEqual(producer.calls, ["pause"])
        self.assertTrue(server.producerPaused)

    def test_writeSequenceIsOneSend(self) -> None:
        """
        C{writeSequence} sends its chunks in one C{send}.
        """
        server, skt, memory = self.makeServer()
        server.writeSequence([b"a", b"b", b"c"])
        self.assertEqual(skt.sent, [b"abc"])

    def test_textIsRefused(self) -> None:
        """
        Text is refused with Twisted's C{TypeError}, on both methods.
        """
        server, skt, memory = self.makeServer()
        self.assertRaises(TypeError, server.write, "text")
        self.assertRaises(TypeError, server.writeSequence, [b"a", "text"])
        self.assertEqual(skt.sent, [])

    def test_doReadDeliversAndReportsEnds(self) -> None:
        """
        C{doRead} hands what C{recv} returns to the protocol, and reports an
        empty read as a clean close, C{EAGAIN} as nothing, and any other
        error as a lost connection, as Twisted's C{doRead} does.
        """
        from twisted.internet import main

        server, skt, memory = self.makeServer()
        received: list[bytes] = []
        server.protocol.dataReceived = received.append  # type: ignore[method-assign]
        skt.incoming = [
            b"ping",
            OSError(errno.EAGAIN, "again"),
            OSError(errno.ECONNRESET, "reset"),
            b"",
        ]
        self.assertIsNone(server.doRead())
        self.assertEqual(received, [b"ping"])
        self.assertIsNone(server.doRead())
        self.assertIs(server.doRead(), main.CONNECTION_LOST)
        self.assertIs(server.doRead(), main.CONNECTION_DONE)
        self.assertEqual(received, [b"ping"])

    def test_deliverTo(self) -> None:
        """
        By default every chunk goes to the protocol's C{dataReceived} as it
        is at that moment; after C{deliverTo}, to the receiver given, until
        C{deliverTo(None)}.
        """
        server, skt, memory = self.makeServer()
        first: list[bytes] = []
        second: list[bytes] = []
        chosen: list[bytes] = []
        server.protocol.dataReceived = first.append  # type: ignore[method-assign]
        skt.incoming = [b"a", b"b", b"c", b"d"]
        server.doRead()
        server.protocol.dataReceived = second.append  # type: ignore[method-assign]
        server.doRead()
        server.deliverTo(chosen.append)
        server.doRead()
        server.deliverTo(None)
        server.doRead()
        self.assertEqual((first, second, chosen), ([b"a"], [b"b", b"d"], [b"c"]))

    def test_sendBufferEmpty(self) -> None:
        """
        L{sendBufferEmpty} is true only while nothing is queued, and false
        for an object that has no send buffer.
        """
        server, skt, memory = self.makeServer([1])
        self.assertTrue(sendBufferEmpty(server))
        server.write(b"ab")
        self.assertFalse(sendBufferEmpty(server))
        server.doWrite()
        self.assertTrue(sendBufferEmpty(server))
        self.assertFalse(sendBufferEmpty(object()))

    def test_portUsesIt(self) -> None:
        """
        L{TCPPort}, which every C{tcp}, C{tcp6} and C{ssl} listener binds,
        accepts connections as L{WriteThroughServer}.
        """
        self.assertIs(TCPPort.transport, WriteThroughServer)


def pattern(size: int) -> bytes:
    """
    Bytes whose every 8-byte block holds its own offset, so that any
    reordering or loss shows.

    @param size: A multiple of 8.
    @return: The bytes.
    """
    return b"".join(b"%08x" % (i % 0xFFFFFFFF) for i in range(0, size, 8))


class Collector(Protocol):
    """
    A client that collects what it receives, optionally after not reading
    for a while.

    @ivar holdFor: Seconds to stop reading for after connecting, or L{None}.
    @ivar received: The chunks received.
    @ivar reason: Why the connection was lost, once it is.
    @ivar lost: Fires with L{None} when the connection is lost.
    """

    reason: Failure | None = None

    def __init__(self, holdFor: float | None = None) -> None:
        self.holdFor = holdFor
        self.received: list[bytes] = []
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        """
        Stop reading for C{holdFor} seconds, if set.
        """
        if self.holdFor is not None:
            self.transport.pauseProducing()  # type: ignore[union-attr]
            reactor.callLater(  # type: ignore[attr-defined]
                self.holdFor, self.transport.resumeProducing  # type: ignore[union-attr]
            )

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}.

        @param data: Bytes from the server.
        """
        self.received.append(data)

    def connectionLost(self, reason: Failure) -> None:
        """
        Keep C{reason} and fire L{lost}.

        @param reason: Why.
        """
        self.reason = reason
        self.lost.callback(None)


class ScriptedWriter(Protocol):
    """
    A server that writes a script of interleaved small and large writes and
    then closes, noting which writes were sent at once.

    @ivar script: The writes: C{bytes} for L{write}, a C{list} for
        C{writeSequence}.
    @ivar queuedAfter: For each write, how many bytes were queued after it.
    """

    def __init__(self, script: list[bytes | list[bytes]]) -> None:
        self.script = script
        self.queuedAfter: list[int] = []

    def connectionMade(self) -> None:
        """
        Write the script, then C{loseConnection}.
        """
        transport: Any = self.transport
        for step in self.script:
            if isinstance(step, list):
                transport.writeSequence(step)
            else:
                transport.write(step)
            queued = len(transport.dataBuffer) - transport.offset
            self.queuedAfter.append(queued + transport._tempDataLen)
        transport.loseConnection()


@implementer(IPushProducer)
class PatternProducer(Protocol):
    """
    A server that streams L{pattern} bytes as a registered streaming
    producer, then closes.

    @ivar total: How many bytes to send.
    @ivar chunk: How many per write.
    @ivar sent: How many have been written.
    @ivar paused: Whether the transport has paused this producer.
    @ivar pauses: The buffered byte counts seen at each pause.
    @ivar resumes: How many times it was resumed.
    """

    def __init__(self, total: int, chunk: int) -> None:
        self.data = pattern(total)
        self.chunk = chunk
        self.sent = 0
        self.paused = False
        self.pauses: list[int] = []
        self.resumes = 0

    def connectionMade(self) -> None:
        """
        Register as a streaming producer and start writing.
        """
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.produce()

    def produce(self) -> None:
        """
        Write chunks until paused or done; when done, unregister and close.
        """
        transport: Any = self.transport
        while not self.paused and self.sent < len(self.data):
            transport.write(self.data[self.sent : self.sent + self.chunk])
            self.sent += self.chunk
        if self.sent >= len(self.data):
            transport.unregisterProducer()
            transport.loseConnection()

    def pauseProducing(self) -> None:
        """
        Stop writing, noting how much the transport holds.
        """
        transport: Any = self.transport
        self.paused = True
        self.pauses.append(
            len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        )

    def resumeProducing(self) -> None:
        """
        Write again.
        """
        self.paused = False
        self.resumes += 1
        self.produce()

    def stopProducing(self) -> None:
        """
        Stop for good.
        """
        self.paused = True


@implementer(IHalfCloseableProtocol)
class HalfCloser(Collector):
    """
    A client that sends a payload, half-closes, and collects the reply
    until the server closes.

    @ivar payload: What to send.
    @ivar done: Fires with the bytes received when the server has closed its
        side.
    """

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        """
        Send the payload and shut down the write side.
        """
        transport: Any = self.transport
        for start in range(0, len(self.payload), 65536):
            transport.write(self.payload[start : start + 65536])
        transport.loseWriteConnection()

    def readConnectionLost(self) -> None:
        """
        The server has closed its side: report what came back.
        """
        self.done.callback(b"".join(self.received))
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """
        Our write side is closed; nothing to do.
        """


class UntilCollector(Collector):
    """
    A client that sends a payload and collects until as many bytes came
    back.

    @ivar payload: What to send.
    @ivar done: Fires with the bytes received.
    """

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload
        self.size = 0
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        """
        Send the payload in 64 KiB writes.
        """
        for start in range(0, len(self.payload), 65536):
            self.transport.write(  # type: ignore[union-attr]
                self.payload[start : start + 65536]
            )

    def dataReceived(self, data: bytes) -> None:
        """
        Collect, and close once everything is back.

        @param data: Bytes from the server.
        """
        super().dataReceived(data)
        self.size += len(data)
        if self.size >= len(self.payload):
            self.done.callback(b"".join(self.received))
            self.transport.loseConnection()  # type: ignore[union-attr]


class WriteThroughSocketTests(TestCase):
    """
    L{WriteThroughServer} on real loopback sockets, behind netd's
    L{TCPEndpoint} and netd's own listeners.
    """

    async def serve(self, protocol: Protocol) -> int:
        """
        Listen on a loopback port with a L{TCPEndpoint}, serving
        C{protocol} to the first connection.

        @param protocol: The server protocol.
        @return: The port number.
        """
        endpoint = TCPEndpoint(reactor, 0, LOOPBACK, 50, False)
        port = await endpoint.listen(Factory.forProtocol(lambda: protocol))
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def connect(self, portNumber: int, client: Protocol) -> None:
        """
        Connect C{client} to a loopback port.

        @param portNumber: The port.
        @param client: The client protocol.
        """
        await connectProtocol(TCP4ClientEndpoint(reactor, LOOPBACK, portNumber), client)

    async def test_orderAndCloseUnderSlowReader(self) -> None:
        """
        Small writes sent at once, large ones partly queued, and
        C{writeSequence}, interleaved while the client is not reading,
        arrive whole and in order, and C{loseConnection} closes cleanly only
        after the last byte.
        """
        data = pattern(8 * 1024 * 1024)
        cuts = [0, 16, 4 * 1024 * 1024, 4 * 1024 * 1024 + 8, 6 * 1024 * 1024]
        script: list[bytes | list[bytes]] = [
            data[cuts[0] : cuts[1]],
            data[cuts[1] : cuts[2]],
            data[cuts[2] : cuts[3]],
            [data[cuts[3] : cuts[3] + 8], data[cuts[3] + 8 : cuts[4]]],
            data[cuts[4] :],
        ]
        server = ScriptedWriter(script)
        client = Collector(holdFor=0.3)
        await self.connect(await self.serve(server), client)
        await client.lost
        self.assertEqual(b"".join(client.received), data)
        assert client.reason is not None
        self.assertTrue(client.reason.check(ConnectionDone))
        self.assertEqual(server.queuedAfter[0], 0)
        self.assertGreater(server.queuedAfter[1], 0)

    async def test_streamingProducerPausedWhenClientStopsReading(self) -> None:
        """
        A streaming producer is paused when the client stops reading, only
        once more than C{bufferSize} bytes are queued, is resumed when they
        have drained, and everything arrives in order.
        """
        total = 32 * 1024 * 1024
        server = PatternProducer(total, 16 * 1024)
        client = Collector(holdFor=0.3)
        await self.connect(await self.serve(server), client)
        await client.lost
        assert client.reason is not None
        self.assertTrue(client.reason.check(ConnectionDone))
        self.assertEqual(b"".join(client.received), server.data)
        self.assertTrue(server.pauses)
        self.assertGreaterEqual(server.resumes, len(server.pauses))
        bufferSize = WriteThroughServer.bufferSize
        for queued in server.pauses:
            self.assertGreater(queued, bufferSize)

    async def netdEcho(self, scheme: str) -> int:
        """
        Start netd with an echo service on one loopback listener.

        @param scheme: C{"tcp"} or C{"ssl"}.
        @return: The port number.
        """
        portNumber = freePort()
        listen = f"tcp:{portNumber}:interface={LOOPBACK}"
        if scheme == "ssl":
            directory = self.mktemp()
            os.makedirs(directory)
            key, cert = writeSelfSignedCertificate(directory)
            listen = (
                f"ssl:{portNumber}:privateKey={key}:certKey={cert}"
                f":interface={LOOPBACK}"
            )
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f'[services.echo]\ntype = "echo"\nlisten = ["{listen}"]\n')
        root = NetdService(loadConfig(serviceTypes(), path))
        self.addCleanup(root.stopService)
        root.startService()
        return portNumber

    async def test_halfCloseEchoesEverything(self) -> None:
        """
        A client that sends 4 MiB to netd's echo service and shuts down its
        write side gets all 4 MiB back before the server closes.
        """
        portNumber = await self.netdEcho("tcp")
        payload = pattern(4 * 1024 * 1024)
        client = HalfCloser(payload)
        await self.connect(portNumber, client)
        self.assertEqual(await client.done, payload)

    async def test_tlsEchoLargePayload(self) -> None:
        """
        Over netd's C{ssl:} echo listener, whose ciphertext goes through a
        L{WriteThroughServer}, 4 MiB come back whole and in order.
        """
        portNumber = await self.netdEcho("ssl")
        payload = pattern(4 * 1024 * 1024)
        client = UntilCollector(payload)
        endpoint = SSL4ClientEndpoint(
            reactor, LOOPBACK, portNumber, CertificateOptions()
        )
        await connectProtocol(endpoint, client)
        self.assertEqual(await client.done, payload)
