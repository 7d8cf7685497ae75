# -*- test-case-name: tests.test_reload,tests.test_drain,tests.test_listeners -*-
"""
The services of a netd process, in process: one L{ServiceInstance} per
configured service, each holding one listener service per configured
address (L{netd.listeners}).

L{InProcessServices} is the L{IServedSet} of a single netd and of a worker
process (whose listeners adopt the sockets the main process passed,
L{netd.workers.child}): it binds, reloads a configuration in place (an
address that stays keeps its socket, unchanged services keep their
sessions) and drains sessions when it stops.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from netd.config import NetdConfig, ServiceConfig
from netd.counters import Series
from netd.drain import Drain, openSessions
from netd.drops import DropLog
from netd.metrics import collectSeries
from netd.listeners import (
    DatagramListenerService,
    ListenerService,
    ListenError,
    StreamListenerService,
    buildListenerService,
    socketKey,
)
from netd.policy import SessionPolicy
from netd.reload import planReload
from netd.served import IServedSet, ReloadResult
from netd.words import plural
from netd.servicetype import ServiceContext, buildHeldServices, unfitHeld


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
        sockets: Mapping[str, int] | None = None,
        drainTimeout: float = 30.0,
        held: Any = None,
    ) -> None:
        """
        @param config: The service's configuration.
        @param ownPorts: The ports netd listens on (shared, live).
        @param statsInterval: Seconds between periodic counter events.
        @param reactor: The reactor (the global one if L{None}).
        @param instances: The registry of every instance, which it joins.
        @param sockets: In a worker process, the descriptors the main process
            passed, by listener service name: the listeners adopt them
            (L{ListenerService.passedFd}) instead of binding.
        @param drainTimeout: C{drain_timeout}, for the work of
            L{ServiceType.buildServices}' services.
        @param held: What the process holds for it
            (L{ServiceContext.held}), or L{None}.
        """
        super().__init__()
        self.setName(config.name)
        if reactor is None:
            from twisted.internet import reactor
        serviceType = config.serviceType
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
            drainTimeout=drainTimeout,
            held=held,
        )
        context.instances[config.name] = context
        self.context = context
        if serviceType.buildServices is not None:
            for extra in serviceType.buildServices(context):
                extra.setServiceParent(self)
        streamFactory = None
        if any(listener.transport == "stream" for listener in config.listeners):
            assert serviceType.buildStreamFactory is not None
            streamFactory = serviceType.buildStreamFactory(context)
        for listener in config.listeners:
            child = buildListenerService(context, serviceType, listener, streamFactory)
            if sockets is not None:
                assert isinstance(child, ListenerService)
                child.passedFd = sockets[str(child.name)]
            child.setServiceParent(self)
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

    def listenerServices(self) -> list[ListenerService]:
        """
        @return: Its listeners.
        """
        return [child for child in self if isinstance(child, ListenerService)]

    def sessionFactories(self) -> list[Any]:
        """
        @return: What holds the open sessions, in its C{protocols}: the
            L{SessionFactory} of each stream listener, and each datagram
            protocol with connections of its own (HTTP/3's L{HTTP3Server<netd.http.h3.HTTP3Server>}).
        """
        holders: list[Any] = []
        for child in self:
            if isinstance(child, StreamListenerService):
                holders.append(child.factory)
            elif isinstance(child, DatagramListenerService) and hasattr(
                child.protocol, "protocols"
            ):
                holders.append(child.protocol)
        return holders

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


@implementer(IServedSet)
class InProcessServices(MultiService):
    """
    Every configured service, served in this process.

    @ivar config: The configuration served (replaced by a reload).
    @ivar reactor: The reactor.
    @ivar ownPorts: Every port netd listens on (filled as they are bound).
    @ivar instances: Every service instance's context, by name (shared by
        all of them, kept current across reloads).
    @ivar retired: Instances a reload replaced that still drain sessions.
    @ivar sockets: In a worker, the descriptors the main process passed, by
        listener service name (adopted instead of binding); L{None} in a
        single netd.
    @ivar otherPorts: In a worker, the ports of the listeners other
        processes serve (they count as netd's own too).
    @ivar drain: The drain of open sessions, once stopping.
    """

    _log = Logger()
    stoppingStatus = "stopping: closing listeners, draining sessions"

    def __init__(
        self,
        config: NetdConfig,
        reactor: IReactorTime,
        *,
        sockets: Mapping[str, int] | None = None,
        otherPorts: Iterable[int] = (),
    ) -> None:
        """
        @param config: The configuration to serve.
        @param reactor: The reactor.
        @param sockets: The descriptors to adopt, in a worker.
        @param otherPorts: The ports other processes serve, in a worker.
        """
        super().__init__()
        self.setName("services")
        self.config = config
        self.reactor = reactor
        self.sockets = dict(sockets) if sockets is not None else None
        self.otherPorts = set(otherPorts)
        self.ownPorts: set[int] = set(self.otherPorts)
        self.instances: dict[str, ServiceContext] = {}
        self.retired: list[ServiceInstance] = []
        self.drain: Drain | None = None
        # What the service types need held beside the instances (an exec
        # service's spawner door keeper), in a single netd (a worker's are
        # the main process's): children before the instances, so they are
        # started first, as root, before the drop; made at start only,
        # never by a reload (after the drop they could not switch users).
        self.heldServices: dict[str, Any] = {}
        if self.sockets is None:
            self.heldServices = buildHeldServices(config.services, reactor)
            for heldService in self.heldServices.values():
                heldService.setServiceParent(self)
        for service in config.services:
            self._buildInstance(service, config, self.instances).setServiceParent(self)

    def _buildInstance(
        self,
        service: ServiceConfig,
        config: NetdConfig,
        instances: dict[str, ServiceContext],
    ) -> ServiceInstance:
        """
        @param service: One service's configuration.
        @param config: The whole configuration.
        @param instances: The registry the instance joins.
        @return: A new, unstarted L{ServiceInstance}.
        """
        held = self.heldServices.get(service.name)
        return ServiceInstance(
            service,
            self.ownPorts,
            config.statsInterval,
            self.reactor,
            instances,
            sockets=self.sockets,
            drainTimeout=config.drainTimeout,
            held=held if held is not None and held.fits(service) else None,
        )

    def serviceInstances(self) -> list[ServiceInstance]:
        """
        @return: The running service instances.
        """
        return [child for child in self if isinstance(child, ServiceInstance)]

    def ownedFiles(self) -> Sequence[str]:
        """
        @return: Nothing: the services open their own files as root.
        """
        return ()

    def serving(self) -> Deferred[bool]:
        """
        @return: A L{Deferred} that has fired with C{True}: in process,
            everything serves once started.
        """
        return defer.succeed(True)

    def status(self) -> str:
        """
        @return: What is being served.
        """
        instances = self.serviceInstances()
        listeners = sum(len(i.listenerServices()) for i in instances)
        return f"serving {plural(len(instances), 'service')} on " + plural(
            listeners, "listener"
        )

    def metricsSeries(self) -> list[Series]:
        """
        @return: What the metrics endpoint reports: these services' counters.
        """
        return collectSeries(self.instances.values())

    def adopt(self, sockets: Mapping[str, int], otherPorts: Iterable[int]) -> None:
        """
        In a worker, before a reload: the descriptors and ports the main
        process passed with the new configuration.

        @param sockets: More descriptors, by listener service name.
        @param otherPorts: Every port netd listens on.
        """
        if self.sockets is None:
            self.sockets = {}
        self.sockets.update(sockets)
        self.otherPorts = set(otherPorts)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening at once (closing the descriptors a worker inherited,
        so that new connections are refused), then let open sessions finish,
        for up to C{drain_timeout} seconds; abort those still open then.

        @return: A L{Deferred} that fires when every listener is closed and
            every session has ended.
        """
        for fd in set((self.sockets or {}).values()):
            try:
                os.close(fd)
            except OSError:
                continue
        if self.sockets is not None:
            self.sockets.clear()
        listenersClosed = defer.maybeDeferred(super().stopService)
        self.drain = Drain(
            self.openSessions, self.reactor, self.config.drainTimeout, "stopping"
        )
        drained = self.drain.start()
        result: Deferred[Any] = defer.gatherResults(
            [listenersClosed, drained], consumeErrors=True
        )
        return result.addCallback(lambda _: None)

    def abortNow(self) -> None:
        """
        Close the sessions still draining at once.
        """
        if self.drain is not None:
            self.drain.abortNow()

    def openSessions(self) -> list[Any]:
        """
        @return: Every open stream session, of running and retired services.
        """
        factories = [
            factory
            for instance in self.serviceInstances() + self.retired
            for factory in instance.sessionFactories()
        ]
        return openSessions(factories)

    def reload(self, new: NetdConfig) -> Deferred[ReloadResult]:
        """
        Serve a new, valid configuration.

        Unchanged services are left alone (their sessions never notice);
        added and changed services are built and bound (an address that
        stays keeps its socket); if a bind fails, everything new is closed
        again and the running configuration stays. Otherwise removed and
        replaced services stop listening and their sessions drain. The
        certificates of unchanged TLS listeners are re-read.

        @param new: The configuration.
        @return: A L{Deferred} that has fired with the result.
        """
        plan = planReload(self.config, new)
        byName = {
            instance.context.name: instance for instance in self.serviceInstances()
        }
        retiring = [byName[name] for name in plan.retired]
        staging = {
            name: context
            for name, context in self.instances.items()
            if name not in plan.retired
        }
        started = {service.name for service in plan.started}
        fresh = [
            self._buildInstance(service, new, staging)
            for service in new.services
            if service.name in started
        ]
        available = {}
        for instance in retiring:
            for listener in instance.listenerServices():
                key = socketKey(listener.listener)
                if key is not None and listener.port is not None:
                    available[key] = listener
        handovers: list[tuple[ListenerService, ListenerService]] = []
        bound: list[ListenerService] = []
        try:
            for instance in fresh:
                for listener in instance.listenerServices():
                    key = socketKey(listener.listener)
                    previous = None if key is None else available.pop(key, None)
                    if previous is not None:
                        handovers.append((listener, previous))
                    else:
                        listener.bind()
                        bound.append(listener)
        except ListenError as e:
            for listener in bound:
                listener.stopService()
            self.recountPorts()
            return defer.succeed(ReloadResult.bindFailed(e, self.config))

        for listener, previous in handovers:
            listener.takeOver(previous)
        for instance in retiring:
            instance.disownServiceParent()
            self._retire(instance, new.drainTimeout)
        self.instances.clear()
        self.instances.update(staging)
        for instance in fresh:
            instance.context.instances = self.instances
            instance.setServiceParent(self)
        self._dropHeld(new)
        self.config = new
        self.recountPorts()
        unchanged = {s.name for s in plan.unchanged}
        for instance in self.serviceInstances():
            if instance.name in unchanged:
                self._reloadCertificates(instance)
        return defer.succeed(
            ReloadResult(
                True, plan.describe(), new, restartOnly=tuple(plan.restartOnly)
            )
        )

    def _dropHeld(self, config: NetdConfig) -> None:
        """
        Stop the held services that no longer fit their service in a
        configuration now served (removed, or its programs changed: after
        the drop the configuration check accepts that only for programs
        that run as netd's own user, whose instance forks its own spawner).
        The instances that got one keep what they were given.

        @param config: The configuration.
        """
        for name, _ in unfitHeld(self.heldServices, config.services):
            self.heldServices.pop(name).disownServiceParent()

    def _retire(self, instance: ServiceInstance, timeout: float) -> None:
        """
        Let a replaced or removed service's open sessions finish, for up to
        C{timeout} seconds.

        @param instance: The instance, no longer listening.
        @param timeout: The drain deadline.
        """
        factories = instance.sessionFactories()
        if not openSessions(factories):
            return
        self.retired.append(instance)
        drain = Drain(
            lambda: openSessions(factories),
            self.reactor,
            timeout,
            f"{instance.name} (replaced by the reload)",
        )

        def drained(result: object) -> None:
            if instance in self.retired:
                self.retired.remove(instance)

        drain.start().addBoth(drained)

    def _reloadCertificates(self, instance: ServiceInstance) -> None:
        """
        Re-read the certificates of an unchanged service's TLS listeners.

        @param instance: The service.
        """
        for listener in instance.listenerServices():
            if not isinstance(
                listener, (StreamListenerService, DatagramListenerService)
            ):
                continue
            try:
                if listener.reloadCertificate():
                    self._log.info(
                        "{service} reloaded the certificate of {listener}",
                        service=instance.name,
                        listener=listener.listener.description,
                    )
            except ValueError as e:
                self._log.error(
                    "{service} keeps its old certificate on {listener}: {error}",
                    service=instance.name,
                    listener=listener.listener.description,
                    error=str(e),
                )

    def recountPorts(self) -> None:
        """
        Make L{ownPorts} exactly the ports bound now, with those of other
        processes (the set is shared with every service, so it is updated
        in place).
        """
        ports = {
            number
            for instance in self.serviceInstances()
            for listener in instance.listenerServices()
            if (number := listener.boundPortNumber())
        }
        self.ownPorts.clear()
        self.ownPorts.update(ports | self.otherPorts)
