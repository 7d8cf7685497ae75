# -*- test-case-name: tests.test_echo -*-
"""
The common part of every netd datagram (UDP) protocol: counting, the
allow/deny filter, and replies that never raise.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IUDPTransport
from twisted.internet.protocol import DatagramProtocol

from netd.servicetype import ServiceContext


class ServiceDatagramProtocol(DatagramProtocol):
    """
    A datagram protocol bound to a service instance.

    Subclasses implement L{serviceDatagram}; this class counts every
    datagram, applies the service's allow/deny lists and counts drops.

    @ivar context: The service instance's shared state.
    """

    noisy = False
    # Set by the port before any datagram arrives (never None once running).
    transport: IUDPTransport

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.counters = context.counters
        self.filter = context.policy.filter
        self.drops = context.datagramDrops

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """
        Count a datagram, filter its source and hand it to L{serviceDatagram}.

        @param data: The payload.
        @param addr: The source C{(host, port, ...)}.
        """
        counters = self.counters
        counters.datagramsIn += 1
        counters.datagramBytesIn += len(data)
        if self.filter.active:
            reason = self.filter.check(addr[0])
            if reason is not None:
                self.drop(reason, addr[0])
                return
        self.serviceDatagram(data, addr)

    def serviceDatagram(self, data: bytes, addr: Any) -> None:
        """
        Handle a datagram that passed the filter. Subclasses override this.

        @param data: The payload.
        @param addr: The source address.
        """

    def drop(self, reason: str, host: str) -> None:
        """
        Count a datagram that is not served.

        @param reason: Why.
        @param host: Its source address.
        """
        self.counters.datagramsDropped += 1
        self.drops.record(reason, host)

    def reply(self, data: bytes, addr: Any) -> None:
        """
        Send a datagram, counting it, or counting the failure.

        A full socket buffer or an unreachable peer must not raise into the
        reactor: UDP is lossy, so the reply is counted as dropped.

        @param data: The payload.
        @param addr: The destination.
        """
        try:
            self.transport.write(data, addr)
        except OSError as e:
            self.drop(f"send failed ({e.strerror or e})", addr[0])
        else:
            self.counters.datagramsOut += 1
            self.counters.datagramBytesOut += len(data)
