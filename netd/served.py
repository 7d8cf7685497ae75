# -*- test-case-name: tests.test_reload,tests.test_workers -*-
"""
What a netd process serves, as its life cycle sees it.

One life-cycle service (L{netd.daemon.NetdService}: privileges, signals,
systemd, reload, drain) holds exactly one L{IServedSet}, chosen by the role
the process plays:

    - L{netd.instances.InProcessServices}: a single netd, or a worker
      process (whose listeners adopt the sockets the main process passed);
    - L{netd.workers.supervisor.HeldSockets}: the main process of a netd
      with workers, which holds the listening sockets and runs the workers
      that serve them.

Every reload path ends in a L{ReloadResult}, delivered by a L{Deferred}.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen
from twisted.application.service import IService
from twisted.internet.defer import Deferred
from zope.interface import Attribute

from netd.config import NetdConfig
from netd.counters import Series
from netd.listeners import ListenError


@frozen
class ReloadResult:
    """
    How a reload ended.

    @ivar applied: Whether the new configuration now runs (otherwise the
        previous one still does).
    @ivar summary: What changed (applied), or why it failed (not applied):
        one line for the log and systemd's status.
    @ivar config: The configuration running now.
    @ivar fields: Extra log fields describing a failure (C{service},
        C{listener}).
    @ivar restartOnly: The C{[netd]} keys that changed but apply only at
        the next start.
    """

    applied: bool
    summary: str
    config: NetdConfig
    fields: tuple[tuple[str, str], ...] = ()
    restartOnly: tuple[str, ...] = ()

    @classmethod
    def bindFailed(cls, error: ListenError, config: NetdConfig) -> ReloadResult:
        """
        @param error: Why a new listener could not be bound.
        @param config: The configuration that keeps running.
        @return: The result of a reload that failed so.
        """
        return cls(
            False,
            str(error),
            config,
            (("service", error.service), ("listener", error.listener)),
        )


class IServedSet(IService):
    """
    What one netd process serves: started, stopped and reloaded by its
    life-cycle service.

    Binding happens in C{privilegedStartService} (as root) or
    C{startService}; C{stopService} returns a L{Deferred} that fires once
    everything it served has ended (sessions drained, workers exited).
    """

    ownPorts = Attribute(
        "The set of port numbers netd listens on (shared and live: UDP "
        "services use it to refuse datagrams from netd's own ports)."
    )
    stoppingStatus = Attribute("One line for systemd while it stops.")

    def ownedFiles() -> Sequence[str]:
        """
        @return: Files to create as root before start, and hand to the
            account netd switches to.
        """

    def serving() -> Deferred[bool]:
        """
        Called once privileges are dropped and the reactor runs.

        @return: A L{Deferred} that fires once everything serves (at once
            in process; once every worker is ready with workers) with
            C{True}, or with C{False} if it never will (netd stopped first);
            it never fails.
        """

    def reload(config: NetdConfig) -> Deferred[ReloadResult]:
        """
        Serve a new, valid configuration instead of the running one.

        @param config: The new configuration.
        @return: A L{Deferred} that fires with how it ended, never failing.
        """

    def abortNow() -> None:
        """
        A second stop request: end the sessions still draining at once.
        """

    def status() -> str:
        """
        @return: One line for systemd: what is served.
        """

    def metricsSeries() -> list[Series]:
        """
        @return: What the metrics endpoint (L{netd.metrics}) reports for
            this process: its services' counters, or the workers' sum.
        """
