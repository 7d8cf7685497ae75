# -*- test-case-name: tests.test_ratelimit -*-
"""
Rate limits by key: L{RateMeter}, a token bucket per key in one float.

The meter is GCRA (the generic cell rate algorithm, "virtual scheduling"),
which is a token bucket of C{burst} tokens refilled at C{rate} per second
stored as one number per key: the time at which the key's bucket would be
full again (its theoretical arrival time). A key whose bucket is full needs
no state at all, so the table only holds keys seen recently, and it is
bounded: past C{maxKeys} the keys whose buckets are full again are swept
(at most once a second), then the least recently added one is forgotten.

Used by the connection-rate limits of L{netd.policy} (per service and per
source address) and by the UDP reply guard of L{netd.reflection}.
"""

from __future__ import annotations

from collections.abc import Callable

_SWEEP_EVERY = 1.0


class RateMeter:
    """
    Admits at most C{rate} events per second per key, C{burst} back to back.

    @ivar rate: Events per second per key.
    @ivar burst: Events one key may have back to back.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float],
        maxKeys: int = 65536,
    ) -> None:
        """
        @param rate: Events per second allowed per key (more than 0).
        @param burst: Events allowed back to back per key (at least 1).
        @param clock: Returns the current time in seconds (the reactor's
            C{seconds}, a L{twisted.internet.task.Clock} in tests).
        @param maxKeys: How many keys have state at once; past that the
            ones whose bucket is full are swept, else the oldest is forgotten.
        """
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        # Exactly `burst` events fit back to back; a hundredth of an interval
        # of slack keeps float rounding from costing one of them. (The reply
        # guard this came from allowed half an interval, which let the event
        # after a drained bucket in half an interval early.)
        self._tolerance = self._interval * (burst - 0.99)
        self._clock = clock
        self._maxKeys = maxKeys
        self._theoreticalArrival: dict[str, float] = {}
        self._lastSweep = 0.0

    def allows(self, key: str) -> bool:
        """
        Whether one more event for C{key} fits now; does not charge it.

        @param key: The key (a source address, or one fixed key for a
            service-wide meter).
        @return: C{True} if L{charge} would succeed now.
        """
        tat = self._theoreticalArrival.get(key)
        return tat is None or tat - self._clock() <= self._tolerance

    def charge(self, key: str) -> None:
        """
        Count one event for C{key} (whether or not it fitted).

        @param key: The key.
        """
        now = self._clock()
        arrivals = self._theoreticalArrival
        tat = arrivals.get(key)
        if tat is None:
            if len(arrivals) >= self._maxKeys:
                self._makeRoom(now)
            tat = now
        elif tat < now:
            tat = now
        arrivals[key] = tat + self._interval

    def take(self, key: str) -> bool:
        """
        Admit and count one event for C{key} if it fits.

        @param key: The key.
        @return: Whether it fitted (and was counted).
        """
        if not self.allows(key):
            return False
        self.charge(key)
        return True

    def _makeRoom(self, now: float) -> None:
        """
        Forget keys whose bucket is full again, or else the oldest one.

        @param now: The current time.
        """
        arrivals = self._theoreticalArrival
        if now - self._lastSweep >= _SWEEP_EVERY:
            self._lastSweep = now
            for key in [k for k, tat in arrivals.items() if tat <= now]:
                del arrivals[key]
        if len(arrivals) >= self._maxKeys:
            del arrivals[next(iter(arrivals))]

    def tracked(self) -> int:
        """
        @return: How many keys have state.
        """
        return len(self._theoreticalArrival)
