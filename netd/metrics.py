# -*- test-case-name: tests.test_metrics -*-
"""
The Prometheus metrics endpoint, C{[netd.metrics]}.

netd counts its traffic in plain integers as it carries it
(L{netd.counters}: per service, per stream listener, per http service; the
refusals and drops of L{netd.drops}; the chat hub's own counts). Nothing on
a hot path calls into C{prometheus_client}: at each scrape, L{collectSeries}
reads those integers and L{NetdCollector} turns them into metric families,
so a scrape costs the same whatever the traffic and however many sessions
are open (it never walks the sessions).

L{MetricsService} serves them in the text exposition format over its own
listeners, built like any service's (L{netd.listeners}): admission by
C{allow}/C{deny} (loopback only by default), C{max_sessions}, the idle
timeout, one log event per session.

With workers (L{netd.workers}), each worker sends its series to the main
process every L{REPORT_INTERVAL} seconds (L{MetricsReporter}, over the
event pipe); the main process's endpoint reports their sum
(L{WorkerMetrics}): one series per service and listener, not one per
worker; only each worker's CPU time, memory and open files are labelled by
worker (L{workerSeries}). A worker that exits leaves its counters in the
sum, so counters never go down when a worker is restarted.
"""

from __future__ import annotations

import json
import os
import re
import resource
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString
from twisted.application.service import MultiService, Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Site

from netd import __version__
from netd.config import MetricsConfig, ServiceConfig
from netd.counters import Series, series
from netd.drops import DropLog
from netd.listeners import buildListenerService
from netd.policy import SessionPolicy
from netd.servicetype import ServiceContext, ServiceType

# Seconds between a worker's reports to the main process.
REPORT_INTERVAL = 1.0

# What the endpoint's own log events and listener services are named: not a
# valid service name, so it cannot clash with one.
ENDPOINT_NAME = "netd.metrics"

# The lines a worker sends (L{MetricsReporter}) start with this.
REPORT_PREFIX = b'{"netdWorker": "metrics"'

_REASONS = (
    ("in the deny list", "denied"),
    ("not in the allow list", "not_allowed"),
    ("service at its limit", "max_sessions"),
    ("address at its limit", "max_sessions_per_peer"),
    ("send failed", "send_failed"),
    ("send to target failed", "send_failed"),
)

# Reported from the start (as 0), so that rate() sees the first one.
_SESSION_REASONS = ("denied", "not_allowed", "max_sessions", "max_sessions_per_peer")


def reasonLabel(reason: str) -> str:
    """
    The label value of a refusal or drop reason as L{DropLog} counts it:
    a fixed name for the common ones, otherwise the reason's words without
    numbers or what is in parentheses (so that error messages and limits
    do not make new series).

    @param reason: e.g. C{"service at its limit of 1000 sessions"}.
    @return: e.g. C{"max_sessions"}; C{"too_many_udp_mappings"}.
    """
    for prefix, label in _REASONS:
        if reason.startswith(prefix):
            return label
    words = re.sub(r"\(.*", "", reason).lower()
    words = re.sub(r"[^a-z]+", "_", re.sub(r"\S*\d\S*", " ", words)).strip("_")
    return words[:48].rstrip("_") or "other"


def _byReason(totals: Any, always: Iterable[str] = ()) -> dict[str, int]:
    """
    Sum counts by L{reasonLabel}.

    @param totals: Counts by reason text (L{DropLog.totals}).
    @param always: Labels to report even at 0.
    @return: Counts by label.
    """
    counts = dict.fromkeys(always, 0)
    for reason, count in list(totals.items()):
        label = reasonLabel(reason)
        counts[label] = counts.get(label, 0) + count
    return counts


def serviceSeries(context: ServiceContext) -> list[Series]:
    """
    What one service instance has counted, as series.

    @param context: The service instance.
    @return: Its sessions per stream listener, refusals by reason, datagrams
        (if it has datagram listeners) and its type's own series.
    """
    name = context.name
    result = []
    for listener, counters in list(context.listenerCounters.items()):
        result += [
            series(
                "netd_sessions_accepted_total",
                "counter",
                "Stream sessions admitted",
                counters.accepted,
                service=name,
                listener=listener,
            ),
            series(
                "netd_sessions_active",
                "gauge",
                "Stream sessions open now",
                counters.active,
                service=name,
                listener=listener,
            ),
            series(
                "netd_sessions_received_bytes_total",
                "counter",
                "Bytes received over ended stream sessions",
                counters.bytesIn,
                service=name,
                listener=listener,
            ),
            series(
                "netd_sessions_sent_bytes_total",
                "counter",
                "Bytes sent over ended stream sessions",
                counters.bytesOut,
                service=name,
                listener=listener,
            ),
            series(
                "netd_session_duration_seconds",
                "histogram",
                "How long ended stream sessions lasted",
                counters.durations,
                service=name,
                listener=listener,
            ),
        ]
    config = context.config
    transports = {listener.transport for listener in config.listeners}
    if "stream" in transports:
        for reason, count in _byReason(
            context.policy.refusals.totals, _SESSION_REASONS
        ).items():
            result.append(
                series(
                    "netd_sessions_refused_total",
                    "counter",
                    "Sessions (and datagram sources) refused, by reason",
                    count,
                    service=name,
                    reason=reason,
                )
            )
    if "datagram" in transports:
        totals = context.counters
        for metric, help, value in (
            (
                "netd_datagrams_received_total",
                "Datagrams received",
                totals.datagramsIn,
            ),
            (
                "netd_datagrams_received_bytes_total",
                "Bytes in the datagrams received",
                totals.datagramBytesIn,
            ),
            ("netd_datagrams_sent_total", "Datagrams sent", totals.datagramsOut),
            (
                "netd_datagrams_sent_bytes_total",
                "Bytes in the datagrams sent",
                totals.datagramBytesOut,
            ),
        ):
            result.append(series(metric, "counter", help, value, service=name))
        for reason, count in _byReason(
            context.datagramDrops.totals, ("denied", "not_allowed")
        ).items():
            result.append(
                series(
                    "netd_datagrams_dropped_total",
                    "counter",
                    "Datagrams received but not served, or replies not sent, by reason",
                    count,
                    service=name,
                    reason=reason,
                )
            )
    hook = config.serviceType.metrics
    if hook is not None:
        result += hook(context)
    return result


def collectSeries(contexts: Iterable[ServiceContext]) -> list[Series]:
    """
    What a process's service instances have counted.

    @param contexts: The instances (L{NetdService.instances
        <netd.daemon.NetdService.instances>}'s values).
    @return: Their series.
    """
    result = []
    for context in list(contexts):
        result += serviceSeries(context)
    return result


def mergeSeries(groups: Iterable[Iterable[Series]]) -> list[Series]:
    """
    Sum series with the same name and labels (from several workers, or a
    service and its replacement after a reload).

    @param groups: Lists of series.
    @return: One series per name and labels, in the order first seen. A
        histogram whose bounds differ from the first one's is left out.
    """
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], Series] = {}
    for group in groups:
        for one in group:
            key = (one.name, one.labels)
            seen = merged.get(key)
            if seen is None:
                merged[key] = one
            elif one.kind != seen.kind:
                continue
            elif one.kind == "histogram":
                bounds, buckets, total = seen.value
                if tuple(one.value[0]) != tuple(bounds):
                    continue
                merged[key] = Series(
                    one.name,
                    one.kind,
                    seen.help,
                    one.labels,
                    (
                        bounds,
                        tuple(a + b for a, b in zip(buckets, one.value[1])),
                        total + one.value[2],
                    ),
                )
            else:
                merged[key] = Series(
                    one.name, one.kind, seen.help, one.labels, seen.value + one.value
                )
    return list(merged.values())


def toFamilies(allSeries: Iterable[Series]) -> list[Metric]:
    """
    Turn series into Prometheus metric families.

    @param allSeries: The series; those of one name must share their kind
        and label names.
    @return: One family per name.
    """
    families: dict[str, Metric] = {}
    for one in allSeries:
        family = families.get(one.name)
        labelNames = [name for name, _ in one.labels]
        if family is None:
            kind = {
                "counter": CounterMetricFamily,
                "gauge": GaugeMetricFamily,
                "histogram": HistogramMetricFamily,
            }[one.kind]
            family = families[one.name] = kind(one.name, one.help, labels=labelNames)
        values = [value for _, value in one.labels]
        if one.kind == "histogram":
            bounds, buckets, total = one.value
            assert isinstance(family, HistogramMetricFamily)
            family.add_metric(
                values,
                [(floatToGoString(b), c) for b, c in zip(bounds, buckets)]
                + [("+Inf", buckets[-1])],
                total,
            )
        else:
            family.add_metric(values, one.value)  # type: ignore[union-attr]
    return list(families.values())


class NetdCollector:
    """
    A C{prometheus_client} collector reading netd's counters at scrape
    time.

    @ivar source: Returns the series to report (L{collectSeries} of this
        process's services, or the workers' sum).
    """

    def __init__(self, source: Callable[[], list[Series]]) -> None:
        self.source = source

    def collect(self) -> list[Metric]:
        """
        @return: The metric families, and C{netd_build_info}.
        """
        info = GaugeMetricFamily(
            "netd_build_info", "netd's version (always 1)", labels=["version"]
        )
        info.add_metric([__version__], 1)
        return [info] + toFamilies(self.source())


def openFiles(directory: str = "/proc/self/fd") -> int:
    """
    How many files this process has open.

    Linux (since 6.2) gives the count as the size of C{/proc/self/fd}, in
    microseconds; listing the directory, the fallback for older kernels,
    takes about 8 ms at 10,000 descriptors.

    @param directory: The descriptor directory.
    @return: The count.
    """
    size = os.stat(directory).st_size
    return size if size > 0 else len(os.listdir(directory))


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def workerSeries(worker: int) -> list[Series]:
    """
    A worker process's CPU time, memory and open files, labelled by worker
    (the main process's own are the C{process_} metrics).

    @param worker: The worker's index.
    @return: The series.
    """
    with open("/proc/self/stat", "rb") as f:
        parts = f.read().split(b")")[-1].split()
    label = str(worker)
    return [
        series(
            "netd_worker_cpu_seconds_total",
            "counter",
            "User and system CPU time of a worker process",
            (float(parts[11]) + float(parts[12])) / _TICKS,
            worker=label,
        ),
        series(
            "netd_worker_resident_memory_bytes",
            "gauge",
            "Resident memory of a worker process",
            float(parts[21]) * _PAGE,
            worker=label,
        ),
        series(
            "netd_worker_open_fds",
            "gauge",
            "Open file descriptors of a worker process",
            openFiles(),
            worker=label,
        ),
    ]


class ProcessMetrics(ProcessCollector):
    """
    C{prometheus_client}'s process metrics (CPU, memory, start time, open
    and most files), with the open files counted by L{openFiles}: its
    L{ProcessCollector} lists C{/proc/self/fd}, which alone would cost a
    scrape 8 ms at 10,000 open sessions.
    """

    def collect(self) -> list[Metric]:
        """
        @return: The metric families (none without C{/proc}).
        """
        if not self._btime:
            return []
        prefix = self._prefix
        with open("/proc/self/stat", "rb") as f:
            parts = f.read().split(b")")[-1].split()
        result: list[Metric] = [
            GaugeMetricFamily(
                prefix + "virtual_memory_bytes",
                "Virtual memory size in bytes.",
                value=float(parts[20]),
            ),
            GaugeMetricFamily(
                prefix + "resident_memory_bytes",
                "Resident memory size in bytes.",
                value=float(parts[21]) * self._pagesize,
            ),
            GaugeMetricFamily(
                prefix + "start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                value=float(parts[19]) / self._ticks + self._btime,
            ),
            CounterMetricFamily(
                prefix + "cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                value=(float(parts[11]) + float(parts[12])) / self._ticks,
            ),
            GaugeMetricFamily(
                prefix + "open_fds",
                "Number of open file descriptors.",
                value=openFiles(),
            ),
        ]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        result.append(
            GaugeMetricFamily(
                prefix + "max_fds",
                "Maximum number of open file descriptors.",
                value=float("inf") if soft == resource.RLIM_INFINITY else soft,
            )
        )
        return result


def buildRegistry(source: Callable[[], list[Series]]) -> CollectorRegistry:
    """
    A registry of netd's collector and the process collector (CPU, memory,
    open files of this process).

    @param source: See L{NetdCollector.source}.
    @return: The registry.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NetdCollector(source))
    ProcessMetrics(registry=registry)
    return registry


class MetricsResource(Resource):
    """
    C{/metrics}: the registry in the exposition format the scraper asks for
    (text, or OpenMetrics through C{Accept}).

    Not C{prometheus_client.twisted.MetricsResource}: that one runs the
    collectors in a thread pool (through WSGI), where they would read
    netd's counters while the reactor thread changes them, and it imports
    the global reactor when imported. This one renders in the reactor
    thread, in well under a millisecond.

    @ivar registry: What it serves.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        """
        @param request: The request.
        @return: The metrics.
        """
        accept = request.getHeader(b"accept")
        encoder, contentType = choose_encoder(
            accept.decode("latin-1") if accept else ""
        )
        request.setHeader(b"content-type", contentType.encode("ascii"))
        return encoder(self.registry)


class _Index(Resource):
    """
    C{/}: a pointer to C{/metrics}.
    """

    def render_GET(self, request: Any) -> bytes:
        """
        @param request: The request.
        @return: A line of text.
        """
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"netd metrics: /metrics\n"

    def getChild(self, path: bytes, request: Any) -> Resource:
        """
        @param path: A path segment.
        @param request: The request.
        @return: This page for C{/}; not found for anything but
            C{/metrics}.
        """
        if path == b"":
            return self
        return NoResource()


class MetricsSite(Site):
    """
    The endpoint's site: no access log (each session is logged once, as
    for every service).
    """

    def log(self, request: Any) -> None:
        """
        Log nothing per request.

        @param request: The request.
        """
        return None


def buildSite(registry: CollectorRegistry, reactor: Any) -> MetricsSite:
    """
    @param registry: What C{/metrics} serves.
    @param reactor: The reactor.
    @return: The site.
    """
    root = _Index()
    root.putChild(b"metrics", MetricsResource(registry))
    site = MetricsSite(root, reactor=reactor, timeout=60)
    site.noisy = False
    return site


METRICS_TYPE = ServiceType(
    name="metrics",
    description="the Prometheus metrics endpoint ([netd.metrics])",
)


class MetricsService(MultiService):
    """
    The metrics endpoint: one listener service per C{listen} entry of
    C{[netd.metrics]}, built and bound like any service's.

    @ivar context: Its own service context (not among the services it
        reports on).
    @ivar registry: What it serves.
    """

    def __init__(
        self,
        config: MetricsConfig,
        source: Callable[[], list[Series]],
        ownPorts: set[int],
        reactor: Any,
        statsInterval: float = 60.0,
    ) -> None:
        """
        @param config: The C{[netd.metrics]} table.
        @param source: What to report (see L{NetdCollector.source}).
        @param ownPorts: The ports netd listens on (shared, live).
        @param reactor: The reactor.
        @param statsInterval: Seconds between summaries of refusals.
        """
        super().__init__()
        self.setName(f"[{ENDPOINT_NAME}]")
        serviceConfig = ServiceConfig(
            ENDPOINT_NAME, "metrics", config.listeners, config.limits, {}, METRICS_TYPE
        )
        self.context = ServiceContext(
            config=serviceConfig,
            policy=SessionPolicy(
                config.limits,
                DropLog(
                    ENDPOINT_NAME, "refused a session from", reactor, statsInterval
                ),
            ),
            datagramDrops=DropLog(
                ENDPOINT_NAME, "dropped a datagram from", reactor, statsInterval
            ),
            ownPorts=ownPorts,
            statsInterval=statsInterval,
            reactor=reactor,
        )
        self.registry = buildRegistry(source)
        site = buildSite(self.registry, reactor)
        for listener in config.listeners:
            buildListenerService(
                self.context, METRICS_TYPE, listener, site
            ).setServiceParent(self)

    def stopService(self) -> Any:
        """
        Stop listening; flush the refusal summaries.

        @return: A L{Deferred} that fires when every listener is closed.
        """
        self.context.policy.refusals.stop()
        self.context.datagramDrops.stop()
        return super().stopService()


class MetricsReporter(Service):
    """
    In a worker process: sends this process's series to the main process
    every L{REPORT_INTERVAL} seconds, and once more when stopping.

    @ivar source: This process's series.
    @ivar send: Writes a message to the main process
        (L{netd.worker.EventPipe.send}).
    @ivar worker: The worker's index, to add its L{workerSeries}; L{None}:
        do not.
    """

    def __init__(
        self,
        source: Callable[[], list[Series]],
        send: Callable[[dict[str, Any]], None],
        reactor: Any,
        interval: float = REPORT_INTERVAL,
        worker: int | None = None,
    ) -> None:
        self.source = source
        self.send = send
        self.worker = worker
        self._loop = LoopingCall(self.report)
        self._loop.clock = reactor
        self.interval = interval

    def startService(self) -> None:
        """
        Report now and every L{interval} seconds.
        """
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        """
        Stop reporting, after a last report.
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()
            self.report()

    def report(self) -> None:
        """
        Send the series.
        """
        reported = self.source()
        if self.worker is not None:
            reported += workerSeries(self.worker)
        self.send(
            {
                "netdWorker": "metrics",
                "series": [one.toJSON() for one in reported],
            }
        )


class WorkerMetrics:
    """
    In the main process of a netd with workers: the last series each worker
    reported, and what exited workers had counted.

    @ivar retired: The counters and histograms of workers that exited,
        summed (their gauges are dropped).
    """

    _log = Logger()

    def __init__(self) -> None:
        self._latest: dict[object, list[Series]] = {}
        self.retired: list[Series] = []

    def received(self, worker: object, line: bytes) -> None:
        """
        A worker's report (L{MetricsReporter.report}).

        @param worker: Which worker (any key that is its own until it exits).
        @param line: The JSON line.
        """
        try:
            message = json.loads(line)
            reported = [Series.fromJSON(one) for one in message["series"]]
        except (ValueError, KeyError, TypeError) as e:
            self._log.warn("unreadable metrics report from a worker: {error}", error=e)
            return
        self._latest[worker] = reported

    def ended(self, worker: object) -> None:
        """
        A worker exited: keep its counters in the sum.

        @param worker: The key it reported under.
        """
        last = self._latest.pop(worker, None)
        if last:
            self.retired = mergeSeries(
                [self.retired, [one for one in last if one.kind != "gauge"]]
            )

    def series(self) -> list[Series]:
        """
        @return: The sum over live workers' last reports and exited workers'
            counters, and C{netd_workers_reporting}.
        """
        reporting = series(
            "netd_workers_reporting",
            "gauge",
            "Worker processes whose metrics are included",
            len(self._latest),
        )
        return [reporting] + mergeSeries([*self._latest.values(), self.retired])
