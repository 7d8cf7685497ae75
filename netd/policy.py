# -*- test-case-name: tests.test_policy -*-
"""
Admission policy: the limits of L{netd.limits.Limits}, enforced once for
every service type.

L{SessionPolicy} decides whether a new TCP session (or a datagram's source)
is served: allow/deny prefixes, the service-wide session cap, the
per-address cap and the connection-rate limits (per address, then for the
whole service; see L{netd.ratelimit}). Twisted's C{policies.LimitConnectionsByPeer} would be the
obvious tool, but in Twisted 26.10 it indexes an address object and fails, so
netd keeps its own per-peer count keyed on C{addr.host}.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.interfaces import IReactorTime

from netd.drops import DropLog
from netd.limits import Limits, effectiveBurst
from netd.ratelimit import RateMeter

_CACHE_SIZE = 4096

# Most source addresses whose connection rate is remembered at once (about
# 150 bytes each); see RateMeter for what happens past it.
MAX_RATE_SOURCES = 65536

# The one key of the service-wide rate meter.
_SERVICE = ""


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
    @ivar serviceRate: The service-wide connection-rate meter, if limited.
    @ivar peerRate: The per-address connection-rate meter, if limited.
    """

    def __init__(
        self,
        limits: Limits,
        refusals: DropLog,
        clock: IReactorTime | None = None,
        maxRateSources: int = MAX_RATE_SOURCES,
    ) -> None:
        """
        @param limits: The limits enforced.
        @param refusals: Where refusals are counted and logged.
        @param clock: The clock of the rate limits (the refusal log's clock,
            the service's reactor, if L{None}).
        @param maxRateSources: Most addresses whose rate is tracked at once.
        """
        self.limits = limits
        self.refusals = refusals
        self.filter = AddressFilter(limits.allow, limits.deny)
        self.active = 0
        self._perPeer: dict[str, int] = {}
        seconds = (clock if clock is not None else refusals.clock).seconds
        self.serviceRate: RateMeter | None = None
        self.peerRate: RateMeter | None = None
        if limits.maxConnectionsPerSecond:
            rate = limits.maxConnectionsPerSecond
            burst = effectiveBurst(rate, limits.connectionBurst)
            self.serviceRate = RateMeter(rate, burst, seconds, maxKeys=1)
        if limits.maxConnectionsPerSecondPerPeer:
            rate = limits.maxConnectionsPerSecondPerPeer
            burst = effectiveBurst(rate, limits.connectionBurstPerPeer)
            self.peerRate = RateMeter(rate, burst, seconds, maxKeys=maxRateSources)

    def admit(self, host: str) -> bool:
        """
        Decide whether a new session from C{host} is served, and count it.

        A refusal is recorded in L{refusals}; an admitted session must be
        matched by one L{release}. Only admitted sessions are charged to the
        connection rates, and the address's rate is checked before the
        service's: a source over its own rate is refused without using up
        the service's budget, so it cannot lock the others out.

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
            elif self.peerRate is not None and not self.peerRate.allows(host):
                reason = (
                    f"address over its limit of {self.peerRate.rate:g} "
                    "connections per second"
                )
            elif self.serviceRate is not None and not self.serviceRate.allows(_SERVICE):
                reason = (
                    f"service over its limit of {self.serviceRate.rate:g} "
                    "connections per second"
                )
        if reason is not None:
            self.refusals.record(reason, host)
            return False
        if self.peerRate is not None:
            self.peerRate.charge(host)
        if self.serviceRate is not None:
            self.serviceRate.charge(_SERVICE)
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
