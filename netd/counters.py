# -*- test-case-name: tests.test_listeners,tests.test_metrics -*-
"""
Traffic counters: per service (L{ServiceCounters}), per stream listener
(L{ListenerCounters}) and per http service (L{HTTPCounters}), as plain
integers that the code carrying the traffic adds to and that logs, status
pages and the metrics endpoint (L{netd.metrics}) read when they need them.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

from typing import Any

from attrs import asdict, define, field, frozen


@define
class ServiceCounters:
    """
    What a service has carried since start.

    @ivar sessions: TCP (stream) sessions ended.
    @ivar bytesIn: Bytes received over ended stream sessions.
    @ivar bytesOut: Bytes sent over ended stream sessions.
    @ivar datagramsIn: Datagrams received.
    @ivar datagramBytesIn: Bytes in those datagrams.
    @ivar datagramsOut: Datagrams sent.
    @ivar datagramBytesOut: Bytes in those datagrams.
    @ivar datagramsDropped: Datagrams received but not answered or not
        accepted (refused source, reply budget, send failure).
    """

    sessions: int = 0
    bytesIn: int = 0
    bytesOut: int = 0
    datagramsIn: int = 0
    datagramBytesIn: int = 0
    datagramsOut: int = 0
    datagramBytesOut: int = 0
    datagramsDropped: int = 0

    def snapshot(self) -> dict[str, int]:
        """
        @return: The counters as a plain dict (for logs and status pages).
        """
        return asdict(self)


# Session durations, in seconds: upper bounds of the histogram buckets.
DURATION_BOUNDS = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0)

# HTTP response latencies, in seconds.
LATENCY_BOUNDS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


class Histogram:
    """
    Observations counted in fixed buckets of plain integers: what a
    Prometheus histogram exposes, at the cost of one C{bisect} and two
    additions per observation (no lock, no labels, no per-event objects).

    @ivar bounds: The buckets' upper bounds, ascending; a last, unbounded
        bucket (C{+Inf}) follows them.
    @ivar counts: Observations per bucket (not cumulative), one more than
        L{bounds}.
    @ivar total: The sum of the observations.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """
        Count one observation.

        @param value: It (an observation equal to a bound falls in that
            bound's bucket, as Prometheus's C{le} says).
        """
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        """
        How many observations.
        """
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """
        @return: Observations at or below each bound, then the count (the
            C{_bucket} series of Prometheus).
        """
        return list(accumulate(self.counts))


@define(eq=False)
class ListenerCounters:
    """
    What one stream listener of a service has carried since start (its
    service's L{ServiceCounters} hold the sums over its listeners).

    @ivar accepted: Sessions admitted.
    @ivar active: Sessions open now.
    @ivar bytesIn: Bytes received over ended sessions.
    @ivar bytesOut: Bytes sent over ended sessions.
    @ivar durations: How long ended sessions lasted, in seconds.
    """

    accepted: int = 0
    active: int = 0
    bytesIn: int = 0
    bytesOut: int = 0
    durations: Histogram = field(factory=lambda: Histogram(DURATION_BOUNDS))


@define(eq=False)
class HTTPCounters:
    """
    What an http service has answered since start.

    @ivar statusClasses: Responses by status class: index 1 counts 1xx,
        ..., 5 counts 5xx; index 0 counts anything else.
    @ivar latencies: Seconds from a request's first byte to its response
        being handed to the transport.
    """

    statusClasses: list[int] = field(factory=lambda: [0] * 6)
    latencies: Histogram = field(factory=lambda: Histogram(LATENCY_BOUNDS))

    def record(self, status: int, latency: float | None) -> None:
        """
        Count one response.

        @param status: Its status code.
        @param latency: Its latency, in seconds; L{None} if it has none (a
            WebSocket upgrade, which lasts as long as its connection).
        """
        statusClass = status // 100
        self.statusClasses[statusClass if 1 <= statusClass <= 5 else 0] += 1
        if latency is not None:
            self.latencies.observe(latency)


@frozen
class Series:
    """
    One series of a metric, as netd's own code reports it (L{netd.metrics}
    turns these into Prometheus metric families; a worker process sends
    them to the main process as JSON, L{toJSON}).

    @ivar name: The metric's name, e.g. C{"netd_sessions_accepted_total"}
        (counters end in C{_total}).
    @ivar kind: C{"counter"}, C{"gauge"} or C{"histogram"}.
    @ivar help: One line saying what it counts.
    @ivar labels: Label names and values, in order.
    @ivar value: The number; for a histogram, C{(bounds, cumulative bucket
        counts (one more than the bounds: the last is the count), sum)}.
    """

    name: str
    kind: str
    help: str
    labels: tuple[tuple[str, str], ...]
    value: Any

    def toJSON(self) -> list[Any]:
        """
        @return: The series as a JSON-able list (see L{fromJSON}).
        """
        value = self.value
        if self.kind == "histogram":
            value = [list(value[0]), list(value[1]), value[2]]
        return [self.name, self.kind, self.help, [list(l) for l in self.labels], value]

    @classmethod
    def fromJSON(cls, data: Any) -> Series:
        """
        Read a series written by L{toJSON}.

        @param data: The JSON value.
        @return: The series.
        @raise ValueError: If it is not one.
        """
        try:
            name, kind, help, labels, value = data
            labels = tuple((str(k), str(v)) for k, v in labels)
            if kind == "histogram":
                value = (
                    tuple(float(b) for b in value[0]),
                    tuple(int(c) for c in value[1]),
                    float(value[2]),
                )
                if len(value[1]) != len(value[0]) + 1:
                    raise ValueError("bucket count mismatch")
            elif kind in ("counter", "gauge"):
                value = float(value)
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (TypeError, ValueError, IndexError) as e:
            raise ValueError(f"not a metric series: {e}") from e
        return cls(str(name), kind, str(help), labels, value)


def histogramValue(histogram: Histogram) -> tuple[Any, ...]:
    """
    @param histogram: A histogram.
    @return: Its L{Series.value}.
    """
    return (histogram.bounds, tuple(histogram.cumulative()), histogram.total)


def series(name: str, kind: str, help: str, value: Any, **labels: str) -> Series:
    """
    Make a L{Series}, labels given as keywords (in that order).

    @param name: The metric's name.
    @param kind: C{"counter"}, C{"gauge"} or C{"histogram"}.
    @param help: What it counts.
    @param value: The number (for a histogram, a L{Histogram}).
    @param labels: Label names and values.
    @return: The series.
    """
    if isinstance(value, Histogram):
        value = histogramValue(value)
    return Series(name, kind, help, tuple(labels.items()), value)
