# -*- test-case-name: tests.test_metrics -*-
"""
Tests for L{netd.metrics} and the counters it reads (L{netd.counters}): the
series after simulated sessions, datagrams, http responses and chat
traffic; their exposition; the workers' sum; the endpoint on a real socket.
"""

from __future__ import annotations

import ipaddress
import json
import os
from types import SimpleNamespace
from typing import Any

from attrs import evolve
from prometheus_client.exposition import generate_latest
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, ResponseNeverReceived, readBody

from netd.config import LOOPBACK, ConfigError, NetdConfig, parseConfig
from netd.counters import DURATION_BOUNDS, Histogram, HTTPCounters, Series, series
from netd.descriptions import parseListener
from netd.limits import Limits
from netd.listeners import ListenError
from netd.metrics import (
    REPORT_PREFIX,
    MetricsReporter,
    MetricsService,
    ProcessMetrics,
    WorkerMetrics,
    buildRegistry,
    collectSeries,
    mergeSeries,
    openFiles,
    reasonLabel,
    serviceSeries,
)
from netd.reload import planReload
from netd.services import serviceTypes
from netd.services.echo import buildDatagramProtocol, buildStreamFactory
from netd.servicetype import ServiceContext
from netd.sessions import Session, SessionFactory
from tests.chatsupport import ChatHarness
from tests.httpsupport import exchange, get, makeFactory
from tests.support import FakeDatagramTransport, makeContext
from tests.test_listeners import LOOPBACK as LOOPBACK_HOST


def values(allSeries: list[Series], name: str, **labels: str) -> Any:
    """
    The value of the one series of C{name} whose labels include C{labels}.

    @param allSeries: Series.
    @param name: A metric name.
    @param labels: Labels it must have.
    @return: Its value.
    @raise AssertionError: If there is not exactly one.
    """
    found = [
        one.value
        for one in allSeries
        if one.name == name and labels.items() <= dict(one.labels).items()
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def withListeners(context: ServiceContext, *descriptions: str) -> ServiceContext:
    """
    Give a test context configured listeners (what decides which series a
    service reports).

    @param context: A context from L{makeContext}.
    @param descriptions: Listener descriptions.
    @return: The context.
    """
    context.config = evolve(
        context.config,
        listeners=tuple(parseListener(d) for d in descriptions),
    )
    return context


class HistogramTests(SynchronousTestCase):
    """
    Tests for L{Histogram}.
    """

    def test_buckets(self) -> None:
        """
        An observation falls in the first bucket whose bound it does not
        exceed (a bound itself included, as Prometheus's C{le}); beyond the
        last bound, in C{+Inf}; the cumulative counts and the sum follow.
        """
        histogram = Histogram((1.0, 10.0))
        for value in (0.5, 1.0, 5.0, 100.0):
            histogram.observe(value)
        self.assertEqual(histogram.counts, [2, 1, 1])
        self.assertEqual(histogram.cumulative(), [2, 3, 4])
        self.assertEqual(histogram.count, 4)
        self.assertEqual(histogram.total, 106.5)


class SessionSeriesTests(SynchronousTestCase):
    """
    Session series after simulated sessions through L{SessionFactory}.
    """

    def setUp(self) -> None:
        self.patch(Session, "_log", Logger(observer=lambda event: None))
        self.clock = Clock()

    def connect(self, factory: SessionFactory, host: str = "192.0.2.1") -> Any:
        """
        @param factory: A session factory.
        @param host: The peer's address.
        @return: The session and its transport, or L{None} if refused.
        """
        peer = IPv4Address("TCP", host, 40000)
        session = factory.buildProtocol(peer)
        if session is None:
            return None
        transport = StringTransport(peerAddress=peer)
        session.makeConnection(transport)
        return session, transport

    def test_sessions(self) -> None:
        """
        Two echo sessions on one listener, one of them ended after 2.5
        seconds and 5 bytes each way: 2 accepted, 1 active, its bytes, and
        one duration in the 1-10 s bucket; another listener of the same
        service has its own series.
        """
        context = withListeners(
            makeContext("echo", reactor=self.clock), "tcp:7", "tcp:8"
        )
        factory = SessionFactory(buildStreamFactory(context), context, "tcp:7")
        SessionFactory(buildStreamFactory(context), context, "tcp:8")
        first, transport = self.connect(factory)
        self.connect(factory)
        first.dataReceived(b"hello")
        self.assertEqual(transport.value(), b"hello")
        self.clock.advance(2.5)
        first.connectionLost(Failure(Exception("gone")))

        found = serviceSeries(context)
        seven = {"service": "echo", "listener": "tcp:7"}
        self.assertEqual(values(found, "netd_sessions_accepted_total", **seven), 2)
        self.assertEqual(values(found, "netd_sessions_active", **seven), 1)
        self.assertEqual(
            values(found, "netd_sessions_received_bytes_total", **seven), 5
        )
        self.assertEqual(values(found, "netd_sessions_sent_bytes_total", **seven), 5)
        bounds, buckets, total = values(found, "netd_session_duration_seconds", **seven)
        self.assertEqual(bounds, DURATION_BOUNDS)
        self.assertEqual(total, 2.5)
        below = {bound: count for bound, count in zip(bounds, buckets)}
        self.assertEqual((below[1.0], below[10.0], buckets[-1]), (0, 1, 1))
        self.assertEqual(
            values(found, "netd_sessions_accepted_total", listener="tcp:8"), 0
        )

    def test_refusedByReason(self) -> None:
        """
        Refusals are counted by a fixed reason name, every common one
        reported from the start.
        """
        context = withListeners(
            makeContext(
                "echo",
                limits=Limits(
                    maxSessionsPerPeer=1, deny=(parseNetwork("198.51.100.0/24"),)
                ),
                reactor=self.clock,
            ),
            "tcp:7",
        )
        factory = SessionFactory(buildStreamFactory(context), context, "tcp:7")
        self.assertIsNotNone(self.connect(factory))
        self.assertIsNone(self.connect(factory))
        self.assertIsNone(self.connect(factory))
        self.assertIsNone(self.connect(factory, "198.51.100.7"))
        found = serviceSeries(context)
        self.assertEqual(
            {
                dict(one.labels)["reason"]: one.value
                for one in found
                if one.name == "netd_sessions_refused_total"
            },
            {
                "denied": 1,
                "not_allowed": 0,
                "max_sessions": 0,
                "max_sessions_per_peer": 2,
            },
        )
        self.assertEqual(values(found, "netd_sessions_accepted_total"), 1)

    def test_reasonLabels(self) -> None:
        """
        Reasons with numbers or error messages in them map to one label
        each.
        """
        self.assertEqual(
            reasonLabel("service at its limit of 1000 sessions"), "max_sessions"
        )
        self.assertEqual(reasonLabel("send failed (Connection refused)"), "send_failed")
        self.assertEqual(
            reasonLabel("cannot open a UDP mapping ([Errno 24] Too many open files)"),
            "cannot_open_a_udp_mapping",
        )
        self.assertEqual(reasonLabel("too many UDP mappings"), "too_many_udp_mappings")
        self.assertEqual(reasonLabel("42"), "other")


def parseNetwork(text: str) -> Any:
    """
    @param text: A CIDR prefix.
    @return: The network.
    """
    return ipaddress.ip_network(text)


class DatagramSeriesTests(SynchronousTestCase):
    """
    Datagram series of a service with a UDP listener.
    """

    def test_datagrams(self) -> None:
        """
        Two datagrams echoed and one from a denied source: 3 in, 2 out,
        their bytes, and a drop for C{denied}.
        """
        context = withListeners(
            makeContext("echo", limits=Limits(deny=(parseNetwork("198.51.100.0/24"),))),
            "udp:7",
        )
        protocol = buildDatagramProtocol(context, parseListener("udp:7"))  # type: ignore[arg-type]
        transport = FakeDatagramTransport()
        protocol.transport = transport  # type: ignore[assignment]
        protocol.datagramReceived(b"abc", ("192.0.2.1", 5000))
        protocol.datagramReceived(b"defg", ("192.0.2.1", 5000))
        protocol.datagramReceived(b"x", ("198.51.100.1", 5000))
        self.assertEqual(len(transport.written), 2)
        found = serviceSeries(context)
        self.assertEqual(values(found, "netd_datagrams_received_total"), 3)
        self.assertEqual(values(found, "netd_datagrams_received_bytes_total"), 8)
        self.assertEqual(values(found, "netd_datagrams_sent_total"), 2)
        self.assertEqual(values(found, "netd_datagrams_sent_bytes_total"), 7)
        self.assertEqual(
            values(found, "netd_datagrams_dropped_total", reason="denied"), 1
        )
        self.assertFalse(
            [one for one in found if one.name == "netd_sessions_refused_total"]
        )


class HTTPSeriesTests(SynchronousTestCase):
    """
    The http service's series.
    """

    def test_counters(self) -> None:
        """
        L{HTTPCounters.record} counts by status class (anything outside
        100-599 as C{other}) and observes the latency when there is one.
        """
        counters = HTTPCounters()
        for status in (200, 204, 404, 503, 101, 999):
            counters.record(status, 0.002)
        counters.record(200, None)
        self.assertEqual(counters.statusClasses, [1, 1, 3, 0, 1, 1])
        self.assertEqual(counters.latencies.count, 6)

    def test_responses(self) -> None:
        """
        A 200 and a 404 answered by the http service show in its series,
        with their latencies (here 0: the clock is fake).
        """
        self.patch(Session, "_log", Logger(observer=lambda event: None))
        factory, context = makeFactory()
        withListeners(context, "tcp:80")
        responses, _ = exchange(factory, context, get("/") + get("/no-such-file"))
        self.assertEqual([r.status for r in responses], [200, 404])
        found = serviceSeries(context)
        self.assertEqual(values(found, "netd_http_responses_total", code="2xx"), 1)
        self.assertEqual(values(found, "netd_http_responses_total", code="4xx"), 1)
        self.assertEqual(values(found, "netd_http_responses_total", code="5xx"), 0)
        bounds, buckets, total = values(found, "netd_http_request_duration_seconds")
        self.assertEqual((buckets[0], buckets[-1], total), (2, 2, 0.0))


class ChatSeriesTests(SynchronousTestCase):
    """
    The chat service's series.
    """

    def test_messages(self) -> None:
        """
        Three members in one room, one message: published once, delivered
        to each member; 3 members, 1 room.
        """
        chat = ChatHarness(self)
        withListeners(chat.context, "tcp:10023")
        alice = chat.join("alice")
        chat.join("bob")
        chat.join("carol")
        hub: Any = chat.server.hub
        published, delivered = hub.published, hub.delivered
        alice.say("hello")
        self.assertEqual(hub.published - published, 1)
        self.assertEqual(hub.delivered - delivered, 3)
        found = serviceSeries(chat.context)
        self.assertEqual(
            values(found, "netd_chat_messages_published_total"), hub.published
        )
        self.assertEqual(
            values(found, "netd_chat_messages_delivered_total"), hub.delivered
        )
        self.assertEqual(values(found, "netd_chat_members"), 3)
        self.assertEqual(values(found, "netd_chat_rooms"), 1)

    def test_flood(self) -> None:
        """
        Lines over the flood limit are counted as dropped (C{flood}); a
        client that keeps flooding is counted as a client dropped for
        C{flood}.
        """
        chat = ChatHarness(self, flood_lines_per_second=1.0, flood_lines_burst=2)
        withListeners(chat.context, "tcp:10023")
        client = chat.join("alice")
        client.say(*["spam"] * 12)
        self.assertTrue(client.closed)
        found = serviceSeries(chat.context)
        refused = values(found, "netd_chat_messages_dropped_total", reason="flood")
        self.assertGreater(refused, 0)
        self.assertEqual(chat.server.linesRefused["flood"], refused)
        self.assertEqual(
            values(found, "netd_chat_clients_dropped_total", reason="flood"), 1
        )
        self.assertEqual(
            values(found, "netd_chat_clients_dropped_total", reason="slow_consumer"),
            0,
        )

    def test_slowConsumer(self) -> None:
        """
        A client kicked for not reading is counted as C{slow_consumer}.
        """
        chat = ChatHarness(self)
        withListeners(chat.context, "tcp:10023")
        client = chat.join("alice")
        client.session.wrappedProtocol.session.kick(
            "too slow: more than 65536 bytes of output pending", abort=True
        )
        found = serviceSeries(chat.context)
        self.assertEqual(
            values(found, "netd_chat_clients_dropped_total", reason="slow_consumer"),
            1,
        )

    def test_sharedHub(self) -> None:
        """
        A hub that reports its link (C{connected}, C{reconnects},
        C{lostMessages}) has it in the series; the local hub has none.
        """
        chat = ChatHarness(self)
        withListeners(chat.context, "tcp:10023")
        names = {one.name for one in serviceSeries(chat.context)}
        self.assertFalse({n for n in names if n.startswith("netd_chat_hub_")})
        hub: Any = chat.server.hub
        hub.connected = True
        hub.reconnects = 2
        hub.lostMessages = 5
        found = serviceSeries(chat.context)
        self.assertEqual(values(found, "netd_chat_hub_connected"), 1)
        self.assertEqual(values(found, "netd_chat_hub_reconnects_total"), 2)
        self.assertEqual(values(found, "netd_chat_hub_lost_messages_total"), 5)


class ExpositionTests(SynchronousTestCase):
    """
    Series as the Prometheus text format (L{buildRegistry}).
    """

    def test_text(self) -> None:
        """
        Counters get C{_total}, histograms cumulative C{_bucket} lines with
        C{+Inf}, C{_count} and C{_sum}; netd's version and the process
        collector are there.
        """
        histogram = Histogram((0.1, 1.0))
        histogram.observe(0.5)
        reported = [
            series("netd_x_total", "counter", "X.", 3, service="a"),
            series("netd_y_seconds", "histogram", "Y.", histogram, service="a"),
        ]
        text = generate_latest(buildRegistry(lambda: reported)).decode("utf-8")
        for line in (
            "# TYPE netd_x_total counter",
            'netd_x_total{service="a"} 3.0',
            'netd_y_seconds_bucket{le="0.1",service="a"} 0.0',
            'netd_y_seconds_bucket{le="1.0",service="a"} 1.0',
            'netd_y_seconds_bucket{le="+Inf",service="a"} 1.0',
            'netd_y_seconds_count{service="a"} 1.0',
            'netd_y_seconds_sum{service="a"} 0.5',
            "process_open_fds",
            "netd_build_info{version=",
        ):
            self.assertIn(line, text)


class ProcessMetricsTests(SynchronousTestCase):
    """
    Tests for L{ProcessMetrics} and L{openFiles}.
    """

    def test_openFiles(self) -> None:
        """
        L{openFiles} counts this process's descriptors: 100 more after
        opening 100 files; where the kernel gives no size it lists the
        directory.
        """
        before = openFiles()
        opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(100)]
        try:
            self.assertEqual(openFiles(), before + 100)
            real = os.stat
            self.patch(
                os,
                "stat",
                lambda path: (
                    SimpleNamespace(st_size=0)
                    if path == "/proc/self/fd"
                    else real(path)
                ),
            )
            # The listing opens one descriptor of its own.
            self.assertEqual(openFiles(), before + 101)
        finally:
            for fd in opened:
                os.close(fd)

    def test_families(self) -> None:
        """
        It reports what C{prometheus_client}'s process collector does.
        """
        families = {
            family.name: family.samples[0].value
            for family in ProcessMetrics(registry=None).collect()
        }
        self.assertEqual(
            set(families),
            {
                "process_virtual_memory_bytes",
                "process_resident_memory_bytes",
                "process_start_time_seconds",
                "process_cpu_seconds",
                "process_open_fds",
                "process_max_fds",
            },
        )
        self.assertGreater(families["process_resident_memory_bytes"], 1_000_000)
        self.assertAlmostEqual(families["process_open_fds"], openFiles(), delta=2)


class MergeTests(SynchronousTestCase):
    """
    Tests for L{mergeSeries}, L{Series} as JSON and L{WorkerMetrics}.
    """

    def reports(self, accepted: int, active: int, duration: float) -> list[Series]:
        """
        @return: What a worker might report.
        """
        histogram = Histogram((1.0,))
        histogram.observe(duration)
        return [
            series("netd_a_total", "counter", "A.", accepted, service="echo"),
            series("netd_b", "gauge", "B.", active, service="echo"),
            series("netd_c_seconds", "histogram", "C.", histogram, service="echo"),
        ]

    def test_merge(self) -> None:
        """
        Series with the same name and labels are summed, histograms bucket
        by bucket; a histogram with other bounds is left out.
        """
        other = Histogram((2.0,))
        other.observe(0.1)
        merged = mergeSeries(
            [
                self.reports(2, 1, 0.5),
                self.reports(3, 4, 5.0),
                [series("netd_c_seconds", "histogram", "C.", other, service="echo")],
            ]
        )
        self.assertEqual(values(merged, "netd_a_total"), 5)
        self.assertEqual(values(merged, "netd_b"), 5)
        self.assertEqual(values(merged, "netd_c_seconds"), ((1.0,), (1, 2), 5.5))

    def test_json(self) -> None:
        """
        A series survives L{Series.toJSON} and L{Series.fromJSON} through
        JSON text; something else is refused with L{ValueError}.
        """
        for one in self.reports(2, 1, 0.5):
            again = Series.fromJSON(json.loads(json.dumps(one.toJSON())))
            self.assertEqual(again, one)
        for bad in (
            None,
            [],
            ["x", "summary", "", [], 1],
            ["x", "counter", "", [], "a"],
        ):
            self.assertRaises(ValueError, Series.fromJSON, bad)

    def test_workers(self) -> None:
        """
        The main process reports the sum of each worker's last report; a
        worker that exits leaves its counters and histograms, not its
        gauges; an unreadable report is logged and ignored.
        """
        events: list[dict[str, Any]] = []
        self.patch(WorkerMetrics, "_log", Logger(observer=events.append))
        metrics = WorkerMetrics()

        def report(worker: object, reported: list[Series]) -> None:
            line = json.dumps(
                {"netdWorker": "metrics", "series": [s.toJSON() for s in reported]}
            ).encode("utf-8")
            self.assertTrue(line.startswith(REPORT_PREFIX))
            metrics.received(worker, line)

        report("w0", self.reports(1, 1, 0.5))
        report("w0", self.reports(2, 1, 0.5))
        report("w1", self.reports(10, 3, 0.5))
        found = metrics.series()
        self.assertEqual(values(found, "netd_workers_reporting"), 2)
        self.assertEqual(values(found, "netd_a_total"), 12)
        self.assertEqual(values(found, "netd_b"), 4)
        metrics.ended("w1")
        report("w1-restarted", self.reports(1, 1, 0.5))
        found = metrics.series()
        self.assertEqual(values(found, "netd_a_total"), 13)
        self.assertEqual(values(found, "netd_b"), 2)
        self.assertEqual(values(found, "netd_c_seconds")[1], (3, 3))
        metrics.received("w0", b'{"netdWorker": "metrics", "series": [1]}')
        self.assertEqual(values(metrics.series(), "netd_a_total"), 13)
        self.assertEqual(len(events), 1)

    def test_reporter(self) -> None:
        """
        L{MetricsReporter} sends at start, every interval, and once more
        when stopped.
        """
        clock = Clock()
        sent: list[dict[str, Any]] = []
        count = iter(range(100))
        reporter = MetricsReporter(
            lambda: [series("netd_a_total", "counter", "A.", next(count))],
            sent.append,
            clock,
            interval=1.0,
        )
        reporter.startService()
        clock.advance(1.0)
        clock.advance(1.0)
        reporter.stopService()
        clock.advance(5.0)
        self.assertEqual(
            [Series.fromJSON(m["series"][0]).value for m in sent], [0, 1, 2, 3]
        )
        self.assertEqual({m["netdWorker"] for m in sent}, {"metrics"})

    def test_reporterWorkerSeries(self) -> None:
        """
        Given its worker's index, L{MetricsReporter} adds the worker's CPU
        time, memory and open files, labelled by worker.
        """
        sent: list[dict[str, Any]] = []
        reporter = MetricsReporter(list, sent.append, Clock(), worker=3)
        reporter.report()
        reported = [Series.fromJSON(one) for one in sent[0]["series"]]
        self.assertEqual(
            {(one.name, one.labels) for one in reported},
            {
                (name, (("worker", "3"),))
                for name in (
                    "netd_worker_cpu_seconds_total",
                    "netd_worker_resident_memory_bytes",
                    "netd_worker_open_fds",
                )
            },
        )
        self.assertGreater(
            values(reported, "netd_worker_resident_memory_bytes"), 1_000_000
        )
        self.assertAlmostEqual(
            values(reported, "netd_worker_open_fds"), openFiles(), delta=2
        )


def configText(metrics: str, services: str = "") -> str:
    """
    @param metrics: The body of C{[netd.metrics]}.
    @param services: More tables.
    @return: A configuration with an echo service.
    """
    return (
        f"[netd.metrics]\n{metrics}\n"
        '[services.echo]\ntype = "echo"\nlisten = ["tcp:7007:interface=127.0.0.1"]\n'
        + services
    )


class ConfigTests(SynchronousTestCase):
    """
    C{[netd.metrics]} in the configuration file.
    """

    def parse(self, text: str) -> NetdConfig:
        """
        @param text: TOML.
        @return: The configuration.
        """
        return parseConfig(serviceTypes(), text, "netd.toml")

    def problems(self, text: str) -> list[str]:
        """
        @param text: Invalid TOML.
        @return: The problem lines.
        """
        try:
            self.parse(text)
        except ConfigError as e:
            return e.lines()
        raise AssertionError("valid")

    def test_defaults(self) -> None:
        """
        Without the table there is no endpoint; with it, its listeners and
        loopback-only admission by default.
        """
        self.assertIsNone(
            self.parse('[services.echo]\ntype = "echo"\nlisten = ["tcp:7"]\n').metrics
        )
        metrics = self.parse(configText('listen = ["tcp:9100:interface=127.0.0.1"]'))
        assert metrics.metrics is not None
        self.assertEqual(
            [l.description for l in metrics.metrics.listeners],
            ["tcp:9100:interface=127.0.0.1"],
        )
        self.assertEqual(metrics.metrics.limits.allow, LOOPBACK)
        self.assertEqual(metrics.metrics.limits.maxSessions, 64)
        opened = self.parse(
            configText(
                'listen = ["tcp:9100"]\nallow = ["10.0.0.0/8"]\nmax_sessions = 4'
            )
        ).metrics
        assert opened is not None
        self.assertEqual([str(n) for n in opened.limits.allow], ["10.0.0.0/8"])
        self.assertEqual(opened.limits.maxSessions, 4)

    def test_problems(self) -> None:
        """
        A datagram listener, an unknown key, a bad limit and an address a
        service uses are reported, naming the key.
        """
        lines = self.problems(
            configText(
                'listen = ["udp:9100", "tcp:7007:interface=127.0.0.1"]\n'
                "max_bytes = 5\nmax_sessions = 0"
            )
        )
        self.assertEqual(
            lines,
            [
                "netd.toml: netd.metrics.max_bytes: unknown key (known keys: allow, "
                "deny, idle_timeout, listen, max_sessions, max_sessions_per_peer)",
                "netd.toml: netd.metrics.max_sessions: 0 is out of range (1 to 1000000)",
                "netd.toml: netd.metrics.listen[0]: 'udp:9100': a metrics service "
                "has no datagram listeners",
                "netd.toml: netd.metrics.listen[1]: 'tcp:7007:interface=127.0.0.1' is "
                "the same address as services.echo.listen[0] "
                "('tcp:7007:interface=127.0.0.1')",
            ],
        )

    def test_reloadNeedsRestart(self) -> None:
        """
        A reload that changes C{[netd.metrics]} says it applies at the next
        start.
        """
        old = self.parse(configText('listen = ["tcp:9100:interface=127.0.0.1"]'))
        new = self.parse(configText('listen = ["tcp:9101:interface=127.0.0.1"]'))
        self.assertEqual(planReload(old, new).restartOnly, ("metrics",))
        self.assertEqual(planReload(old, old).restartOnly, ())


class EndpointTests(TestCase):
    """
    L{MetricsService} on a real loopback socket.
    """

    def setUp(self) -> None:
        self.patch(Session, "_log", Logger(observer=lambda event: None))

    def start(self, allow: str = "") -> tuple[MetricsService, str]:
        """
        Start an endpoint on a free loopback port reporting one echo
        service that served one session.

        @param allow: An C{allow} line for C{[netd.metrics]}.
        @return: The service and its base URL.
        """
        config = parseConfig(
            serviceTypes(),
            configText(f'listen = ["tcp:0:interface=127.0.0.1"]\n{allow}'),
            "netd.toml",
        )
        assert config.metrics is not None
        context = withListeners(makeContext("echo", reactor=reactor), "tcp:7")
        factory = SessionFactory(Factory.forProtocol(Protocol), context, "tcp:7")
        factory.counters.accepted = 1
        service = MetricsService(
            config.metrics, lambda: collectSeries([context]), set(), reactor
        )
        service.startService()
        self.addCleanup(service.stopService)
        port = list(service)[0].port.getHost().port  # type: ignore[attr-defined]
        return service, f"http://127.0.0.1:{port}"

    async def fetch(self, url: str) -> tuple[int, Any, bytes]:
        """
        @param url: What to GET.
        @return: The status, the headers and the body.
        """
        response = await Agent(reactor).request(b"GET", url.encode("ascii"))
        body = await readBody(response)
        return response.code, response.headers, body

    async def test_scrape(self) -> None:
        """
        C{GET /metrics} answers the text format with the service's series
        and the process metrics; C{/} points there; anything else is 404.
        """
        service, base = self.start()
        code, headers, body = await self.fetch(base + "/metrics")
        self.assertEqual(code, 200)
        self.assertEqual(
            headers.getRawHeaders(b"content-type"),
            [b"text/plain; version=0.0.4; charset=utf-8"],
        )
        self.assertIn(
            b'netd_sessions_accepted_total{listener="tcp:7",service="echo"} 1.0',
            body,
        )
        self.assertIn(b"process_cpu_seconds_total", body)
        code, _, body = await self.fetch(base + "/")
        self.assertEqual((code, body), (200, b"netd metrics: /metrics\n"))
        code, _, _ = await self.fetch(base + "/nothing")
        self.assertEqual(code, 404)
        self.assertEqual(
            service.context.listenerCounters["tcp:0:interface=127.0.0.1"].accepted,
            3,
        )

    def test_busyPort(self) -> None:
        """
        An endpoint whose port is taken fails to start naming itself, its
        listener and the cause, as a service's listener does.
        """
        taken = reactor.listenTCP(
            0, Factory.forProtocol(Protocol), interface=LOOPBACK_HOST
        )
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        config = parseConfig(
            serviceTypes(),
            configText(f'listen = ["tcp:{port}:interface=127.0.0.1"]'),
            "netd.toml",
        )
        assert config.metrics is not None
        service = MetricsService(config.metrics, list, set(), reactor)
        error = self.assertRaises(ListenError, service.startService)
        self.assertEqual(
            str(error).split(" (")[0],
            f"netd.metrics cannot listen on tcp:{port}:interface=127.0.0.1: "
            "address already in use",
        )

    async def test_allow(self) -> None:
        """
        A client outside C{allow} is refused before any HTTP, and the
        refusal is counted by the endpoint's own policy.
        """
        service, base = self.start('allow = ["192.0.2.0/24"]')
        with self.assertRaises(ResponseNeverReceived):
            await self.fetch(base + "/metrics")
        self.assertEqual(
            dict(service.context.policy.refusals.totals),
            {"not in the allow list": 1},
        )
