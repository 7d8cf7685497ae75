"""
What netd's metrics endpoint costs.

C{python bench/metrics_bench.py [--sessions 10000] [--scrapes 50]
[--seconds 3] [--repeat 5]} runs two measurements, each against real
C{twistd -n netd} processes on free loopback ports:

1. B{Scrape cost.} One netd with C{[netd.metrics]}: C{--scrapes} scrapes
   of C{/metrics} over one keep-alive connection with no session open,
   then again with C{--sessions} echo sessions open (this script holds
   them; it raises its own open-file limit to its hard limit, and netd
   inherits it). Reported: the scrape's wall time seen by the client
   (median, 95th percentile) and netd's CPU time per scrape.

2. B{Throughput cost.} Two netd processes with the same echo service, one
   with a metrics endpoint that this script scrapes every
   C{--scrape-interval} seconds during its runs (1 s: fifteen times
   Prometheus's default rate), one without; C{bench/loadgen.c}'s
   C{tcp-echo} (100 connections, 64-byte ping-pong) and C{udp-echo} (8
   sockets, 64 bytes) against each, alternating which goes first,
   C{--repeat} times. Reported: the medians, netd's CPU time per message,
   and the median over the repeats of the with/without ratio of each
   pair of back-to-back runs; a third netd without metrics (C{control})
   gives the same ratio for two identical servers: the run's noise floor.

Only processes this script started are signalled, by PID, and they are
always stopped on the way out. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import resource
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import run  # noqa: E402  (bench/run.py: servers, loadgen, tables)

HOST = run.HOST

CONFIG = """\
[netd]
allow_root = true
{metrics}
[services.echo]
type = "echo"
listen = ["tcp:{echo}:interface={host}:backlog=4096", "udp:{echo}:interface={host}"]
udp_reply_rate = 10000000
udp_reply_burst = 10000000

[services.echo.limits]
max_sessions = 100000
max_sessions_per_peer = 100000
idle_timeout = 0
"""

METRICS = '[netd.metrics]\nlisten = ["tcp:{port}:interface={host}"]\n'

WORKLOADS = [w for w in run.WORKLOADS if w.name in ("tcp-echo-100x64", "udp-echo-8x64")]

OPEN_TIMEOUT = 120.0


def startNetd(
    name: str, directory: str, stack: ExitStack, metrics: bool
) -> tuple[run.Server, int | None]:
    """
    Start a netd with an echo service, and a metrics endpoint if asked.

    @return: The server (ready) and its metrics port.
    """
    echo, metricsPort = run.freePorts(2)
    config = os.path.join(directory, f"{name}.toml")
    with open(config, "w") as f:
        f.write(
            CONFIG.format(
                host=HOST,
                echo=echo,
                metrics=METRICS.format(port=metricsPort, host=HOST) if metrics else "",
            )
        )
    command = [
        part.format(
            python=sys.executable,
            twistd=os.path.join(os.path.dirname(sys.executable), "twistd"),
            config=config,
        )
        for part in shlex.split(run.NETD_COMMAND)
    ]
    ports = {"echo": echo}
    if metrics:
        ports["metrics"] = metricsPort
    server = stack.enter_context(run.running(name, command, ports, directory))
    return server, metricsPort if metrics else None


class Scraper:
    """
    Scrapes one endpoint over a keep-alive connection.
    """

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection(HOST, port, timeout=10)

    def scrape(self) -> tuple[float, bytes]:
        """
        @return: The seconds it took and the body.
        """
        started = time.perf_counter()
        self.connection.request("GET", "/metrics")
        response = self.connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"scrape answered {response.status}")
        return elapsed, body

    def close(self) -> None:
        """
        Close the connection.
        """
        self.connection.close()


def activeSessions(body: bytes) -> int:
    """
    @param body: A scrape.
    @return: The sum of C{netd_sessions_active} in it.
    """
    total = 0.0
    for line in body.decode("utf-8").splitlines():
        if line.startswith("netd_sessions_active{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def scrapeSeries(server: run.Server, scraper: Scraper, count: int) -> dict[str, float]:
    """
    Scrape C{count} times in a row.

    @return: The median and 95th percentile wall time in ms, netd's CPU
        ms per scrape, and the body's size.
    """
    scraper.scrape()
    times = []
    before = server.cpuSeconds()
    size = 0
    for _ in range(count):
        elapsed, body = scraper.scrape()
        times.append(elapsed * 1000)
        size = len(body)
    cpu = (server.cpuSeconds() - before) * 1000 / count
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, int(len(times) * 0.95))],
        "cpu_ms": cpu,
        "bytes": size,
    }


@contextmanager
def openSessions(port: int, count: int) -> Iterator[list[socket.socket]]:
    """
    Open C{count} TCP sessions to echo, closed on the way out.

    @raise RuntimeError: If they cannot be opened within L{OPEN_TIMEOUT}.
    """
    sockets: list[socket.socket] = []
    deadline = time.monotonic() + OPEN_TIMEOUT
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                raise RuntimeError(f"opened only {len(sockets)} sessions")
            sockets.append(socket.create_connection((HOST, port), timeout=10))
        yield sockets
    finally:
        for s in sockets:
            s.close()


def scrapeCost(
    directory: str, stack: ExitStack, sessions: int, scrapes: int
) -> list[tuple[int, dict[str, float]]]:
    """
    Measurement 1 (see the module docstring).

    @return: C{(open sessions, figures)} for 0 and C{sessions}.
    """
    server, port = startNetd("netd-metrics", directory, stack, metrics=True)
    assert port is not None
    scraper = Scraper(port)
    results = [(0, scrapeSeries(server, scraper, scrapes))]
    run.progress(f"opening {sessions} sessions")
    with openSessions(server.ports["echo"], sessions):
        deadline = time.monotonic() + OPEN_TIMEOUT
        while activeSessions(scraper.scrape()[1]) < sessions:
            if time.monotonic() > deadline:
                raise RuntimeError("netd did not see every session open")
            time.sleep(0.2)
        results.append((sessions, scrapeSeries(server, scraper, scrapes)))
    scraper.close()
    return results


@contextmanager
def scrapingEvery(port: int, interval: float) -> Iterator[list[int]]:
    """
    Scrape an endpoint every C{interval} seconds in a thread, until the
    block ends.

    @return: A list that holds the number of scrapes done, at the end.
    """
    stop = threading.Event()
    done = [0]

    def loop() -> None:
        scraper = Scraper(port)
        try:
            while not stop.wait(interval):
                scraper.scrape()
                done[0] += 1
        finally:
            scraper.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(15)


def throughputCost(
    directory: str,
    stack: ExitStack,
    seconds: int,
    repeat: int,
    interval: float,
) -> dict[str, dict[str, list[float]]]:
    """
    Measurement 2 (see the module docstring).

    @return: Throughputs by workload name, then by side.
    """
    loadgen = run.compileLoadgen(directory)
    plain, _ = startNetd("netd-plain", directory, stack, metrics=False)
    scraped, port = startNetd("netd-scraped", directory, stack, metrics=True)
    control, _ = startNetd("netd-control", directory, stack, metrics=False)
    assert port is not None
    sides = [("without", plain), ("with", scraped), ("control", control)]
    results: dict[str, dict[str, list[float]]] = {}
    for workload in WORKLOADS:
        byside: dict[str, list[float]] = results.setdefault(workload.name, {})
        for index in range(repeat):
            # Each side goes first, second and third in turn.
            order = sides[index % 3 :] + sides[: index % 3]
            for side, server in order:
                run.progress(f"{workload.name} #{index + 1} {side} metrics")
                time.sleep(run.SETTLE)
                if side == "with":
                    with scrapingEvery(port, interval) as done:
                        result = run.measure(server, loadgen, workload, seconds, 1)
                    if done[0] < seconds / interval - 1:
                        raise RuntimeError(f"only {done[0]} scrapes during the run")
                else:
                    result = run.measure(server, loadgen, workload, seconds, 1)
                byside.setdefault(side, []).append(result[workload.metric])
                byside.setdefault(side + " cpu", []).append(result["server_cpu_per"])
    return results


def raiseFileLimit(needed: int) -> None:
    """
    Raise this process's open-file limit to its hard limit (netd, started
    after, inherits it).

    @raise RuntimeError: If the hard limit is below C{needed}.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(
            f"the open-file hard limit ({hard}) is below the {needed} needed"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str]) -> None:
    """
    Run both measurements and print Markdown tables.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--only", choices=("scrape", "throughput"))
    options = parser.parse_args(argv)
    if not 0 < options.sessions <= 50_000 or not 0 < options.scrapes <= 10_000:
        parser.error("--sessions is 1 to 50000, --scrapes 1 to 10000")
    raiseFileLimit(options.sessions + 1000)
    signal.signal(signal.SIGTERM, run.exitOnSignal)
    print(
        f"Python {platform.python_version()}, {platform.system()} "
        f"{platform.release()}, {os.cpu_count()} CPUs."
    )
    with (
        tempfile.TemporaryDirectory(prefix="netd-metrics-bench-") as directory,
        ExitStack() as stack,
    ):
        if options.only in (None, "scrape"):
            with ExitStack() as servers:
                figures = scrapeCost(
                    directory, servers, options.sessions, options.scrapes
                )
            print()
            print(f"scrape of /metrics, {options.scrapes} in a row on one connection")
            print()
            print(
                run.table(
                    [
                        "open sessions",
                        "wall ms (median)",
                        "wall ms (p95)",
                        "netd CPU ms per scrape",
                        "body bytes",
                    ],
                    [
                        [
                            f"{open_:,}",
                            f"{f['median_ms']:.2f}",
                            f"{f['p95_ms']:.2f}",
                            f"{f['cpu_ms']:.2f}",
                            f"{f['bytes']:,}",
                        ]
                        for open_, f in figures
                    ],
                )
            )
        if options.only in (None, "throughput"):
            results = throughputCost(
                directory,
                stack,
                options.seconds,
                options.repeat,
                options.scrape_interval,
            )
            print()
            print(
                f"echo throughput, {options.repeat} x {options.seconds} s, with a "
                f"scrape every {options.scrape_interval:g} s vs without an endpoint"
            )
            print()
            rows = []
            for workload in WORKLOADS:
                byside = results[workload.name]

                def paired(side: str, key: str = "") -> float:
                    # Each repeat ran every side back to back: the median
                    # of the paired ratios is steadier than the ratio of
                    # medians on a shared machine.
                    return statistics.median(
                        a / b
                        for a, b in zip(byside[side + key], byside["without" + key])
                    )

                rows.append(
                    [
                        workload.name,
                        f"{run.spread(byside['without'])} {workload.unit}",
                        f"{run.spread(byside['with'])} {workload.unit}",
                        f"{paired('with'):.3f}",
                        f"{paired('control'):.3f}",
                        run.spread(byside["without cpu"], 2),
                        run.spread(byside["with cpu"], 2),
                        f"{paired('with', ' cpu'):.3f}",
                        f"{paired('control', ' cpu'):.3f}",
                    ]
                )
            print(
                run.table(
                    [
                        "workload",
                        "without metrics",
                        "with metrics, scraped",
                        "with / without",
                        "control / without",
                        "netd CPU µs/msg without",
                        "with",
                        "CPU with / without",
                        "CPU control / without",
                    ],
                    rows,
                )
            )
            print()
            print(
                "Ratios: medians over the repeats of each back-to-back pair. "
                "control: a second netd without metrics, the same as "
                "without: its ratio is the noise floor of the run."
            )


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (OSError, RuntimeError) as e:
        sys.exit(f"bench/metrics_bench.py: {e}")
