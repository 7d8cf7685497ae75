# -*- test-case-name: tests.test_discard -*-
"""
The discard service (RFC 863): everything received is thrown away.

Over TCP the session wrapper of L{netd.sessions} counts the bytes; over UDP
L{netd.datagrams.ServiceDatagramProtocol} counts the datagrams. Nothing is
ever sent back.
"""

from __future__ import annotations


from twisted.internet.protocol import Factory
from twisted.protocols import wire

from netd.datagrams import ServiceDatagramProtocol
from netd.descriptions import DatagramListener
from netd.probe import ProbeFailed, ProbeTarget, silent, why
from netd.servicetype import ServiceContext, ServiceType


class DiscardDatagram(ServiceDatagramProtocol):
    """
    Counts datagrams (in the base class) and answers none.
    """


def buildStreamFactory(context: ServiceContext) -> Factory[wire.Discard]:
    """
    @param context: The service instance.
    @return: A factory of L{wire.Discard} protocols.
    """
    factory = Factory.forProtocol(wire.Discard)
    factory.noisy = False
    return factory


def buildDatagramProtocol(
    context: ServiceContext, listener: DatagramListener
) -> DiscardDatagram:
    """
    @param context: The service instance.
    @param listener: The UDP listener.
    @return: The protocol for it.
    """
    return DiscardDatagram(context)


def discardProbe(target: ProbeTarget) -> str:
    """
    Discard: bytes are accepted and nothing comes back.

    @param target: The listener.
    @return: What was checked.
    @raise ProbeFailed: If something comes back or the connection closes.
    """
    payload = b"x" * 64
    if target.transport == "datagram":
        with target.datagramSocket() as skt:
            skt.send(payload)
            try:
                reply = silent(skt)
            except OSError as e:
                raise ProbeFailed(f"sending failed: {why(e)}") from None
        if reply is not None:
            raise ProbeFailed(f"answered a datagram with {len(reply)} bytes")
        return "swallowed a datagram"
    with target.connect() as skt:
        try:
            skt.sendall(payload)
            reply = silent(skt)
        except OSError as e:
            raise ProbeFailed(f"exchange failed: {why(e)}") from None
    if reply == b"":
        raise ProbeFailed("closed the connection instead of swallowing")
    if reply is not None:
        raise ProbeFailed(f"answered {len(reply)} bytes")
    return f"swallowed {len(payload)} bytes"


discard = ServiceType(
    name="discard",
    description="RFC 863: throw away everything received, over TCP and UDP",
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=buildDatagramProtocol,
    probe=discardProbe,
)
