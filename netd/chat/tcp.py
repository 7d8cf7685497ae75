# -*- test-case-name: tests.test_chat -*-
"""
The chat line protocol, over TCP, TLS or a UNIX socket.

L{ChatLineProtocol} is a L{LineReceiver}: UTF-8 lines ending in C{\\n} or
C{\\r\\n}. C{MAX_LENGTH} is set on purpose, from C{max_line_length}: an
over-long line is refused with a notice and skipped up to its end, and the
lines after it are read as usual (Twisted's default would drop the
connection, or the lines that follow). A client that keeps sending them is
disconnected by its L{ChatSession}.

Output is queued and written once per reactor iteration
(L{ChatServer.scheduleFlush}): in a busy room each client costs one write
per iteration, not one per message.

Output is bounded: the protocol registers an L{OutputGate} as the
transport's streaming producer, so the transport says when its write buffer
is full (C{pauseProducing}) and when it has drained (C{resumeProducing}).
Past C{max_pending_output} bytes written while it is full, the client is a
slow consumer and is disconnected at once, pending output dropped: a client
that never reads costs netd a bounded amount of memory and never slows the
others down.

Idle timeout, session caps per service and per address, and byte counting
come from L{netd.sessions.SessionFactory}, which wraps this factory (outside
TLS) like every stream service's.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IPushProducer, ISSLTransport
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.chat.commands import ChatServer, ChatSession, IChatFrontEnd
from netd.chat.hub import EventBatch
from netd.sessions import IStreamTransport, describePeer


@implementer(IPushProducer)
class OutputGate:
    """
    Learns from a transport whether its write buffer is full.

    The transport calls L{pauseProducing} when its buffer passes its
    high-water mark and L{resumeProducing} once it has drained; the front
    end counts what it writes in between.

    @ivar paused: Whether the transport's buffer is full.
    @ivar pending: Bytes written since it filled.
    """

    __slots__ = ("paused", "pending")

    def __init__(self) -> None:
        self.paused = False
        self.pending = 0

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full. (A transport calls this on every
        write while it stays full; only the first starts the count.)
        """
        if not self.paused:
            self.paused = True
            self.pending = 0

    def resumeProducing(self) -> None:
        """
        The transport's buffer has drained.
        """
        self.paused = False
        self.pending = 0

    def stopProducing(self) -> None:
        """
        The connection is going away; nothing to do.
        """


@implementer(IChatFrontEnd)
class ChatLineProtocol(LineReceiver):
    """
    One chat client on a stream.

    Not C{LineOnlyReceiver}: it hands lines over one by one (flood control
    per line) and drops the client on an over-long line, where netd hands a
    chunk's lines over together and skips an over-long one.

    @ivar server: The chat service.
    @ivar via: C{"tcp"}, C{"tls"} or C{"unix"}, for logs.
    @ivar session: The client's L{ChatSession}, once connected.
    @ivar gate: Tracks the transport's write buffer.
    """

    delimiter = b"\n"
    transport: IStreamTransport
    session: ChatSession | None = None
    _out: list[bytes]
    _discarding = False
    # Private Twisted API: see tests/test_twisted_canary.py. (LineReceiver's
    # own buffer and reentrancy flag, so its clearLineBuffer, setRawMode and
    # resumeProducing still see the unfinished line.)
    _busyReceiving = False
    _buffer = b""
    _pending = b""

    def __init__(self, server: ChatServer, via: str = "tcp") -> None:
        self.server = server
        self.via = via
        self.MAX_LENGTH = server.settings.maxLineLength + 1
        self._maxLine = server.settings.maxLineLength
        self._maxPending = server.settings.maxPendingOutput
        self.gate = OutputGate()
        self._out = []

    def connectionMade(self) -> None:
        """
        Turn Nagle off (chat lines are small and latency matters), watch the
        write buffer, greet the client.
        """
        transport = self.transport
        try:
            transport.setTcpNoDelay(True)
        except (AttributeError, NotImplementedError, OSError):
            pass  # a UNIX socket, or a test transport
        transport.registerProducer(self.gate, True)
        peer = transport.getPeer()
        if ISSLTransport.providedBy(transport):
            self.via = "tls"
        elif getattr(peer, "host", None) is None:
            self.via = "unix"
        self.session = ChatSession(self.server, self, describePeer(peer), self.via)
        self.session.start()

    def dataReceived(self, data: bytes) -> None:
        """
        Split lines, skipping the rest of an over-long line.

        The chunk is split once, and its lines go to the session together
        (L{ChatSession.linesReceived}). Twisted's L{LineReceiver.dataReceived}
        splits one line off at a time and copies the rest of the buffer each
        time: a 64 KiB chunk of 64-byte lines cost a thousand copies of up to
        64 KiB, a quarter of netd's time under a chat flood.

        A line longer than C{max_line_length} is refused by L{lineReceived};
        an unfinished one that is already too long is refused at once and
        skipped up to its end (L{_discarding}), so the buffer never holds
        more than C{MAX_LENGTH} bytes. Lines after one that ends the session
        (a kick, C{/quit}) are not read.

        @param data: Bytes from the client.
        """
        if self._busyReceiving:
            self._pending += data
            return
        self._busyReceiving = True
        try:
            while data:
                if self._discarding:
                    end = data.find(b"\n")
                    if end < 0:
                        return
                    data = data[end + 1 :]
                    self._discarding = False
                    continue
                lines = (self._buffer + data).split(b"\n")
                self._buffer = b""
                rest = lines.pop()
                session = self.session
                if session is None or session.closed:
                    return
                maxLine = self._maxLine
                accepted = []
                for line in lines:
                    if line[-1:] == b"\r":
                        line = line[:-1]
                    if len(line) > maxLine:
                        break
                    accepted.append(line)
                if len(accepted) < len(lines):
                    for line in lines:
                        self.lineReceived(line)
                        if session.closed:
                            return
                elif lines:
                    session.linesReceived(accepted)
                if session.closed or self.transport.disconnecting:
                    return
                if len(rest) > self.MAX_LENGTH:
                    self.lineLengthExceeded(rest)
                else:
                    self._buffer = rest
                # Bytes that arrived while the lines were handled.
                data, self._pending = self._pending, b""
        finally:
            self._busyReceiving = False

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Refuse an unfinished line that is already too long, and skip the
        rest of it.

        @param line: The bytes of the line so far.
        """
        self._discarding = True
        assert self.session is not None
        self.session.lineTooLong()

    def lineReceived(self, line: bytes) -> None:
        """
        Hand one line to the session.

        @param line: The line, without C{\\n}.
        """
        if line[-1:] == b"\r":
            line = line[:-1]
        session = self.session
        assert session is not None
        if len(line) > self._maxLine:
            session.lineTooLong()
        else:
            session.lineReceived(line)

    def writeBatch(self, batch: EventBatch) -> None:
        """
        Write events' lines: at once, unless server lines are queued (see
        L{flush}), to keep the order.

        @param batch: The events.
        """
        if self._out:
            self._out.append(batch.data)
        else:
            self._write(batch.data)

    def writeNotice(self, text: str) -> None:
        """
        Queue a line from the server, to be written with whatever else is
        written in this reactor iteration (see L{flush}).

        @param text: The line.
        """
        out = self._out
        if not out:
            self.server.scheduleFlush(self)
        out.append(text.encode("utf-8") + b"\r\n")

    def flush(self) -> None:
        """
        Write what was queued, in one write, within the output bound: while
        the transport's buffer is full, what is written counts against
        C{max_pending_output}, and past it the client is disconnected at
        once.
        """
        out = self._out
        if not out:
            return
        self._out = []
        self._write(out[0] if len(out) == 1 else b"".join(out))

    def _write(self, data: bytes) -> None:
        """
        Write, within the output bound.

        @param data: The bytes.
        """
        gate = self.gate
        if gate.paused:
            gate.pending += len(data)
            if gate.pending > self._maxPending:
                assert self.session is not None
                self.session.kick(
                    f"too slow: more than {self._maxPending} bytes of output pending",
                    abort=True,
                )
                return
        self.transport.write(data)

    def disconnect(self, abort: bool) -> None:
        """
        Close the connection.

        @param abort: Close now, dropping pending output; otherwise write
            what is queued first.
        """
        if abort:
            self._out = []
            self.transport.abortConnection()
        else:
            self.flush()
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        The client is gone: end its session.

        @param reason: Why.
        """
        if self.session is not None:
            self.session.end(_describeLoss(self.transport, reason))
        self._out = []


def _describeLoss(transport: object, reason: Failure) -> str:
    """
    Say why a connection ended, for the part notice.

    @param transport: The transport (a L{netd.sessions.Session} knows when
        netd cut it, e.g. for the idle timeout).
    @param reason: The failure Twisted gave.
    @return: E.g. C{"connection closed"} or C{"idle timeout"}.
    """
    closeReason = getattr(transport, "closeReason", None)
    if isinstance(closeReason, str):
        return closeReason
    if reason.check(ConnectionDone):
        return "connection closed"
    return "connection lost"


class ChatFactory(Factory[ChatLineProtocol]):
    """
    Builds a L{ChatLineProtocol} per connection, all sharing one
    L{ChatServer}.

    @ivar server: The chat service.
    """

    noisy = False

    def __init__(self, server: ChatServer) -> None:
        self.server = server

    def buildProtocol(self, addr: IAddress | None) -> ChatLineProtocol:
        """
        @param addr: The peer's address.
        @return: A protocol for it.
        """
        protocol = ChatLineProtocol(self.server)
        protocol.factory = self
        return protocol
