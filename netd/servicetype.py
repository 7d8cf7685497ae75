# -*- test-case-name: tests.test_service -*-
"""
What a service type is, and what a running instance of one is given.

A service type (echo, discard, ...) is a L{ServiceType}: its name, the
transports it serves, its type-specific settings, and builders for a stream
protocol factory and a datagram protocol. It knows nothing about ports,
limits or session logging: L{netd.listeners} wraps what it builds, the same
way for every type. Adding a type is one module in L{netd.services} and one
line in its registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import DatagramProtocol

from netd.counters import ListenerCounters, Series, ServiceCounters
from netd.settings import Problem, Setting

if TYPE_CHECKING:
    from netd.config import ServiceConfig
    from netd.descriptions import DatagramListener
    from netd.drops import DropLog
    from netd.policy import SessionPolicy


@define(eq=False)
class ServiceContext:
    """
    Everything a running service instance shares between its listeners.

    @ivar config: The instance's configuration.
    @ivar policy: Admission and session limits.
    @ivar datagramDrops: Where dropped datagrams are counted and logged.
    @ivar ownPorts: The ports every netd listener is bound to (live).
    @ivar reactor: The reactor its listeners and timers use.
    @ivar counters: Traffic counters.
    @ivar listenerCounters: Each stream listener's counters, by its
        description (filled by L{netd.sessions.SessionFactory}).
    @ivar statsInterval: Seconds between periodic counter events.
    @ivar instances: Every service instance of the process, by name (live,
        shared): how one service reaches another, e.g. an http service
        mounting a chat service's web page.
    @ivar drainTimeout: Seconds its work gets to finish when netd stops.
    @ivar held: What this process holds for the instance beside its
        listeners (L{ServiceType.buildHeldService}: in a single netd, an
        exec service's spawner door keeper, forked before root was
        dropped), with a C{fileno()}; L{None}: nothing (in a worker, the
        main process passes its descriptor instead).
    """

    config: ServiceConfig
    policy: SessionPolicy
    datagramDrops: DropLog
    ownPorts: set[int]
    reactor: Any
    counters: ServiceCounters = field(factory=ServiceCounters)
    listenerCounters: dict[str, ListenerCounters] = field(factory=dict)
    statsInterval: float = 60.0
    instances: dict[str, ServiceContext] = field(factory=dict)
    drainTimeout: float = 30.0
    held: Any = None

    @property
    def name(self) -> str:
        """
        The instance name.
        """
        return self.config.name

    @property
    def settings(self) -> Any:
        """
        The instance's type-specific settings.
        """
        return self.config.settings

    @property
    def heldDescriptor(self) -> int | None:
        """
        The descriptor of what is held for this instance
        (L{ServiceType.buildHeldService}): L{held}'s once it runs, or in a
        worker process the one the main process passed; L{None} otherwise.
        """
        if self.held is not None:
            fd = int(self.held.fileno())
            return fd if fd >= 0 else None
        return heldDescriptorFor(self.name)


# In a worker process: the descriptors the main process passed for the
# services it holds something for, by service name (set by
# netd.workers.child before it builds or reloads its services; a process
# has one set, as it has one set of inherited descriptors).
_heldDescriptors: dict[str, int] = {}
# ... and the services the main process holds something for that other
# workers serve (their configuration is valid here too).
_heldElsewhere: set[str] = set()


def heldDescriptorFor(name: str) -> int | None:
    """
    @param name: A service's name.
    @return: In a worker process, the descriptor the main process passed
        for what it holds for that service; L{None} if none.
    """
    return _heldDescriptors.get(name)


def isHeld(name: str) -> bool:
    """
    @param name: A service's name.
    @return: Whether, in a worker process, the main process holds something
        for that service (L{ServiceType.buildHeldService}), whether this
        worker serves it or another one does.
    """
    return name in _heldDescriptors or name in _heldElsewhere


def setHeldDescriptors(
    descriptors: Mapping[str, int], elsewhere: Iterable[str] = ()
) -> dict[str, int]:
    """
    Say which inherited descriptors are the main process's held services'
    (L{ServiceType.buildHeldService}), for the instances built from now on.

    @param descriptors: Descriptors by service name.
    @param elsewhere: The services the main process holds something for
        that other workers serve.
    @return: The previous descriptors.
    """
    previous = dict(_heldDescriptors)
    _heldDescriptors.clear()
    _heldDescriptors.update(descriptors)
    _heldElsewhere.clear()
    _heldElsewhere.update(set(elsewhere) - set(descriptors))
    return previous


def buildHeldServices(
    services: Iterable[ServiceConfig], reactor: Any
) -> dict[str, Any]:
    """
    What the service types need held beside their instances
    (L{ServiceType.buildHeldService}: an exec service's spawner door
    keeper), for the process that starts as root: a single netd, or the main
    process of a netd with workers.

    @param services: The services' configurations.
    @param reactor: The reactor.
    @return: The held services (unstarted), by service name.
    """
    held: dict[str, Any] = {}
    for service in services:
        build = service.serviceType.buildHeldService
        if build is not None:
            held[service.name] = build(service, reactor)
    return held


def unfitHeld(
    held: Mapping[str, Any], services: Iterable[ServiceConfig]
) -> list[tuple[str, bool]]:
    """
    The held services that no longer fit their service in a configuration
    (removed, or what it holds for changed): nothing can replace them once
    root is dropped.

    @param held: The held services, by service name.
    @param services: The services of the configuration.
    @return: C{(name, gone)} for each, C{gone} if the service was removed.
    """
    byName = {service.name: service for service in services}
    return [
        (name, name not in byName)
        for name, heldService in held.items()
        if name not in byName or not heldService.fits(byName[name])
    ]


@frozen
class ServiceType:
    """
    A kind of service netd can run.

    @ivar name: The C{type = "..."} value.
    @ivar description: One line for C{--help} and the README.
    @ivar settings: Type-specific configuration keys.
    @ivar buildStreamFactory: Makes the protocol factory for stream
        listeners, or L{None} if the type has none.
    @ivar buildDatagramProtocol: Makes the protocol for one datagram
        listener, or L{None} if the type has none.
    @ivar buildWebResource: Makes a L{twisted.web.resource.IResource} that
        an http service can mount to give this service a browser front end,
        or L{None} if the type has none.
    @ivar probe: Checks a running listener of this type from outside, for
        C{twistd netd --check --probe}: called with a
        L{netd.probe.ProbeTarget}, returns a few words on success, raises
        L{netd.probe.ProbeFailed} otherwise. L{None}: a plain connect.
    @ivar alpnProtocols: The ALPN protocol names (RFC 7301) its stream
        protocol speaks on an C{ssl:} listener, most preferred first; empty
        if it has none (a TLS client offering ALPN still connects, with no
        protocol selected).
    @ivar alpn: The ALPN protocol names of one instance, from its settings
        (an http service offers C{h2} only when HTTP/2 is on); L{None}: always
        L{alpnProtocols}. See L{alpnFor}.
    @ivar perProcess: Whether an instance's state lives in one process's
        memory (chat rooms): with C{workers = N} it runs in one process only,
        and so does every service that L{uses} it. Either a constant or a
        function of the instance's settings (a chat service with a shared
        C{hub} is not); ask L{isPerProcess}.
    @ivar datagramConnections: What the connections its datagram listeners
        carry are called (C{"HTTP/3"}), if they carry connections whose
        state lives in the process that accepted them: with C{workers = N},
        unless the
        instance runs in one process (L{perProcess}), each such listener
        must give every worker a socket of its own (C{reuse_port} on a fixed
        port), or a connection's datagrams would reach workers that do not
        know it; the configuration is refused otherwise.
    @ivar uses: The names of the other services an instance of this type
        reaches at run time (an http service mounting a chat page), from
        its settings; L{None}: none.
    @ivar ownedFiles: The files an instance writes (an access log), from its
        settings, so that a netd that drops root can create them first and
        hand them to the service user; L{None}: none.
    @ivar readPaths: The files and directories an instance reads at run
        time (an http service's document root), from its settings, as
        C{(key, path, isDirectory)}: C{--check} makes sure the account netd
        switches to can read them (L{netd.checks}); L{None}: none.
    @ivar buildServices: Makes the services an instance runs beside its
        listeners (an exec service's spawner), children of the instance:
        started and stopped with it, in twistd's order (so their
        C{privilegedStartService} runs as root, before the drop); L{None}:
        none.
    @ivar buildHeldService: With C{workers = N}: makes the service the main
        process runs for an instance, beside the sockets it holds (an exec
        service's spawner door keeper), called with the instance's
        L{ServiceConfig<netd.config.ServiceConfig>} and the reactor; its
        C{privilegedStartService} runs as root, before the drop. Its
        C{fileno()} is handed to each worker that serves the instance, as
        one more inherited descriptor (L{ServiceContext.heldDescriptor}
        there), and its C{fits(config)} says whether it still serves a
        reloaded configuration of the instance (if not, the main process
        stops it and the workers are no longer given it). L{None}: none.
    @ivar checkNotes: Lines C{--check} prints under the instance (who an exec
        service's programs run as), called with its
        L{ServiceConfig<netd.config.ServiceConfig>} and the number of
        processes that serve (1, or the number of workers); L{None}: none.
    @ivar checkConfig: Checks that need the other services (one service
        naming another): called once every service is read, with this
        service's L{ServiceConfig<netd.config.ServiceConfig>} and every
        enabled service's by name; returns the problems found. L{None}: no
        such checks.
    @ivar metrics: Reports what an instance of this type counts beyond
        what every service counts (sessions, bytes, datagrams, refusals):
        called with its L{ServiceContext} at each scrape of the metrics
        endpoint (L{netd.metrics}); returns L{Series}. L{None}: nothing
        more.
    """

    name: str
    description: str
    settings: tuple[Setting, ...] = ()
    buildStreamFactory: Callable[[ServiceContext], IProtocolFactory] | None = None
    buildDatagramProtocol: (
        Callable[[ServiceContext, DatagramListener], DatagramProtocol] | None
    ) = None
    buildWebResource: Callable[[ServiceContext], Any] | None = None
    checkConfig: Callable[[Any, Mapping[str, Any]], list[Problem]] | None = None
    probe: Callable[[Any], str] | None = None
    alpnProtocols: tuple[bytes, ...] = ()
    alpn: Callable[[Mapping[str, Any]], tuple[bytes, ...]] | None = None
    perProcess: Callable[[Any], bool] | bool = False
    datagramConnections: str | None = None
    uses: Callable[[Any], list[str]] | None = None
    ownedFiles: Callable[[Any], list[str]] | None = None
    metrics: Callable[[ServiceContext], list[Series]] | None = None
    readPaths: Callable[[Any], list[tuple[str, str, bool]]] | None = None

    def alpnFor(self, settings: Mapping[str, Any]) -> tuple[bytes, ...]:
        """
        @param settings: An instance's settings.
        @return: The ALPN protocol names its C{ssl:} listeners offer, most
            preferred first.
        """
        if self.alpn is None:
            return self.alpnProtocols
        return self.alpn(settings)

    def isPerProcess(self, settings: Any) -> bool:
        """
        @param settings: An instance's type-specific settings.
        @return: Whether that instance must run in one process only (see
            L{perProcess}).
        """
        if callable(self.perProcess):
            return bool(self.perProcess(settings))
        return self.perProcess

    buildServices: Callable[[ServiceContext], list[Any]] | None = None
    buildHeldService: Callable[[Any, Any], Any] | None = None
    checkNotes: Callable[[Any, int], list[str]] | None = None

    @property
    def transports(self) -> frozenset[str]:
        """
        C{"stream"} and/or C{"datagram"}: the listeners it accepts.
        """
        return frozenset(
            name
            for name, builder in (
                ("stream", self.buildStreamFactory),
                ("datagram", self.buildDatagramProtocol),
            )
            if builder is not None
        )
