# -*- test-case-name: tests.test_sessions -*-
"""
Stream sessions: admission, limits and one log event per session, wrapped
around any service's protocol.

L{SessionFactory} is a L{WrappingFactory}: it asks the service's
L{SessionPolicy<netd.policy.SessionPolicy>} before building a protocol, and
wraps each one in a L{Session}, which counts bytes, enforces the idle
timeout, the session duration and byte limits, and logs one
structured event when the session ends. Every service type gets this the
same way, so it is written once.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any, cast

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.counters import ListenerCounters
from netd.interfaces import ISessionTransport
from netd.servicetype import ServiceContext
from netd.transport import WriteThroughServer


class IStreamTransport(ITCPTransport, IConsumer, IPushProducer):
    """
    What a stream service's protocol uses of its transport: a L{Session}
    around netd's TCP or UNIX transport, or Twisted's TLS protocol around a
    session. Each provides all of these interfaces (a session and the TLS
    protocol copy their transport's onto themselves).

    For type checking only, like Twisted's own C{_MakeTypesHappy} in
    L{twisted.protocols.portforward}: no class declares it, so never ask
    C{providedBy} about it.

    @ivar disconnecting: Whether the connection is closing: what is written
        now is never sent.
    """

    disconnecting: bool


def describeEnd(reason: Failure) -> str:
    """
    Why a connection ended, in words (Twisted's own messages, such as
    C{Connection to the other side was lost in a non-clean fashion}, say
    how rather than what happened).

    @param reason: The reason C{connectionLost} was given.
    @return: e.g. C{"closed"}, C{"reset by the peer"}.
    """
    if reason.check(ConnectionDone):
        return "closed"
    if reason.check(ConnectionAborted):
        return "aborted by netd"
    if reason.check(ConnectionLost):
        detail = " ".join(str(arg) for arg in reason.value.args)
        return (
            f"lost: {detail}" if detail else "lost: the peer went away without closing"
        )
    return reason.getErrorMessage()


def describePeer(address: IAddress) -> str:
    """
    Format a transport address for logs.

    @param address: An L{IAddress} provider.
    @return: C{"127.0.0.1:5000"}, C{"[::1]:5000"}, or the UNIX path.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        name = getattr(address, "name", None)
        return "unix:" + (
            name.decode("utf-8", "replace")
            if isinstance(name, bytes)
            else str(name or "unnamed")
        )
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def peerHost(address: IAddress | None) -> str:
    """
    The key sessions are counted under: the IP address, or C{"unix"}.

    @param address: An L{IAddress} provider (L{None} counts as C{"unix"}).
    @return: The host part.
    """
    return getattr(address, "host", None) or "unix"


@implementer(IHalfCloseableProtocol, ISessionTransport)
class Session(ProtocolWrapper):
    """
    One stream session of a service, around the service's own protocol.

    On netd's own TCP transport (L{WriteThroughServer}), which counts the
    bytes it moves, and with no C{max_bytes} limit to enforce, a session
    steps out of the data path once connected: the transport hands chunks
    straight to the service's protocol, and the protocol's writes go
    straight to the transport (L{_goDirect}); the counts are the
    transport's. That took two Python calls off every chunk of every
    session. Otherwise (another transport, a byte limit) every chunk goes
    through L{dataReceived} and L{write}, which count.

    The idle timeout is checked lazily: a timer looks at the byte counters
    every quarter of C{idle_timeout} and closes the session after four quiet
    looks in a row (so after between 1 and 1.25 times the timeout). Twisted's
    L{TimeoutMixin} resets a timer on every chunk instead, which measured
    0.6 µs per chunk: 4% of a 64-byte echo round trip.

    @ivar bytesIn: Bytes received.
    @ivar bytesOut: Bytes written.
    @ivar closeReason: Why netd closed the session, if it did.
    """

    _log = Logger()
    factory: SessionFactory
    transport: ITCPTransport

    _bytesIn = 0
    _bytesOut = 0
    _counting: WriteThroughServer | None = None
    closeReason: str | None = None
    _started = 0.0
    _deadline: IDelayedCall | None = None
    _idleCheck: IDelayedCall | None = None
    _idleLooks = 4

    def __init__(
        self, factory: SessionFactory, wrappedProtocol: IProtocol, host: str
    ) -> None:
        super().__init__(factory, wrappedProtocol)
        self.host = host
        self._maxBytes = factory.context.policy.limits.maxBytes

    def makeConnection(self, transport: ITCPTransport) -> None:
        """
        Start the clocks, then connect the service's protocol.

        @param transport: The real transport.
        """
        limits = self.factory.context.policy.limits
        reactor = self.factory.context.reactor
        self._started = reactor.seconds()
        if limits.idleTimeout:
            self._lastTotal = 0
            self._quietLooks = 0
            self._idleCheck = reactor.callLater(
                limits.idleTimeout / self._idleLooks, self._checkIdle
            )
        if limits.maxDuration:
            self._deadline = reactor.callLater(
                limits.maxDuration, self._cut, "maximum session duration reached"
            )
        direct = False
        if not self._maxBytes and isinstance(transport, WriteThroughServer):
            direct = True
            self._goDirect(transport)
        super().makeConnection(transport)
        if direct:
            # The protocol's own connectionMade may have bound its
            # dataReceived to something shorter (netd's echo does).
            self.dataReceived = self.wrappedProtocol.dataReceived  # type: ignore[method-assign]  # shadowed for speed, see _goDirect
        if isinstance(transport, WriteThroughServer):
            transport.deliverTo(self.dataReceived)

    def _goDirect(self, transport: WriteThroughServer) -> None:
        """
        Step out of the data path: chunks from the transport go straight to
        the service's protocol, and its writes straight to the transport,
        which counts both.

        Instance attributes shadow this class's L{dataReceived}, L{write}
        and L{writeSequence}; the transport calls C{protocol.dataReceived}
        and the service's protocol calls C{transport.write} on this object,
        so both find the other side's bound method without a call through
        here.

        @param transport: The real transport.
        """
        self._counting = transport
        self._bytesIn -= transport.bytesIn
        self._bytesOut -= transport.bytesOut
        # Shadowing the methods is the point (see above); Twisted names
        # writeSequence's argument iovec there, data here.
        self.dataReceived = self.wrappedProtocol.dataReceived  # type: ignore[method-assign]  # shadowed for speed
        self.write = transport.write  # type: ignore[method-assign]  # shadowed for speed
        self.writeSequence = transport.writeSequence  # type: ignore[method-assign,assignment]  # shadowed for speed

    @property
    def bytesIn(self) -> int:
        """
        Bytes received.
        """
        counting = self._counting
        return self._bytesIn + (counting.bytesIn if counting is not None else 0)

    @bytesIn.setter
    def bytesIn(self, value: int) -> None:
        self._bytesIn += value - self.bytesIn

    @property
    def bytesOut(self) -> int:
        """
        Bytes written (also those a protocol sent around the transport, with
        C{sendfile}, and added here).
        """
        counting = self._counting
        return self._bytesOut + (counting.bytesOut if counting is not None else 0)

    @bytesOut.setter
    def bytesOut(self, value: int) -> None:
        self._bytesOut += value - self.bytesOut

    def sendfileSocket(self) -> socket.socket | None:
        """
        @return: The connected socket under this session, or L{None} (see
            L{ISessionTransport.sendfileSocket}).
        """
        getHandle = getattr(self.transport, "getHandle", None)
        handle = getHandle() if getHandle is not None else None
        return handle if isinstance(handle, socket.socket) else None

    def dataReceived(self, data: bytes) -> None:
        """
        Count, enforce the byte limit, pass on.

        @param data: Bytes from the peer.
        """
        self._bytesIn += len(data)
        if self._maxBytes and self._bytesIn + self._bytesOut > self._maxBytes:
            self._cut("maximum session bytes reached")
            return
        self.wrappedProtocol.dataReceived(data)

    def write(self, data: bytes) -> None:
        """
        Count, enforce the byte limit, send.

        The limit is checked on output too, for services that send without
        being sent anything (chargen).

        @param data: Bytes for the peer.
        """
        self._bytesOut += len(data)
        if self._maxBytes and self._bytesIn + self._bytesOut > self._maxBytes:
            self._cut("maximum session bytes reached")
            return
        self.transport.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """
        Count, enforce the byte limit, send.

        @param data: A sequence of byte strings for the peer.
        """
        chunks = list(data)
        self._bytesOut += sum(map(len, chunks))
        if self._maxBytes and self._bytesIn + self._bytesOut > self._maxBytes:
            self._cut("maximum session bytes reached")
            return
        self.transport.writeSequence(chunks)

    def _checkIdle(self) -> None:
        """
        Look at the counters; close the session after enough quiet looks.
        """
        self._idleCheck = None
        if (refresh := self._hook("refreshCounters")) is not None:
            refresh()
        total = self.bytesIn + self.bytesOut
        if total != self._lastTotal:
            self._lastTotal = total
            self._quietLooks = 0
        else:
            self._quietLooks += 1
            if self._quietLooks >= self._idleLooks:
                self._cut("idle timeout")
                return
        context = self.factory.context
        self._idleCheck = context.reactor.callLater(
            context.policy.limits.idleTimeout / self._idleLooks, self._checkIdle
        )

    def _cut(self, reason: str) -> None:
        """
        Close the session at once, for a reason of netd's.

        The connection is aborted rather than closed gracefully: a client
        that stopped reading would otherwise hold it open forever. A
        service protocol that owns something beyond the connection (an
        exec program) ends it its own way: see L{abortSession}.

        @param reason: Why, for the session event.
        """
        self.abortSession(reason)

    def _hook(self, name: str) -> Any:
        """
        One of the optional methods a service protocol may define (looked
        up on its class, for the reason given in L{_halfCloseable}):

            - C{stopSession()}: end the session for netd (L{abortSession});
              the protocol closes the connection when it is done;
            - C{refreshCounters()}: update L{bytesIn}/L{bytesOut} for bytes
              that do not pass through netd (before each idle check and
              the session event);
            - C{sessionFields()}: extra fields for the session event.

        @param name: The method's name.
        @return: The bound method, or L{None}.
        """
        method = getattr(type(self.wrappedProtocol), name, None)
        if method is None:
            return None
        return method.__get__(self.wrappedProtocol)

    def abortSession(self, reason: str) -> None:
        """
        End the session now, for a reason of netd's (a limit, the drain):
        abort the connection, or let the service's protocol end it
        (C{stopSession}, see L{_hook}).

        @param reason: Why, for the session event.
        """
        if self.closeReason is None:
            self.closeReason = reason
        stop = self._hook("stopSession")
        if stop is not None:
            stop()
        else:
            self.transport.abortConnection()

    def _halfCloseable(self) -> IHalfCloseableProtocol | None:
        """
        The wrapped protocol, if its class is half-close aware.

        Its class, not the object: a TLS wrapper (L{TLSMemoryBIOProtocol})
        copies its transport's interfaces onto itself, this session's
        L{IHalfCloseableProtocol} among them, and would hand the call back
        here through its C{__getattr__}, for ever.

        @return: The protocol, or L{None}.
        """
        protocol = self.wrappedProtocol
        if IHalfCloseableProtocol.implementedBy(type(protocol)):
            return cast(IHalfCloseableProtocol, protocol)
        return None

    def readConnectionLost(self) -> None:
        """
        The peer will send no more: tell a half-close aware protocol, or
        close once pending output is written.
        """
        protocol = self._halfCloseable()
        if protocol is not None:
            protocol.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        The peer will receive no more: tell a half-close aware protocol, or
        close.
        """
        protocol = self._halfCloseable()
        if protocol is not None:
            protocol.writeConnectionLost()
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop the clocks, release the admission, log the session event.

        @param reason: Why the connection ended.
        """
        for timer in (self._idleCheck, self._deadline):
            if timer is not None and timer.active():
                timer.cancel()
        self._idleCheck = None
        factory = self.factory
        context = factory.context
        context.policy.release(self.host)
        if (refresh := self._hook("refreshCounters")) is not None:
            refresh()
        fields = self._hook("sessionFields")
        bytesIn = self.bytesIn
        bytesOut = self.bytesOut
        duration = context.reactor.seconds() - self._started
        counters = context.counters
        counters.sessions += 1
        counters.bytesIn += bytesIn
        counters.bytesOut += bytesOut
        listenerCounters = factory.counters
        listenerCounters.active -= 1
        listenerCounters.bytesIn += bytesIn
        listenerCounters.bytesOut += bytesOut
        listenerCounters.durations.observe(duration)
        if self.closeReason is not None:
            why = self.closeReason
        else:
            why = describeEnd(reason)
        self._log.info(
            "{service} session from {peer} on {listener} ended after "
            "{duration:.3f}s: {bytesIn} bytes in, {bytesOut} bytes out ({reason})",
            service=context.name,
            listener=factory.listener,
            peer=describePeer(self.getPeer()),
            duration=duration,
            bytesIn=bytesIn,
            bytesOut=bytesOut,
            reason=why,
            **(fields() if fields is not None else {}),
        )
        super().connectionLost(reason)


class SessionFactory(WrappingFactory[Session]):
    """
    Admits, wraps and accounts for the sessions of one listener.

    @ivar context: The service instance.
    @ivar listener: The listener's description, for log events.
    @ivar counters: The listener's counters (also in the service's
        C{listenerCounters}, for L{netd.metrics}).
    """

    protocol = Session
    noisy = False

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        context: ServiceContext,
        listener: str,
    ) -> None:
        super().__init__(wrappedFactory)
        self.context = context
        self.listener = listener
        self.counters = context.listenerCounters.setdefault(
            listener, ListenerCounters()
        )

    # Refusing returns None, as IProtocolFactory.buildProtocol allows and
    # WrappingFactory's annotation does not.
    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None
    ) -> Session | None:
        """
        Admit a connection, or refuse it by returning L{None} (Twisted then
        closes the socket at once).

        @param addr: The peer's address.
        @return: A L{Session} around the service's protocol, or L{None}.
        """
        host = peerHost(addr)
        policy = self.context.policy
        if not policy.admit(host):
            return None
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            policy.release(host)
            return None
        counters = self.counters
        counters.accepted += 1
        counters.active += 1
        return self.protocol(self, wrapped, host)
