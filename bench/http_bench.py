# -*- test-case-name: tests.test_http -*-
"""
The http benchmark: netd's http service against C{twistd web --path} and
nginx (one worker, C{access_log off}), serving the same 1 KiB and 1 MiB files
on loopback, measured with C{wrk} in the same run.

    python bench/http_bench.py [--seconds 10] [--repeat 3] [--connections 50]

Each server is started on its own free port with its own temporary
configuration; each (server, file) pair is measured C{--repeat} times,
interleaved, and the table reports medians (with the min-max of req/s).
With two or more CPUs the servers run on CPU 0 and wrk on CPU 1
(C{taskset}), so that they do not fight for one core. Needs C{wrk} and
C{nginx} (Debian: C{apt-get install wrk nginx-light}); a missing server is
left out of the table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

# This file is named like the standard library's http package: keep its
# directory off the import path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(
    os.path.abspath(__file__)
):
    del sys.path[0]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = {"1 KiB": ("1k.bin", 1024), "1 MiB": ("1m.bin", 1024 * 1024)}

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process off;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def freePort() -> int:
    """
    @return: A TCP port free on 127.0.0.1 now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """
    @param command: A command.
    @param cpu: The CPU to run it on, or L{None}.
    @return: The command, under C{taskset} if pinning.
    """
    if cpu is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


class Server:
    """
    One server under test, as a subprocess.

    @ivar name: Its name in the table.
    @ivar port: Its port.
    """

    def __init__(
        self, name: str, command: list[str], port: int, cwd: str, env: dict[str, str]
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.cwd = cwd
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, probe: str) -> None:
        """
        Start it and wait until it serves C{probe}.

        @param probe: A path that must answer 200.
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
        deadline = time.monotonic() + 20
        request = f"GET {probe} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace")
                raise RuntimeError(f"{self.name} exited: {error}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                    s.sendall(request)
                    if s.recv(16)[8:13] == b" 200 ":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not serve {probe} on port {self.port}")

    def stop(self) -> None:
        """
        Stop it (by its PID) and reap it.
        """
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def netdServer(
    work: str, root: str, cpu: int | None, accessLog: bool = False, workers: int = 1
) -> Server:
    """
    @param work: A scratch directory.
    @param root: The document root.
    @param cpu: The CPU to pin to.
    @param accessLog: Whether to write a Combined Log Format file.
    @param workers: netd's C{workers} setting.
    @return: netd's http service, access log off unless asked.
    """
    port = freePort()
    name = "netd-log" if accessLog else "netd"
    if workers != 1:
        name += f"-{workers}w"
    config = os.path.join(work, f"{name}.toml")
    allowRoot = os.geteuid() == 0 and _netdHasAllowRoot()
    log = f'access_log_file = "{os.path.join(work, "access.log")}"\n'
    with open(config, "w") as f:
        f.write(
            "[netd]\n"
            + ("allow_root = true\n" if allowRoot else "")
            + (f"workers = {workers}\n" if workers != 1 else "")
            + '[services.www]\ntype = "http"\n'
            + f'listen = ["tcp:{port}:interface=127.0.0.1:backlog=1024"]\n'
            + f'root = "{root}"\n'
            + (log if accessLog else "")
            + "[services.www.limits]\n"
            + "max_sessions = 100000\nmax_sessions_per_peer = 100000\n"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    command = [twistd, "-n", "--pidfile=", "netd", "--config", config]
    return Server(name, pinned(command, cpu), port, work, env)


def _netdHasAllowRoot() -> bool:
    """
    @return: Whether this netd has the C{allow_root} key (it refuses to run
        as root without it).
    """
    sys.path.insert(0, REPO)
    try:
        from netd.config import GLOBAL_SETTINGS
    finally:
        sys.path.pop(0)
    return any(setting.key == "allow_root" for setting in GLOBAL_SETTINGS)


def twistdWebServer(work: str, root: str, cpu: int | None) -> Server:
    """
    @param work: A scratch directory.
    @param root: The document root.
    @param cpu: The CPU to pin to.
    @return: C{twistd web --path}, as a Twisted user runs it today (its
        request log goes to its standard output, here /dev/null).
    """
    port = freePort()
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    command = [
        twistd,
        "-n",
        "--pidfile=",
        "web",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--path",
        root,
    ]
    return Server("twistd web", pinned(command, cpu), port, work, dict(os.environ))


def nginxServer(work: str, root: str, cpu: int | None) -> Server | None:
    """
    @param work: A scratch directory.
    @param root: The document root.
    @param cpu: The CPU to pin to.
    @return: nginx with one worker and no access log, or L{None} if it is
        not installed.
    """
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if nginx is None:
        return None
    port = freePort()
    prefix = os.path.join(work, "nginx")
    os.makedirs(prefix, exist_ok=True)
    config = os.path.join(prefix, "nginx.conf")
    with open(config, "w") as f:
        f.write(NGINX_CONF.format(prefix=prefix, port=port, root=root))
    command = [nginx, "-p", prefix, "-c", config]
    return Server("nginx", pinned(command, cpu), port, work, dict(os.environ))


_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}
_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def runWrk(
    url: str, seconds: int, connections: int, cpu: int | None
) -> dict[str, float]:
    """
    Run C{wrk -t1 -cN -dS --latency} once.

    @param url: The URL.
    @param seconds: The duration.
    @param connections: Concurrent keep-alive connections.
    @param cpu: The CPU to pin wrk to.
    @return: C{rps}, C{mibps}, C{p99} (milliseconds), C{errors}.
    """
    command = pinned(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url], cpu
    )
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", output)
    mibps = float(transfer.group(1)) * _BYTES[transfer.group(2)] / 1024**2
    p99 = re.search(r"^\s+99%\s+([\d.]+)(\w+)", output, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socketErrors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "rps": rps,
        "mibps": mibps,
        "p99": float(p99.group(1)) * _TIME[p99.group(2)],
        "errors": float(errors.group(1)) if errors else 0.0,
        "socketErrors": (
            float(sum(int(n) for n in socketErrors.groups())) if socketErrors else 0.0
        ),
    }


def median(values: list[float]) -> float:
    """
    @param values: Measurements.
    @return: Their median.
    """
    return statistics.median(values)


def table(
    results: dict[tuple[str, str], list[dict[str, float]]],
    servers: list[str],
    repeat: int,
    seconds: int,
    connections: int,
) -> str:
    """
    Format the results as Markdown.

    @param results: Measurements by (server, file).
    @param servers: Server names, in table order.
    @param repeat: Repetitions.
    @param seconds: Seconds per run.
    @param connections: Connections.
    @return: The table, with a heading line.
    """
    lines = [
        f"wrk -t1 -c{connections} -d{seconds}s, keep-alive, median of {repeat} "
        "(req/s min-max in brackets)",
        "",
        "| file | server | req/s | MiB/s | p99 ms | netd / twistd web | netd / nginx |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in FILES:
        base = {}
        for name in servers:
            runs = results.get((name, label))
            if runs:
                base[name] = median([r["rps"] for r in runs])
        for name in servers:
            runs = results.get((name, label))
            if not runs:
                continue
            rps = [r["rps"] for r in runs]
            ratios = ["", ""]
            if name.startswith("netd"):
                for index, other in enumerate(("twistd web", "nginx")):
                    if other in base:
                        ratios[index] = f"{median(rps) / base[other]:.2f}x"
            errors = sum(r["errors"] + r["socketErrors"] for r in runs)
            note = f" ({int(errors)} errors)" if errors else ""
            lines.append(
                f"| {label} | {name}{note} | {median(rps):,.0f} "
                f"({min(rps):,.0f}-{max(rps):,.0f}) | "
                f"{median([r['mibps'] for r in runs]):,.1f} | "
                f"{median([r['p99'] for r in runs]):.2f} | {ratios[0]} | {ratios[1]} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """
    Run the benchmark and print the table.

    @param argv: Command-line arguments.
    @return: The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="also measure netd with its access log file on",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "bench/http_bench.py: wrk is not installed (apt-get install wrk)",
            file=sys.stderr,
        )
        return 1
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    serverCPU, wrkCPU = (0, 1) if pin else (None, None)
    work = tempfile.mkdtemp(prefix="netd-bench-http-")
    root = os.path.join(work, "root")
    os.makedirs(root)
    os.chmod(work, 0o755)
    for name, size in FILES.values():
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(size))
    builders: list[Callable[[], Server | None]] = [
        lambda: netdServer(work, root, serverCPU),
        lambda: twistdWebServer(work, root, serverCPU),
        lambda: nginxServer(work, root, serverCPU),
    ]
    if args.access_log:
        builders.insert(1, lambda: netdServer(work, root, serverCPU, accessLog=True))
    servers = [server for server in (build() for build in builders) if server]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for server in servers:
            server.start("/" + FILES["1 KiB"][0])
            for name, _size in FILES.values():
                # Warm up: page cache, caches, Python's first calls.
                runWrk(
                    f"http://127.0.0.1:{server.port}/{name}",
                    1,
                    args.connections,
                    wrkCPU,
                )
        for _ in range(args.repeat):
            for label, (name, _size) in FILES.items():
                for server in servers:
                    url = f"http://127.0.0.1:{server.port}/{name}"
                    result = runWrk(url, args.seconds, args.connections, wrkCPU)
                    results.setdefault((server.name, label), []).append(result)
                    print(
                        f"  {server.name:10} {label}: {result['rps']:,.0f} req/s, "
                        f"{result['mibps']:,.1f} MiB/s, p99 {result['p99']:.2f} ms",
                        file=sys.stderr,
                    )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        table(
            results,
            [server.name for server in servers],
            args.repeat,
            args.seconds,
            args.connections,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
