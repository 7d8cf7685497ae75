# -*- test-case-name: tests.test_daemon -*-
"""
The service tree of a netd process.

L{NetdService} (the root, returned by L{netd.tap.makeService}) holds one
L{ServiceInstance} per configured service; each holds one listener service
per configured address (L{netd.listeners}). Everything is built from a
L{NetdConfig<netd.config.NetdConfig>} without binding; ports are bound when
twistd starts the tree.
"""

from __future__ import annotations

from typing import Any, TextIO

from twisted.application.service import MultiService
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from netd.config import NetdConfig, ServiceConfig
from netd.drops import DropLog
from netd.listeners import ListenError, buildListenerService
from netd.policy import SessionPolicy
from netd.services import serviceTypes
from netd.servicetype import ServiceContext

EX_OSERR = 71


class ServiceInstance(MultiService):
    """
    One configured service, with its listeners as children.

    @ivar context: The state its listeners share.
    """

    _log = Logger()

    def __init__(
        self,
        config: ServiceConfig,
        ownPorts: set[int],
        statsInterval: float,
        reactor: Any = None,
        instances: dict[str, ServiceContext] | None = None,
    ) -> None:
        super().__init__()
        self.setName(config.name)
        if reactor is None:
            from twisted.internet import reactor
        serviceType = serviceTypes()[config.type]
        context = ServiceContext(
            config=config,
            policy=SessionPolicy(
                config.limits,
                DropLog(config.name, "refused a session from", reactor, statsInterval),
            ),
            datagramDrops=DropLog(
                config.name, "dropped a datagram from", reactor, statsInterval
            ),
            ownPorts=ownPorts,
            statsInterval=statsInterval,
            reactor=reactor,
            instances=instances if instances is not None else {},
        )
        context.instances[config.name] = context
        self.context = context
        streamFactory = None
        if any(listener.transport == "stream" for listener in config.listeners):
            assert serviceType.buildStreamFactory is not None
            streamFactory = serviceType.buildStreamFactory(context)
        for listener in config.listeners:
            buildListenerService(
                context, serviceType, listener, streamFactory
            ).setServiceParent(self)
        self._stats: LoopingCall | None = None
        self._lastCounters = context.counters.snapshot()

    def startService(self) -> None:
        """
        Start the listeners and the periodic datagram counters.
        """
        super().startService()
        if any(
            listener.transport == "datagram"
            for listener in self.context.config.listeners
        ):
            self._stats = LoopingCall(self.logCounters)
            self._stats.clock = self.context.reactor
            self._stats.start(self.context.statsInterval, now=False)

    def stopService(self) -> Any:
        """
        Stop the listeners, log the last counters.

        @return: A L{Deferred} that fires when every listener is closed.
        """
        if self._stats is not None and self._stats.running:
            self._stats.stop()
            self.logCounters()
        self.context.policy.refusals.stop()
        self.context.datagramDrops.stop()
        return super().stopService()

    def logCounters(self) -> None:
        """
        Log the datagram counters of the last interval, if anything moved.
        """
        now = self.context.counters.snapshot()
        delta = {key: now[key] - self._lastCounters[key] for key in now}
        self._lastCounters = now
        if not any(
            delta[key] for key in ("datagramsIn", "datagramsOut", "datagramsDropped")
        ):
            return
        self._log.info(
            "{service} udp: {datagramsIn} datagrams ({datagramBytesIn} bytes) in, "
            "{datagramsOut} ({datagramBytesOut} bytes) out, {datagramsDropped} dropped "
            "in the last {interval:g}s",
            service=self.context.name,
            interval=self.context.statsInterval,
            totals=now,
            **{k: delta[k] for k in delta if k.startswith("datagram")},
        )


class NetdService(MultiService):
    """
    The root of a netd process.

    @ivar config: The configuration it was built from.
    @ivar ownPorts: Every port netd listens on (filled as they are bound).
    @ivar instances: Every service instance's context, by name.
    @ivar stderr: Where a start-up failure is reported when running in the
        foreground; L{None} to raise L{ListenError} instead (under a
        daemonizing twistd, which reports exceptions itself, and in tests).
    """

    _log = Logger()

    def __init__(
        self, config: NetdConfig, reactor: Any = None, stderr: TextIO | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.stderr = stderr
        self.ownPorts: set[int] = set()
        for service in config.services:
            ServiceInstance(
                service, self.ownPorts, config.statsInterval, reactor
            ).setServiceParent(self)

    def privilegedStartService(self) -> None:
        """
        Bind every listener; on the first failure, stop with one clear line.

        @raise SystemExit: With L{EX_OSERR}, when L{stderr} is set.
        @raise ListenError: When it is not.
        """
        try:
            super().privilegedStartService()
        except ListenError as e:
            self._listenFailed(e)

    def startService(self) -> None:
        """
        Start every service (binding what L{privilegedStartService} did not).

        @raise SystemExit: With L{EX_OSERR}, when L{stderr} is set.
        @raise ListenError: When it is not.
        """
        try:
            super().startService()
        except ListenError as e:
            self._listenFailed(e)

    def _listenFailed(self, error: ListenError) -> None:
        """
        Report a listener that could not be bound, and stop start-up.

        @param error: The failure.
        @raise SystemExit: With L{EX_OSERR}, when L{stderr} is set.
        @raise ListenError: When it is not.
        """
        self._log.critical(
            "{error}", error=str(error), service=error.service, listener=error.listener
        )
        if self.stderr is None:
            raise error
        self.stderr.write(f"netd: {error}\n")
        self.stderr.flush()
        raise SystemExit(EX_OSERR)
