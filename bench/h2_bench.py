# -*- test-case-name: tests.test_bench -*-
"""
The HTTP/2 benchmark: netd's http service against nginx (one worker,
C{http2}, C{access_log off}, the same certificate), both over TLS on
loopback, in the same run:

    - C{h2load -n N -c 50 -m 10} on a 1 KiB file (requests/s, mean time per
      request);
    - C{h2load -n M -c 10 -m 1} on a 1 MiB file (MiB/s);
    - HTTP/1.1 over TLS beside it: C{wrk -t1 -c50} on the 1 KiB file.

    python bench/h2_bench.py [--requests 200000] [--big-requests 2000]
        [--repeat 3] [--seconds 10]

Each (server, test) pair runs C{--repeat} times, interleaved; the table
reports medians and netd / nginx ratios. With two or more CPUs the servers
run on CPU 0 and the load generators on CPU 1 (C{taskset}). Needs
C{h2load} (nghttp2-client), C{wrk}, C{nginx} and C{openssl}; every run is
bounded by C{--timeout} seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(
    os.path.abspath(__file__)
):
    del sys.path[0]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _httpBench() -> Any:
    """
    @return: C{bench/http_bench.py} as a module (its servers, pinning, wrk
        runner), without putting C{bench/} on the import path.
    """
    spec = importlib.util.spec_from_file_location(
        "netd_http_bench", os.path.join(HERE, "http_bench.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


http = _httpBench()

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process off;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    # nginx closes a connection after 1000 requests by default (HTTP/2
    # included, since 1.19.7); netd does not: h2load would count the rest
    # as failed.
    keepalive_requests 10000000;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {root};
    }}
}}
"""


class TLSServer(http.Server):  # type: ignore[misc, name-defined]
    """
    A server under test that speaks TLS: started when it answers over it.
    """

    def start(self, probe: str) -> None:
        """
        Start it and wait until C{probe} answers 200 over TLS.

        @param probe: A path.
        @raise RuntimeError: If it does not within 20 seconds.
        """
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = f"GET {probe} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace")
                raise RuntimeError(f"{self.name} exited: {error}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1) as raw:
                    with context.wrap_socket(raw) as s:
                        s.sendall(request)
                        if s.recv(16)[8:13] == b" 200 ":
                            return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not serve {probe} on port {self.port}")


def certificate(work: str) -> tuple[str, str]:
    """
    @param work: A scratch directory.
    @return: A new self-signed key and certificate (RSA 2048, as most sites).
    """
    key = os.path.join(work, "key.pem")
    cert = os.path.join(work, "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", key, "-out", cert, "-subj", "/CN=localhost"],
        check=True,
        capture_output=True,
    )
    return key, cert


def netdServer(work: str, root: str, key: str, cert: str, cpu: int | None) -> TLSServer:
    """
    @return: netd's http service on an C{ssl:} listener (HTTP/2 by ALPN).
    """
    port = http.freePort()
    config = os.path.join(work, "netd-h2.toml")
    allowRoot = os.geteuid() == 0
    with open(config, "w") as f:
        f.write(
            "[netd]\n"
            + ("allow_root = true\n" if allowRoot else "")
            + '[services.www]\ntype = "http"\n'
            + f'listen = ["ssl:{port}:privateKey={key}:certKey={cert}'
            + ':interface=127.0.0.1:backlog=1024"]\n'
            + f'root = "{root}"\n'
            + "[services.www.limits]\n"
            + "max_sessions = 100000\nmax_sessions_per_peer = 100000\n"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    command = [twistd, "-n", "--pidfile=", "netd", "--config", config]
    return TLSServer("netd", http.pinned(command, cpu), port, work, env)


def nginxServer(
    work: str, root: str, key: str, cert: str, cpu: int | None
) -> TLSServer | None:
    """
    @return: nginx, one worker, HTTP/2 on TLS, no access log; L{None} if it
        is not installed.
    """
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if nginx is None:
        return None
    port = http.freePort()
    prefix = os.path.join(work, "nginx")
    os.makedirs(prefix, exist_ok=True)
    config = os.path.join(prefix, "nginx.conf")
    with open(config, "w") as f:
        f.write(
            NGINX_CONF.format(prefix=prefix, port=port, root=root, key=key, cert=cert)
        )
    command = [nginx, "-p", prefix, "-c", config]
    return TLSServer("nginx", http.pinned(command, cpu), port, work, dict(os.environ))


def runH2load(
    url: str, requests: int, clients: int, streams: int, cpu: int | None, timeout: int
) -> dict[str, float]:
    """
    Run C{h2load} once.

    @return: C{rps}, C{mibps}, C{mean} (ms per request), C{failed}.
    """
    command = http.pinned(
        ["h2load", "-n", str(requests), "-c", str(clients), "-m", str(streams), url],
        cpu,
    )
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout
    ).stdout
    return parseH2load(output)


def parseH2load(output: str) -> dict[str, float]:
    """
    Read h2load's summary.

    @param output: What h2load printed.
    @return: C{rps}, C{mibps}, C{mean} (ms per request), C{failed}.
    @raise RuntimeError: If it has no summary (h2load failed).
    """
    finished = re.search(
        r"finished in ([\d.]+)(\w+), ([\d.]+) req/s, ([\d.]+)(\w+)/s", output
    )
    if finished is None:
        raise RuntimeError(f"h2load: {output[-500:]}")
    done = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", output)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(\w+)", output)
    assert done is not None and mean is not None
    units = {"B": 1 / 1024**2, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}
    return {
        "rps": float(finished.group(3)),
        "mibps": float(finished.group(4)) * units[finished.group(5)],
        "mean": float(mean.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[mean.group(2)],
        "failed": float(int(done.group(2)) + int(done.group(3))),
    }


def main(argv: list[str] | None = None) -> int:
    """
    Run the benchmark and print the table.

    @param argv: Command-line arguments.
    @return: The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--big-requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="wrk's duration")
    parser.add_argument("--timeout", type=int, default=300, help="bound per run")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    args = parser.parse_args(argv)
    for tool in ("h2load", "wrk", "openssl"):
        if shutil.which(tool) is None:
            print(f"bench/h2_bench.py: {tool} is not installed", file=sys.stderr)
            return 1
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    serverCPU, loadCPU = (0, 1) if pin else (None, None)
    work = tempfile.mkdtemp(prefix="netd-bench-h2-")
    os.chmod(work, 0o755)
    root = os.path.join(work, "root")
    os.makedirs(root)
    for name, size in (("1k.bin", 1024), ("1m.bin", 1024 * 1024)):
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(size))
    key, cert = certificate(work)
    servers = [
        s
        for s in (
            netdServer(work, root, key, cert, serverCPU),
            nginxServer(work, root, key, cert, serverCPU),
        )
        if s is not None
    ]
    tests = {
        "h2 1 KiB": lambda port: runH2load(
            f"https://127.0.0.1:{port}/1k.bin",
            args.requests,
            50,
            10,
            loadCPU,
            args.timeout,
        ),
        "h2 1 MiB": lambda port: runH2load(
            f"https://127.0.0.1:{port}/1m.bin",
            args.big_requests,
            10,
            1,
            loadCPU,
            args.timeout,
        ),
        "http/1.1 TLS 1 KiB": lambda port: http.runWrk(
            f"https://127.0.0.1:{port}/1k.bin", args.seconds, 50, loadCPU
        ),
    }
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for server in servers:
            server.start("/1k.bin")
        for server in servers:
            # Warm up.
            runH2load(
                f"https://127.0.0.1:{server.port}/1k.bin",
                2000,
                10,
                10,
                loadCPU,
                args.timeout,
            )
        for _ in range(args.repeat):
            for test, run in tests.items():
                for server in servers:
                    results.setdefault((server.name, test), []).append(run(server.port))
    finally:
        for server in servers:
            server.stop()
    print(
        f"h2load over TLS: 1 KiB -n {args.requests} -c 50 -m 10, 1 MiB -n "
        f"{args.big_requests} -c 10 -m 1; wrk -t1 -c50 -d{args.seconds}s "
        f"(HTTP/1.1 over TLS); median of {args.repeat}\n"
    )
    print("| test | server | req/s | MiB/s | mean or p99 ms | netd / nginx |")
    print("|---|---|---|---|---|---|")
    for test in tests:
        base = results.get(("nginx", test))
        for server in servers:
            runs = results[(server.name, test)]
            rps = http.median([r["rps"] for r in runs])
            ratio = ""
            if server.name == "netd" and base:
                ratio = f"{rps / http.median([r['rps'] for r in base]):.2f}x"
            latency = http.median([r.get("mean", r.get("p99", 0.0)) for r in runs])
            failed = sum(r.get("failed", 0.0) + r.get("errors", 0.0) for r in runs)
            note = f" ({int(failed)} failed)" if failed else ""
            print(
                f"| {test} | {server.name}{note} | {rps:,.0f} "
                f"({min(r['rps'] for r in runs):,.0f}-{max(r['rps'] for r in runs):,.0f})"
                f" | {http.median([r['mibps'] for r in runs]):,.1f} | {latency:.2f} "
                f"| {ratio} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
