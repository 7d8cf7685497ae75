# -*- test-case-name: tests.test_metrics_e2e -*-
"""
End to end: the real C{twistd netd} with a metrics endpoint, real traffic
from real clients (C{nc}, C{curl}), scraped with C{curl} and checked with
C{promtool check metrics} (Debian's C{prometheus} package); alone and with
C{workers = 2}.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests import test_endtoend
from tests.test_endtoend import freePorts
from tests.test_listeners import LOOPBACK, waitFor
from tests import test_workers_e2e

CLIENT_TIMEOUT = 10


def run(command: list[str], data: bytes = b"") -> bytes:
    """
    Run a client to its end.

    @param command: The client and its arguments.
    @param data: Its standard input.
    @return: Its standard output.
    """
    return subprocess.run(
        command, input=data, capture_output=True, timeout=CLIENT_TIMEOUT, check=True
    ).stdout


def sample(text: str, name: str, **labels: str) -> float:
    """
    The value of one sample in a scrape.

    @param text: The exposition text.
    @param name: The sample's name.
    @param labels: Labels it must have (others may follow).
    @return: Its value.
    @raise AssertionError: Unless exactly one line matches.
    """
    found = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{key}="{value}"' in head for key, value in labels.items()):
            found.append(float(value))
    assert len(found) == 1, (name, labels, found)
    return found[0]


def configText(echo: int, http: int, metrics: int, workers: int = 1) -> str:
    """
    @return: echo (TCP and UDP) and http, with a metrics endpoint.
    """
    return (
        f"[netd]\nworkers = {workers}\n"
        f'[netd.metrics]\nlisten = ["tcp:{metrics}:interface=127.0.0.1"]\n'
        f'[services.echo]\ntype = "echo"\n'
        f'listen = ["tcp:{echo}:interface=127.0.0.1", '
        f'"udp:{echo}:interface=127.0.0.1"]\n'
        f'[services.web]\ntype = "http"\n'
        f'listen = ["tcp:{http}:interface=127.0.0.1"]\n'
    )


class MetricsEndToEndTests(TestCase):
    """
    The metrics endpoint of the real daemon.
    """

    timeout = 90

    writeConfig = test_endtoend.EndToEndTests.writeConfig
    daemon = test_endtoend.EndToEndTests.daemon
    netd = test_endtoend.EndToEndTests.netd
    assertStoppedCleanly = test_endtoend.EndToEndTests.assertStoppedCleanly

    def setUp(self) -> None:
        for client, package in (("nc", "netcat-openbsd"), ("curl", "curl")):
            if shutil.which(client) is None:
                raise self.skipTest(f"{client} is not installed (package {package})")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    async def traffic(self, echo: int, http: int, sessions: int) -> None:
        """
        C{sessions} TCP echo sessions with C{nc}, one UDP echo datagram,
        a 200 and a 404 from http with C{curl}.
        """
        for _ in range(sessions):
            reply = await deferToThread(
                run, ["nc", "-N", LOOPBACK, str(echo)], b"hello\n"
            )
            self.assertEqual(reply, b"hello\n")
        reply = await deferToThread(
            run, ["nc", "-u", "-w", "1", LOOPBACK, str(echo)], b"ping\n"
        )
        self.assertEqual(reply, b"ping\n")
        for path, status in (("/", b"200"), ("/missing", b"404")):
            code = await deferToThread(
                run,
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
                + [f"http://{LOOPBACK}:{http}{path}"],
            )
            self.assertEqual(code, status)

    async def scrape(self, port: int) -> str:
        """
        Scrape with C{curl}; check the scrape with C{promtool} if installed.

        @param port: The endpoint's port.
        @return: The exposition text.
        """
        text = await deferToThread(
            run, ["curl", "-sf", f"http://{LOOPBACK}:{port}/metrics"]
        )
        if shutil.which("promtool") is not None:
            checked = await deferToThread(
                subprocess.run,
                ["promtool", "check", "metrics"],
                input=text,
                capture_output=True,
                timeout=CLIENT_TIMEOUT,
            )
            self.assertEqual(
                (checked.returncode, checked.stdout, checked.stderr), (0, b"", b"")
            )
        return text.decode("utf-8")

    async def test_scrapeAfterTraffic(self) -> None:
        """
        After 3 TCP echo sessions of 6 bytes, a datagram and two http
        requests, a scrape shows them all by service and listener, and the
        process metrics; C{promtool check metrics} accepts it; the daemon
        stops cleanly.
        """
        if shutil.which("promtool") is None:
            raise self.skipTest("promtool is not installed (package prometheus)")
        echo, http, metrics = freePorts(3)
        daemon = self.netd(
            "--config", self.writeConfig(configText(echo, http, metrics))
        )
        await daemon.waitForOutput(r" listening on ", count=4)
        await self.traffic(echo, http, 3)
        await daemon.waitForOutput(r"web session from .* ended", count=2)
        text = await self.scrape(metrics)
        tcp = {"service": "echo", "listener": f"tcp:{echo}:interface=127.0.0.1"}
        self.assertEqual(sample(text, "netd_sessions_accepted_total", **tcp), 3)
        self.assertEqual(sample(text, "netd_sessions_active", **tcp), 0)
        self.assertEqual(sample(text, "netd_sessions_received_bytes_total", **tcp), 18)
        self.assertEqual(sample(text, "netd_sessions_sent_bytes_total", **tcp), 18)
        self.assertEqual(sample(text, "netd_session_duration_seconds_count", **tcp), 3)
        self.assertEqual(
            sample(text, "netd_datagrams_received_total", service="echo"), 1
        )
        self.assertEqual(
            sample(text, "netd_datagrams_sent_bytes_total", service="echo"), 5
        )
        self.assertEqual(
            sample(text, "netd_http_responses_total", service="web", code="2xx"), 1
        )
        self.assertEqual(
            sample(text, "netd_http_responses_total", service="web", code="4xx"), 1
        )
        self.assertEqual(
            sample(text, "netd_http_request_duration_seconds_count", service="web"), 2
        )
        self.assertGreater(sample(text, "process_resident_memory_bytes"), 0)
        self.assertRegex(text, r'netd_build_info\{version="[^"]+"\} 1\.0')
        self.assertStoppedCleanly(daemon, await daemon.stop())


class WorkersMetricsEndToEndTests(TestCase):
    """
    The metrics endpoint of a daemon with two workers.
    """

    timeout = 90

    setUp = test_workers_e2e.WorkersEndToEndTests.setUp
    writeConfig = test_workers_e2e.WorkersEndToEndTests.writeConfig
    netd = test_workers_e2e.WorkersEndToEndTests.netd
    killAll = test_workers_e2e.WorkersEndToEndTests.killAll
    workers = test_workers_e2e.WorkersEndToEndTests.workers
    traffic = MetricsEndToEndTests.traffic
    scrape = MetricsEndToEndTests.scrape

    async def test_sumOverWorkers(self) -> None:
        """
        With C{workers = 2}, 8 echo sessions spread over the workers by the
        kernel show as one series per listener, their sum, within a report
        interval; the scrape passes C{promtool} (when installed).
        """
        for client in ("nc", "curl"):
            if shutil.which(client) is None:
                raise self.skipTest(f"{client} is not installed")
        echo, http, metrics = freePorts(3)
        daemon = self.netd(self.writeConfig(configText(echo, http, metrics, 2)))
        await daemon.waitForOutput(r"worker 1 ready", 30)
        await daemon.waitForOutput(r"worker 0 ready", 30)
        await self.traffic(echo, http, 8)
        tcp = {"service": "echo", "listener": f"tcp:{echo}:interface=127.0.0.1"}
        texts: list[str] = []

        async def summed() -> bool:
            texts.append(await self.scrape(metrics))
            return (
                sample(texts[-1], "netd_sessions_accepted_total", **tcp) == 8
                and sample(
                    texts[-1], "netd_http_responses_total", service="web", code="4xx"
                )
                == 1
            )

        await waitForAsync(summed, 10)
        text = texts[-1]
        self.assertEqual(sample(text, "netd_workers_reporting"), 2)
        for worker in ("0", "1"):
            self.assertGreater(
                sample(text, "netd_worker_resident_memory_bytes", worker=worker), 0
            )
        self.assertEqual(
            len(re.findall(r"^netd_sessions_accepted_total\{", text, re.M)), 2
        )
        self.assertEqual(sample(text, "netd_sessions_received_bytes_total", **tcp), 48)
        self.assertEqual(
            sample(text, "netd_http_responses_total", service="web", code="2xx"), 1
        )


async def waitForAsync(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """
    Wait until an async check returns true, trying every 0.2 seconds.

    @param check: An async function returning a bool.
    @param timeout: The most seconds to wait.
    @raise AssertionError: If it never does.
    """
    for _ in range(int(timeout / 0.2) + 1):
        if await check():
            return
        await deferLater(reactor, 0.2, lambda: None)
    raise AssertionError(f"not true within {timeout}s")
