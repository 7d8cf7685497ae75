# -*- test-case-name: tests -*-
"""
Helpers shared by netd's tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.task import Clock

from netd.config import Limits, ServiceConfig
from netd.drops import DropLog
from netd.policy import SessionPolicy
from netd.services import serviceTypes
from netd.servicetype import ServiceContext


def makeContext(
    type: str = "echo",
    limits: Limits | None = None,
    settings: Mapping[str, Any] | None = None,
    reactor: Any = None,
    ownPorts: set[int] | None = None,
) -> ServiceContext:
    """
    Build the shared state of a service instance, on a fake clock.

    @param type: The service type.
    @param limits: Its limits (defaults if L{None}).
    @param settings: Type-specific settings over the type's defaults.
    @param reactor: The reactor (a L{Clock} if L{None}).
    @param ownPorts: netd's own ports (empty if L{None}).
    @return: The context.
    """
    serviceType = serviceTypes()[type]
    values = {setting.key: setting.default for setting in serviceType.settings}
    values.update(settings or {})
    limits = limits if limits is not None else Limits()
    reactor = reactor if reactor is not None else Clock()
    config = ServiceConfig(type, type, (), limits, values)
    return ServiceContext(
        config=config,
        policy=SessionPolicy(
            limits, DropLog(type, "refused a session from", reactor, 10)
        ),
        datagramDrops=DropLog(type, "dropped a datagram from", reactor, 10),
        ownPorts=ownPorts if ownPorts is not None else set(),
        reactor=reactor,
    )


class FakeDatagramTransport:
    """
    Records datagrams written, like a UDP port would send them.

    @ivar written: C{(data, addr)} pairs, in order.
    @ivar error: If set, raised by L{write}.
    """

    def __init__(self) -> None:
        self.written: list[tuple[bytes, Any]] = []
        self.error: BaseException | None = None

    def write(self, data: bytes, addr: Any) -> None:
        """
        Record a datagram, or raise L{error}.

        @param data: The payload.
        @param addr: The destination.
        """
        if self.error is not None:
            raise self.error
        self.written.append((data, addr))
