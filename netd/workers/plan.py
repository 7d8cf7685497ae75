# -*- test-case-name: tests.test_workers -*-
"""
What each worker of a netd with C{workers = N} serves, decided in the main
process before any worker starts (see L{netd.workers}).

Services whose state lives in one process (a chat service's rooms, and an
http service that mounts one) run in worker 0 only
(L{perProcessServices}): only worker 0 is given their sockets. Workers
share each listening socket, except a UDP listener with C{reuse_port}: each
worker gets its own C{SO_REUSEPORT} socket on the same address
(L{socketPerWorker}). What the main process holds for a service beside its
sockets (an exec service's spawner door, forked while root) is passed to
the workers that serve the service in the same way (L{WorkerPlan.held}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from netd.config import NetdConfig, pinnedServices
from netd.descriptions import DatagramListener, Listener
from netd.listeners import listenerName, socketKey
from netd.workers.control import FIRST_SOCKET_FD, encodeMessage


def perProcessServices(config: NetdConfig) -> frozenset[str]:
    """
    The services that must run in one process: those of a type whose state
    is per process (chat rooms), and http services that mount one.

    @param config: A configuration.
    @return: Their names.
    """
    return pinnedServices(config.services)


def socketIdentity(service: str, listener: Listener) -> tuple[object, ...]:
    """
    What identifies the socket a listener needs, across configurations
    (L{socketKey}); a listener on an ephemeral port is identified by its
    service and description.

    @param service: Its service's name.
    @param listener: The listener.
    @return: A hashable key.
    """
    key = socketKey(listener)
    if key is None:
        return ("ephemeral", listenerName(service, listener))
    return key


def socketPerWorker(listener: Listener) -> bool:
    """
    Whether each worker gets a socket of its own for a listener, rather than
    all of them sharing the main process's one.

    A UDP listener with C{reuse_port} on a fixed port does
    (L{DatagramListener.socketPerWorker}). Workers that share one UDP socket
    all wake for each datagram and take turns, which does not scale. TCP has
    no such need (each worker accepts one connection per wake-up from the
    shared socket).

    @param listener: A listener.
    @return: C{True} for a UDP listener on a fixed port with C{reuse_port}.
    """
    return isinstance(listener, DatagramListener) and listener.socketPerWorker


def workerSockets(config: NetdConfig, count: int) -> list[list[tuple[str, Any, int]]]:
    """
    Which listeners each worker serves, and on which copy of their socket:
    worker 0 serves all of them, the others all but those of
    L{perProcessServices}. A listener's socket is shared (copy 0) unless
    L{socketPerWorker} says otherwise, in which case worker I{i} gets copy
    I{i}.

    @param config: The configuration.
    @param count: The number of workers.
    @return: For each worker, C{(service name, listener, copy)} triples.
    """
    pinned = perProcessServices(config)
    return [
        [
            (
                service.name,
                listener,
                index if count > 1 and socketPerWorker(listener) else 0,
            )
            for service in config.services
            if index == 0 or service.name not in pinned
            for listener in service.listeners
        ]
        for index in range(count)
    ]


def heldIdentity(service: str, listener: Listener, copy: int) -> tuple[object, ...]:
    """
    What identifies one held socket: its listener's L{socketIdentity}, and
    which copy it is when each worker has its own (copy 0 is the one a
    shared socket keeps, so a reload between the two keeps it).

    @param service: The service's name.
    @param listener: The listener.
    @param copy: The copy (L{workerSockets}).
    @return: A hashable key.
    """
    identity = socketIdentity(service, listener)
    return identity if copy == 0 else (*identity, "worker", copy)


def heldSockets(
    config: NetdConfig, count: int
) -> dict[tuple[object, ...], tuple[str, Any, int]]:
    """
    Every socket the main process holds for a generation of workers.

    @param config: The configuration.
    @param count: The number of workers.
    @return: C{(service name, listener, copy)} by L{heldIdentity}, in the
        configuration's order.
    """
    return {
        heldIdentity(name, listener, copy): (name, listener, copy)
        for listeners in workerSockets(config, count)
        for name, listener, copy in listeners
    }


@frozen
class WorkerPlan:
    """
    What one generation of workers runs.

    @ivar config: The validated configuration (its C{text} is what the
        workers are given).
    @ivar sockets: For each worker, its listeners' sockets in the main
        process: listener service name to descriptor.
    @ivar ownPorts: Every port netd listens on (for the UDP loop guards of
        workers that do not serve all of them).
    @ivar held: For each worker, the descriptors of what the main process
        holds for the services it serves (an exec service's spawner door,
        L{ServiceType.buildHeldService<netd.servicetype.ServiceType.buildHeldService>}):
        service name to descriptor; empty for none.
    """

    config: NetdConfig
    sockets: tuple[Mapping[str, int], ...]
    ownPorts: tuple[int, ...] = ()
    held: tuple[Mapping[str, int], ...] = ()

    def heldFor(self, index: int) -> Mapping[str, int]:
        """
        @param index: A worker.
        @return: Its held descriptors in the main process, by service name.
        """
        return self.held[index] if index < len(self.held) else {}

    @property
    def count(self) -> int:
        """
        The number of workers.
        """
        return len(self.sockets)

    def childSockets(self, index: int) -> tuple[dict[int, int], dict[str, int]]:
        """
        How worker C{index} inherits its sockets (and its L{held}
        descriptors, numbered after them: L{childHeld}). The numbering of
        the sockets depends only on the main process's descriptors, so it
        stays the same across a reload that keeps the sockets.

        @param index: The worker.
        @return: The child descriptor to main descriptor map (for
            C{childFDs}), and the listener name to child descriptor map
            (for the worker).
        """
        sockets = self.sockets[index]
        numbers = {
            fd: FIRST_SOCKET_FD + position
            for position, fd in enumerate(sorted(set(sockets.values())))
        }
        childFDs = {child: fd for fd, child in numbers.items()}
        for name, child in self.childHeld(index).items():
            childFDs[child] = self.heldFor(index)[name]
        return childFDs, {name: numbers[fd] for name, fd in sockets.items()}

    def childHeld(self, index: int) -> dict[str, int]:
        """
        The descriptors worker C{index} inherits for its L{held} services:
        numbered after its sockets, in service name order. A reload that
        keeps the sockets cannot add one (only a process that is still root
        makes them), so a worker keeps those it inherited and is told only
        which of them still serve (L{message}).

        @param index: The worker.
        @return: Service name to child descriptor.
        """
        first = FIRST_SOCKET_FD + len(set(self.sockets[index].values()))
        return {
            name: first + position
            for position, name in enumerate(sorted(self.heldFor(index)))
        }

    def message(self, worker: int, **extra: Any) -> bytes:
        """
        The line that gives worker C{worker} this plan.

        @param worker: The worker's index.
        @param extra: More fields.
        @return: One JSON line.
        """
        record = {
            "source": self.config.source,
            "text": self.config.text,
            "sockets": self.childSockets(worker)[1],
            "held": self.childHeld(worker),
            "heldNames": sorted({name for held in self.held for name in held}),
            "ownPorts": list(self.ownPorts),
            **extra,
        }
        return encodeMessage(record)


def ownedFiles(config: NetdConfig) -> list[str]:
    """
    @param config: A configuration.
    @return: The files its services write (access logs), each service's
        type saying which (L{ServiceType.ownedFiles}).
    """
    return [
        path
        for service in config.services
        if (owned := service.serviceType.ownedFiles) is not None
        for path in owned(service.settings)
    ]
