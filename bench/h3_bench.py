# -*- test-case-name: tests.test_bench -*-
"""
The HTTP/3 benchmark: netd's http service over HTTP/3 (QUIC, C{udp:}) beside
the same netd's HTTP/2 (TLS, C{ssl:}), in the same run, on a 1 KiB file,
50 connections, one request at a time on each:

    - HTTP/3: C{bench/h3client.py} (aioquic's asyncio client: no HTTP/3
      load generator is packaged for this machine, and no peer server here
      speaks HTTP/3 — Debian's nginx is built without it, so there is no
      ratio against another server);
    - HTTP/2: C{h2load -c 50 -m 1} with C{--log-file} (per-request times).

    python bench/h3_bench.py [--requests 5000] [--repeat 3]

Reports requests/s, the 99th percentile latency and netd's CPU time per
request (user + system of the netd process, from C{/proc}, over the run:
what the server spends, whatever the client costs), medians of
C{--repeat} interleaved runs. With two or more CPUs netd runs on CPU 0 and
the clients on CPU 1. The HTTP/3 client is Python too, so its own cost is
in the HTTP/3 requests/s; h2load's is C. The CPU per request is the
comparison that does not depend on the client.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
from typing import Any

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(
    os.path.abspath(__file__)
):
    del sys.path[0]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _load(name: str) -> Any:
    """
    @param name: A script of C{bench/}, without C{.py}.
    @return: It as a module, without putting C{bench/} on the import path.
    """
    spec = importlib.util.spec_from_file_location(
        f"netd_{name}", os.path.join(HERE, f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


h2bench = _load("h2_bench")
http = h2bench.http


def freeUDPPort() -> int:
    """
    @return: A UDP port free on 127.0.0.1 now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def netdServer(work: str, root: str, key: str, cert: str, cpu: int | None) -> Any:
    """
    @return: netd's http service on C{ssl:} (HTTP/2) and C{udp:} (HTTP/3).
    """
    server = h2bench.netdServer(work, root, key, cert, cpu)
    udp = freeUDPPort()
    config = server.command[-1]
    with open(config) as f:
        text = f.read()
    text = text.replace(
        ':interface=127.0.0.1:backlog=1024"]',
        f':interface=127.0.0.1:backlog=1024", "udp:{udp}:interface=127.0.0.1"]',
    )
    with open(config, "w") as f:
        f.write(text)
    server.udpPort = udp
    return server


def cpuSeconds(pid: int) -> float:
    """
    @param pid: A process.
    @return: Its user + system CPU time so far, in seconds.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, run: Any) -> dict[str, float]:
    """
    @param pid: netd's process.
    @param run: A callable running one client run, returning its figures.
    @return: Those figures with C{cpu}: netd's CPU microseconds per request.
    """
    before = cpuSeconds(pid)
    figures: dict[str, float] = run()
    spent = cpuSeconds(pid) - before
    figures["cpu"] = spent * 1e6 / max(1.0, figures["requests"])
    return figures


def percentile(values: list[float], fraction: float) -> float:
    """
    @param values: Samples.
    @param fraction: e.g. 0.99.
    @return: The nearest-rank percentile.
    """
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered))) - 1))
    return ordered[index]


def runH3(
    port: int, requests: int, clients: int, cpu: int | None, timeout: int
) -> dict[str, float]:
    """
    @return: C{rps} (requests over the whole run, handshakes included),
        C{p99} (ms per request), C{failed} of one HTTP/3 run.
    """
    perConnection = max(1, requests // clients)
    command = http.pinned(
        [sys.executable, os.path.join(HERE, "h3client.py"), "--port", str(port)]
        + ["--connections", str(clients), "--requests", str(perConnection)]
        + ["--timeout", str(timeout), "/1k.bin"],
        cpu,
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 30)
    report = json.loads(done.stdout)
    return {
        "rps": report["requests"] / report["elapsed"],
        "p99": percentile(report["latencies"], 0.99) * 1e3,
        "failed": float(report["failures"]),
        "requests": float(report["requests"]),
    }


def runH2(
    url: str, requests: int, clients: int, cpu: int | None, timeout: int, work: str
) -> dict[str, float]:
    """
    @return: C{rps}, C{p99} (ms), C{failed} of one h2load run.
    """
    log = os.path.join(work, "h2load.log")
    command = http.pinned(
        ["h2load", "-n", str(requests), "-c", str(clients), "-m", "1"]
        + ["--log-file", log, url],
        cpu,
    )
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout
    ).stdout
    summary = h2bench.parseH2load(output)
    with open(log) as f:
        # Lines: start time (us since epoch), status, elapsed (us).
        elapsed = [float(line.split()[2]) / 1e3 for line in f if line.strip()]
    return {
        "rps": summary["rps"],
        "p99": percentile(elapsed, 0.99),
        "failed": summary["failed"],
        "requests": float(len(elapsed)),
    }


def main(argv: list[str] | None = None) -> int:
    """
    Run the benchmark and print its table.

    @param argv: The arguments.
    @return: The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=300)
    options = parser.parse_args(argv)
    pin = (os.cpu_count() or 1) >= 2
    serverCPU, clientCPU = (0, 1) if pin else (None, None)
    with tempfile.TemporaryDirectory(prefix="netd-h3-bench-") as work:
        root = os.path.join(work, "root")
        os.makedirs(root)
        with open(os.path.join(root, "1k.bin"), "wb") as f:
            f.write(os.urandom(1024))
        key, cert = h2bench.certificate(work)
        server = netdServer(work, root, key, cert, serverCPU)
        server.start("/1k.bin")
        results: dict[str, list[dict[str, float]]] = {"HTTP/3": [], "HTTP/2": []}
        try:
            pid = server.process.pid
            for _ in range(options.repeat):
                results["HTTP/3"].append(
                    measured(
                        pid,
                        lambda: runH3(
                            server.udpPort,
                            options.requests,
                            options.clients,
                            clientCPU,
                            options.timeout,
                        ),
                    )
                )
                results["HTTP/2"].append(
                    measured(
                        pid,
                        lambda: runH2(
                            f"https://127.0.0.1:{server.port}/1k.bin",
                            options.requests,
                            options.clients,
                            clientCPU,
                            options.timeout,
                            work,
                        ),
                    )
                )
        finally:
            server.stop()
    print(
        f"1 KiB file, {options.clients} connections, one request at a time each,"
        f" {options.requests} requests per run, medians of {options.repeat}"
    )
    print(
        f"{'protocol':10} {'req/s':>10} {'p99 ms':>10} {'failed':>8}"
        f" {'netd us CPU/req':>16}"
    )
    for name, runs in results.items():
        rps = http.median([r["rps"] for r in runs])
        p99 = http.median([r["p99"] for r in runs])
        cpu = http.median([r["cpu"] for r in runs])
        failed = sum(r["failed"] for r in runs)
        print(f"{name:10} {rps:10.0f} {p99:10.1f} {failed:8.0f} {cpu:16.0f}")
    h3 = http.median([r["rps"] for r in results["HTTP/3"]])
    h2 = http.median([r["rps"] for r in results["HTTP/2"]])
    print(f"HTTP/3 / HTTP/2 requests/s: {h3 / h2:.2f}x")
    h3cpu = http.median([r["cpu"] for r in results["HTTP/3"]])
    h2cpu = http.median([r["cpu"] for r in results["HTTP/2"]])
    print(f"HTTP/3 / HTTP/2 netd CPU per request: {h3cpu / h2cpu:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
