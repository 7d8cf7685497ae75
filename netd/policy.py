# -*- test-case-name: tests.test_policy -*-
"""
Admission policy: the limits of L{netd.limits.Limits}, enforced once for
every service type.

L{SessionPolicy} decides whether a new TCP session (or a datagram's source)
is served: allow/deny prefixes, the service-wide session cap and the
per-address cap. Twisted's C{policies.LimitConnectionsByPeer} would be the
obvious tool, but in Twisted 26.10 it indexes an address object and fails, so
netd keeps its own per-peer count keyed on C{addr.host}.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from netd.limits import Limits
from netd.drops import DropLog

_CACHE_SIZE = 4096


class AddressFilter:
    """
    Allow and deny lists of networks, with a small cache of verdicts.

    @ivar allow: If not empty, only these networks pass.
    @ivar deny: These networks never pass; deny wins over allow.
    """

    def __init__(self, allow: tuple[Any, ...], deny: tuple[Any, ...]) -> None:
        self.allow = allow
        self.deny = deny
        self.active = bool(allow or deny)
        self._verdicts: dict[str, str | None] = {}

    def check(self, host: str) -> str | None:
        """
        Judge an address.

        @param host: An IPv4 or IPv6 address, as Twisted reports it.
        @return: L{None} if it may be served, else the reason it may not.
        """
        if not self.active:
            return None
        try:
            return self._verdicts[host]
        except KeyError:
            pass
        verdict = self._judge(host)
        if len(self._verdicts) >= _CACHE_SIZE:
            self._verdicts.clear()
        self._verdicts[host] = verdict
        return verdict

    def _judge(self, host: str) -> str | None:
        """
        Judge an address without the cache.

        @param host: The address.
        @return: L{None} or the reason.
        """
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            # Not an IP peer (a UNIX socket): prefixes cannot match it.
            return "not in the allow list" if self.allow else None
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.deny):
            return "in the deny list"
        if self.allow and not any(address in network for network in self.allow):
            return "not in the allow list"
        return None


class SessionPolicy:
    """
    Counts a service's sessions and admits or refuses new ones.

    @ivar limits: The limits enforced.
    @ivar active: Sessions open now.
    @ivar refusals: Where refusals are counted and logged.
    """

    def __init__(self, limits: Limits, refusals: DropLog) -> None:
        self.limits = limits
        self.refusals = refusals
        self.filter = AddressFilter(limits.allow, limits.deny)
        self.active = 0
        self._perPeer: dict[str, int] = {}

    def admit(self, host: str) -> bool:
        """
        Decide whether a new session from C{host} is served, and count it.

        A refusal is recorded in L{refusals}; an admitted session must be
        matched by one L{release}.

        @param host: The peer's address (C{addr.host}).
        @return: Whether the session may proceed.
        """
        reason = self.filter.check(host)
        if reason is None:
            if self.active >= self.limits.maxSessions:
                reason = f"service at its limit of {self.limits.maxSessions} sessions"
            elif self._perPeer.get(host, 0) >= self.limits.maxSessionsPerPeer:
                reason = (
                    f"address at its limit of {self.limits.maxSessionsPerPeer} sessions"
                )
        if reason is not None:
            self.refusals.record(reason, host)
            return False
        self.active += 1
        self._perPeer[host] = self._perPeer.get(host, 0) + 1
        return True

    def release(self, host: str) -> None:
        """
        Forget a session admitted by L{admit}.

        @param host: The peer's address.
        """
        self.active -= 1
        count = self._perPeer[host] - 1
        if count:
            self._perPeer[host] = count
        else:
            del self._perPeer[host]

    def sessionsFrom(self, host: str) -> int:
        """
        @param host: An address.
        @return: How many sessions from it are open.
        """
        return self._perPeer.get(host, 0)
