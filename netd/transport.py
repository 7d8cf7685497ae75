# -*- test-case-name: tests.test_transport -*-
"""
A TCP server transport that writes through to the socket when it can.

Twisted's L{FileDescriptor.write<twisted.internet.abstract.FileDescriptor.write>}
only queues: it calls C{startWriting} (an C{epoll_ctl}), the reactor turns
once more, then C{doWrite} sends and C{stopWriting} (another C{epoll_ctl}).
For a small reply to a small request that is most of the cost of the write.
L{WriteThroughServer} sends at once when nothing is queued, as asyncio's
transports do, and hands everything else (what the kernel did not take,
errors, closing and half-closed connections, paused producers, C{startTLS})
to Twisted's own buffering, so every transport contract stays Twisted's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from errno import EWOULDBLOCK
from typing import Any

from twisted.internet import main, tcp


def sendBufferEmpty(transport: Any) -> bool:
    """
    Whether a Twisted socket transport has nothing queued to send.

    Twisted has no public way to ask; this is the one netd helper that reads
    L{FileDescriptor<twisted.internet.abstract.FileDescriptor>}'s private
    buffer attributes. While it is true, bytes written to the socket by other
    means (C{sendfile}) go out in order.

    @param transport: A L{twisted.internet.abstract.FileDescriptor}.
    @return: C{True} if nothing is queued; C{False} if something is, or if
        C{transport} has no such buffer.
    """
    dataBuffer = getattr(transport, "dataBuffer", None)
    return (
        dataBuffer is not None
        # Private Twisted API: see tests/test_twisted_canary.py.
        and not getattr(transport, "_tempDataLen", 1)
        and getattr(transport, "offset", -1) == len(dataBuffer)
    )


class WriteThroughServer(tcp.Server):
    """
    A L{tcp.Server} whose L{write} sends straight to the socket when its send
    buffer is empty.

    Bytes written through never enter the buffer, so the buffer still holds
    exactly the bytes that Twisted has yet to send: ordering is kept (nothing
    is written through while anything is queued), C{loseConnection} and
    C{loseWriteConnection} still wait for the buffer, and a streaming producer
    is still paused when the buffered bytes exceed C{bufferSize}, which is
    what L{FileDescriptor._maybePauseProducer
    <twisted.internet.abstract.FileDescriptor._maybePauseProducer>} measures.

    It also counts the bytes it reads and is given to write, so that a
    session wrapper can take its byte counts from here instead of standing
    in the way of every chunk (L{netd.sessions.Session}).

    @ivar bytesIn: Bytes read from the socket.
    @ivar bytesOut: Bytes given to L{write} and L{writeSequence}.
    """

    bytesIn = 0
    bytesOut = 0
    _writeThrough = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writeThrough = self._canWriteThrough()
        self._deliver: Callable[[bytes], object] = self._toProtocol

    def _toProtocol(self, data: bytes) -> None:
        """
        Hand a chunk to the protocol's C{dataReceived}, looked up now.

        @param data: The bytes read.
        """
        self.protocol.dataReceived(data)

    def deliverTo(self, receiver: Callable[[bytes], object] | None) -> None:
        """
        Hand every chunk read to C{receiver} itself, instead of looking up
        the protocol's C{dataReceived} on every read (a lookup that Python
        cannot make fast when an instance attribute shadows a method, as
        netd's sessions do).

        The caller keeps C{receiver} in step with the protocol: a protocol
        that rebinds its C{dataReceived} calls this again.

        @param receiver: What receives the chunks, or L{None} to look up
            C{protocol.dataReceived} for every chunk again.
        """
        self._deliver = self._toProtocol if receiver is None else receiver

    def _canWriteThrough(self) -> bool:
        """
        Whether a write may go straight to the socket.

        It may when the connection is open for writing (connected, not
        closing, aborted or half-closed), no C{startTLS} layer is on it,
        nothing is queued, and no producer relies on C{doWrite}: a paused
        streaming producer is resumed by C{doWrite}, and a pull producer is
        asked for more by it, so both keep Twisted's path.

        @return: C{True} if L{write} may send at once.
        """
        # Private Twisted API: see tests/test_twisted_canary.py.
        return bool(
            self.connected
            and not self.disconnecting
            and not self._aborting
            and not self._writeDisconnecting
            and not self.TLS
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
            and (
                self.producer is None
                or (self.streamingProducer and not self.producerPaused)
            )
        )

    # _writeThrough caches _canWriteThrough() so that write() tests one
    # attribute instead of ten. Every method through which that answer can
    # become false recomputes it: writes that queue (in write and
    # writeSequence), closing, aborting, half-closing, startTLS, a producer
    # coming or going, and the connection's loss. doWrite, the only place
    # where the queue drains and a paused producer is resumed, recomputes it
    # too, so that it becomes true again.

    def doWrite(self) -> Any:
        """
        Send queued bytes as Twisted does, then see whether writes may go
        through again.

        @return: What Twisted's C{doWrite} returns.
        """
        try:
            return super().doWrite()
        finally:
            self._writeThrough = self._canWriteThrough()

    def loseConnection(self, *args: Any, **kwargs: Any) -> None:
        """
        Close after the queued bytes, as Twisted does; write no more through.
        """
        self._writeThrough = False
        super().loseConnection(*args, **kwargs)
        self._writeThrough = self._canWriteThrough()

    def loseWriteConnection(self) -> None:
        """
        Half-close after the queued bytes, as Twisted does; write no more
        through.
        """
        self._writeThrough = False
        super().loseWriteConnection()

    def abortConnection(self) -> None:
        """
        Close at once, as Twisted does; write no more through.
        """
        self._writeThrough = False
        super().abortConnection()

    def startTLS(self, *args: Any, **kwargs: Any) -> None:
        """
        Start TLS, as Twisted does; from now on every write is TLS's.
        """
        self._writeThrough = False
        super().startTLS(*args, **kwargs)
        self._writeThrough = self._canWriteThrough()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register a producer, as Twisted does; a pull producer turns
        writing through off.

        @param producer: The producer.
        @param streaming: Whether it is a push producer.
        """
        self._writeThrough = False
        try:
            super().registerProducer(producer, streaming)
        finally:
            self._writeThrough = self._canWriteThrough()

    def unregisterProducer(self) -> None:
        """
        Unregister the producer, as Twisted does.
        """
        super().unregisterProducer()
        self._writeThrough = self._canWriteThrough()

    def connectionLost(self, reason: Any) -> None:
        """
        The connection is gone: nothing more is written through.

        @param reason: Why.
        """
        self._writeThrough = False
        super().connectionLost(reason)

    def doRead(self) -> Any:
        """
        Read what the socket has and hand it to the protocol.

        L{tcp.Connection.doRead} followed by its C{_dataReceived}, in one
        method: one Python call less on every read.

        @return: L{None}, or why the connection is lost.
        """
        try:
            data = self.socket.recv(self.bufferSize)
        except OSError as se:
            if se.args[0] == EWOULDBLOCK:
                return None
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self.bytesIn += len(data)
        self._deliver(data)
        return None

    def write(self, data: bytes) -> None:
        """
        Send C{data} now if nothing is queued, and queue what is left.

        This is L{tcp.Connection.writeSomeData} written out, behind one
        test of the cached L{_canWriteThrough}, because it is the hot path
        of every reply: no call, no C{memoryview}, no C{untilConcludes}
        loop (Python retries C{EINTR} itself since PEP 475);
        C{bench/echo_instructions.py} counts what it costs. C{send} returns
        how many bytes the kernel took; the rest, or all of C{data} on an
        error (C{EWOULDBLOCK}, C{ENOBUFS} or a lost connection), goes to
        Twisted's L{write<tcp.Server.write>}, so that C{doWrite} sends it or
        reports the loss the usual way.

        @param data: The bytes to send.
        """
        if self._writeThrough and type(data) is bytes and data:
            try:
                # The kernel takes what fits in the socket's buffer, so
                # Twisted's SEND_LIMIT (a cap on each send of its queue)
                # is not needed here.
                sent = self.socket.send(data)
            except OSError:
                # EWOULDBLOCK, ENOBUFS or a lost connection: Twisted's
                # buffering below queues it, or doWrite reports the loss.
                sent = 0
            self.bytesOut += sent
            if sent == len(data):
                return
            data = data[sent:]
        self._writeThrough = False
        try:
            super().write(data)
        finally:
            self._writeThrough = self._canWriteThrough()
        self.bytesOut += len(data)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        """
        Send the chunks of C{iovec} as one L{write} if nothing is queued.

        @param iovec: A sequence of byte strings.
        """
        if self._writeThrough:
            chunks = list(iovec)
            if all(type(chunk) is bytes for chunk in chunks):
                self.write(b"".join(chunks))
                return
            iovec = chunks
        else:
            iovec = list(iovec)
        self._writeThrough = False
        try:
            super().writeSequence(iovec)
        finally:
            self._writeThrough = self._canWriteThrough()
        self.bytesOut += sum(map(len, iovec))
