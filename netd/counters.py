# -*- test-case-name: tests.test_listeners -*-
"""
Per-service traffic counters, shared by every listener of a service.
"""

from __future__ import annotations

from attrs import asdict, define


@define
class ServiceCounters:
    """
    What a service has carried since start.

    @ivar sessions: TCP (stream) sessions ended.
    @ivar bytesIn: Bytes received over ended stream sessions.
    @ivar bytesOut: Bytes sent over ended stream sessions.
    @ivar datagramsIn: Datagrams received.
    @ivar datagramBytesIn: Bytes in those datagrams.
    @ivar datagramsOut: Datagrams sent.
    @ivar datagramBytesOut: Bytes in those datagrams.
    @ivar datagramsDropped: Datagrams received but not answered or not
        accepted (refused source, reply budget, send failure).
    """

    sessions: int = 0
    bytesIn: int = 0
    bytesOut: int = 0
    datagramsIn: int = 0
    datagramBytesIn: int = 0
    datagramsOut: int = 0
    datagramBytesOut: int = 0
    datagramsDropped: int = 0

    def snapshot(self) -> dict[str, int]:
        """
        @return: The counters as a plain dict (for logs and status pages).
        """
        return asdict(self)
