# -*- test-case-name: tests.test_echo -*-
"""
The echo service (RFC 862): every byte, or every datagram, goes back.

TCP: L{Echo} is Twisted's L{wire.Echo} plus flow control (the transport is
registered as its own producer, so a client that sends but never reads makes
netd stop reading, not buffer) and half-close (a client that shuts down its
sending side still gets everything echoed before the connection closes).

UDP: L{EchoDatagram} answers each datagram with the same bytes, guarded by
L{netd.reflection.ReplyGuard} so that it can be neither a reflector nor one
end of a loop.
"""

from __future__ import annotations

import time
import socket
import os

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory
from twisted.protocols import wire
from zope.interface import implementer

from netd.datagrams import ServiceDatagramProtocol
from netd.descriptions import DatagramListener
from netd.reflection import ReplyGuard, guardFor, guardSettings
from netd.probe import ProbeFailed, ProbeTarget, receiveExactly, why
from netd.servicetype import ServiceContext, ServiceType
from netd.sessions import IStreamTransport


@implementer(IHalfCloseableProtocol)
class Echo(wire.Echo):
    """
    RFC 862 over a stream, with flow control and half-close.
    """

    transport: IStreamTransport

    def connectionMade(self) -> None:
        """
        Register the transport as its own streaming producer: when its write
        buffer is full it pauses itself, which stops reading from the client.

        Then make every chunk go straight to the transport's C{write}: an
        instance attribute instead of L{wire.Echo.dataReceived}'s call, one
        Python call less per chunk. A session on netd's transport binds the
        transport to it directly (L{netd.sessions.Session}), so a chunk goes
        from the socket to C{write} with nothing in between.
        """
        self.transport.registerProducer(self.transport, True)
        self.dataReceived = self.transport.write  # type: ignore[method-assign]  # shadowed for speed

    def readConnectionLost(self) -> None:
        """
        The client sent its last byte: finish writing, then close.
        """
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        The client cannot receive any more: there is nothing left to do.
        """
        self.transport.unregisterProducer()
        self.transport.loseConnection()


class EchoDatagram(ServiceDatagramProtocol):
    """
    RFC 862 over UDP, behind a L{ReplyGuard}.

    A reply is the request's own bytes, so it is never larger than the
    request.

    @ivar guard: Decides which sources get a reply.
    """

    def __init__(self, context: ServiceContext, guard: ReplyGuard) -> None:
        super().__init__(context)
        self.guard = guard

    def datagramReceived(
        self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]
    ) -> None:
        """
        Echo one datagram, unless the filter or the guard says no.

        This is the hot path of UDP echo, so it is written out flat rather
        than through L{serviceDatagram}.

        @param data: The payload.
        @param addr: The source C{(host, port)}, or C{(host, port, flowinfo,
            scope)} for IPv6.
        """
        counters = self.counters
        counters.datagramsIn += 1
        counters.datagramBytesIn += len(data)
        host = addr[0]
        reason = self.filter.check(host) if self.filter.active else None
        if reason is None:
            reason = self.guard.check(host, addr[1])
        if reason is not None:
            self.drop(reason, host)
            return
        self.reply(data, addr)


def buildStreamFactory(context: ServiceContext) -> Factory[Echo]:
    """
    @param context: The service instance.
    @return: A factory of L{Echo} protocols.
    """
    factory = Factory.forProtocol(Echo)
    factory.noisy = False
    return factory


def buildDatagramProtocol(
    context: ServiceContext, listener: DatagramListener
) -> EchoDatagram:
    """
    @param context: The service instance.
    @param listener: The UDP listener.
    @return: The protocol for it, with its own reply guard.
    """
    return EchoDatagram(context, guardFor(context))


def echoProbe(target: ProbeTarget) -> str:
    """
    Echo: random bytes come back identical, over TCP or UDP.

    @param target: The listener.
    @return: What was checked.
    @raise ProbeFailed: If they do not.
    """
    token = os.urandom(16).hex().encode("ascii")
    started = time.monotonic()
    if target.transport == "datagram":
        with target.datagramSocket() as skt:
            for attempt in range(3):
                skt.send(token)
                skt.settimeout(target.timeout / 3)
                try:
                    reply = skt.recv(65535)
                except socket.timeout:
                    continue
                except OSError as e:
                    raise ProbeFailed(f"no reply: {why(e)}") from None
                if reply != token:
                    raise ProbeFailed(f"replied {len(reply)} different bytes")
                elapsed = (time.monotonic() - started) * 1000
                return f"echoed a datagram in {elapsed:.1f} ms"
        raise ProbeFailed(
            f"no reply to 3 datagrams within {target.timeout:g}s (are 127.0.0.1/::1 "
            "allowed, and the reply guard's limits above 3 datagrams?)"
        )
    with target.connect() as skt:
        try:
            skt.sendall(token)
            reply = receiveExactly(skt, len(token))
        except OSError as e:
            raise ProbeFailed(f"exchange failed: {why(e)}") from None
    if reply != token:
        raise ProbeFailed(f"sent {len(token)} bytes, got back {reply[:40]!r}")
    elapsed = (time.monotonic() - started) * 1000
    return f"echoed {len(token)} bytes in {elapsed:.1f} ms"


echo = ServiceType(
    name="echo",
    description="RFC 862: send back every byte (TCP) or datagram (UDP)",
    settings=guardSettings(),
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=buildDatagramProtocol,
    probe=echoProbe,
)
