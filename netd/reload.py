# -*- test-case-name: tests.test_reload -*-
"""
Reloading the configuration (SIGHUP): what changes.

L{planReload} compares the running configuration with a newly read one,
service by service, by value (L{ServiceConfig<netd.config.ServiceConfig>}
is a frozen attrs class: type, listeners, limits and settings). A service
whose value did not change is not touched at all, nor are its open
sessions; a changed one is rebuilt (its listeners keep the sockets of
addresses that stay, see L{netd.listeners.socketKey}); a removed one stops
listening and its sessions drain. L{NetdService.reload
<netd.daemon.NetdService.reload>} carries the plan out.
"""

from __future__ import annotations

from attrs import frozen

from netd.config import NetdConfig, ServiceConfig

# [netd] keys that only take effect at start-up.
# (workers: a netd started with one process cannot start workers later; one
# started with workers replaces them on reload, see netd.workers.)
RESTART_ONLY = (
    ("user", "user"),
    ("group", "group"),
    ("allowRoot", "allow_root"),
    ("workers", "workers"),
    # The metrics endpoint is bound once, at start.
    ("metrics", "metrics"),
)


@frozen
class ReloadPlan:
    """
    The differences between two configurations.

    @ivar added: Services only in the new configuration.
    @ivar removed: Services only in the old one.
    @ivar changed: C{(old, new)} pairs of services whose configuration
        differs.
    @ivar unchanged: Services identical in both.
    @ivar restartOnly: The C{[netd]} keys that changed but apply only at
        the next start.
    """

    added: tuple[ServiceConfig, ...]
    removed: tuple[ServiceConfig, ...]
    changed: tuple[tuple[ServiceConfig, ServiceConfig], ...]
    unchanged: tuple[ServiceConfig, ...]
    restartOnly: tuple[str, ...] = ()

    @property
    def retired(self) -> tuple[str, ...]:
        """
        The names of the running services the reload replaces or removes.
        """
        return tuple(s.name for s in self.removed) + tuple(
            old.name for old, new in self.changed
        )

    @property
    def started(self) -> tuple[ServiceConfig, ...]:
        """
        The services the reload builds: added and changed ones.
        """
        return self.added + tuple(new for old, new in self.changed)

    def describe(self) -> str:
        """
        @return: One line, e.g. C{added: chat; changed: echo; unchanged: discard}.
        """
        parts = []
        for label, names in (
            ("added", [s.name for s in self.added]),
            ("removed", [s.name for s in self.removed]),
            ("changed", [new.name for old, new in self.changed]),
            ("unchanged", [s.name for s in self.unchanged]),
        ):
            if names:
                parts.append(f"{label}: {', '.join(names)}")
        return "; ".join(parts) or "no services"


def planReload(old: NetdConfig, new: NetdConfig) -> ReloadPlan:
    """
    Compare two configurations.

    A changed C{stats_interval} changes every service (each runs its own
    timer); the C{[netd]} keys of L{RESTART_ONLY} are reported, not applied.

    @param old: The running configuration.
    @param new: The one just read.
    @return: The plan.
    """
    before = {service.name: service for service in old.services}
    after = {service.name: service for service in new.services}
    intervalChanged = old.statsInterval != new.statsInterval
    added, changed, unchanged = [], [], []
    for name, service in after.items():
        previous = before.get(name)
        if previous is None:
            added.append(service)
        elif previous != service or intervalChanged:
            changed.append((previous, service))
        else:
            unchanged.append(service)
    removed = [service for name, service in before.items() if name not in after]
    restartOnly = tuple(
        key
        for attribute, key in RESTART_ONLY
        if getattr(old, attribute) != getattr(new, attribute)
    )
    return ReloadPlan(
        tuple(added), tuple(removed), tuple(changed), tuple(unchanged), restartOnly
    )
