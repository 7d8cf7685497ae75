# -*- test-case-name: tests.test_drops -*-
"""
Counting refused connections and dropped datagrams without flooding the log.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger


class DropLog:
    """
    Counts refusals by reason and logs them at a bounded rate.

    The first refusal after a quiet period is logged at once, with its peer;
    the ones that follow within C{interval} seconds are only counted, and one
    summary event per interval reports them. An attacker who makes netd refuse
    a million connections costs one log event per interval.

    @ivar totals: Refusals since start, by reason.
    """

    _log = Logger()

    def __init__(self, service: str, what: str, clock: Any, interval: float) -> None:
        """
        @param service: The service name, for the events.
        @param what: What happens to the refused thing, e.g. C{"refused a
            session from"} or C{"dropped a datagram from"}.
        @param clock: An L{IReactorTime} provider.
        @param interval: Seconds between summaries.
        """
        self.service = service
        self.what = what
        self.clock = clock
        self.interval = interval
        self.totals: Counter[str] = Counter()
        self._pending: Counter[str] = Counter()
        self._summary: IDelayedCall | None = None

    def record(self, reason: str, peer: str) -> None:
        """
        Count one refusal.

        @param reason: Why, e.g. C{"too many sessions from this address"}.
        @param peer: Who was refused.
        """
        self.totals[reason] += 1
        if self._summary is None:
            self._log.warn(
                "{service} {what} {peer}: {reason}",
                service=self.service,
                what=self.what,
                peer=peer,
                reason=reason,
            )
            self._summary = self.clock.callLater(self.interval, self._summarize)
        else:
            self._pending[reason] += 1

    def _summarize(self) -> None:
        """
        Log what was counted in the last interval; go quiet if nothing was.
        """
        self._summary = None
        if not self._pending:
            return
        counts = dict(self._pending)
        self._pending.clear()
        self._log.warn(
            "{service} {what} {count} more peers in the last {interval:g}s: {reasons}",
            service=self.service,
            what=self.what,
            count=sum(counts.values()),
            interval=self.interval,
            reasons=", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())),
            counts=counts,
        )
        self._summary = self.clock.callLater(self.interval, self._summarize)

    def stop(self) -> None:
        """
        Flush the pending summary and cancel the timer (at shutdown).
        """
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        if self._pending:
            self._summarize()
            if self._summary is not None:
                self._summary.cancel()
                self._summary = None
