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
from netd.servicetype import ServiceContext, ServiceType


class DiscardDatagram(ServiceDatagramProtocol):
    """
    Counts datagrams (in the base class) and answers none.
    """


def buildStreamFactory(context: ServiceContext) -> Factory:
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


discard = ServiceType(
    name="discard",
    description="RFC 863: throw away everything received, over TCP and UDP",
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=buildDatagramProtocol,
)
