# -*- test-case-name: tests.test_exec_bench -*-
"""
Time from connecting to an C{exec} service to the program's first byte:
netd beside Debian's C{xinetd} running the same program, in the same run.

Both listen on 127.0.0.1 and run C{/bin/echo x} per connection (as
C{nobody} when this script runs as root), so what is measured is the
daemon's own work: accepting, forking (netd: its spawner; xinetd: itself),
setting up the child and C{execve}. The client connects, then times from
C{connect} returning (the kernel has completed the handshake; the daemon
accepts from its backlog) to the first byte arriving, and reads to the end.
Connections are sequential and alternate between the daemons
(C{netd, xinetd, xinetd, netd, ...}) so that neither always gets the warmer
machine. xinetd runs with its own configuration in a temporary directory,
C{-dontfork}, with C{cps}, C{instances} and C{per_source} unlimited; both
daemons are stopped by PID on the way out.

Usage::

    python bench/exec_bench.py [--connections 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

HOST = "127.0.0.1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = ["/bin/echo", "x"]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
XINETD = "/usr/sbin/xinetd"


def progress(message: str) -> None:
    """
    @param message: A line for standard error.
    """
    print(message, file=sys.stderr, flush=True)


def freePort() -> int:
    """
    @return: A TCP port free on L{HOST} just now.
    """
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def firstByte(port: int) -> float:
    """
    One connection: connect, time to the first byte, read to the end.

    @param port: The daemon's port.
    @return: Seconds from C{connect} returning to the first byte.
    @raise RuntimeError: If the program's output is not C{"x\\n"}.
    """
    with socket.create_connection((HOST, port), timeout=10) as s:
        started = time.perf_counter()
        data = s.recv(16)
        elapsed = time.perf_counter() - started
        while chunk := s.recv(16):
            data += chunk
    if data != b"x\n":
        raise RuntimeError(f"port {port} sent {data!r}, not the program's b'x\\n'")
    return elapsed


def waitServes(port: int, process: subprocess.Popen[bytes]) -> None:
    """
    Wait until a daemon runs the program on C{port}.

    @param port: Its port.
    @param process: The daemon.
    @raise RuntimeError: If it exits or L{START_TIMEOUT} passes first.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited ({process.returncode})")
        try:
            firstByte(port)
            return
        except (OSError, RuntimeError):
            time.sleep(0.1)
    raise RuntimeError(f"nothing serves {HOST}:{port} after {START_TIMEOUT}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """
    Stop a process this script started, by its PID: SIGTERM, then SIGKILL.

    @param process: It.
    """
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    @param values: Measurements.
    @param fraction: e.g. C{0.99}.
    @return: The nearest-rank percentile.
    """
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered))) - 1))
    return ordered[index]


def userLines() -> tuple[str, str]:
    """
    @return: The C{user} lines of netd's and xinetd's configurations: nobody
        as root, else none (the daemon's own user).
    """
    if os.geteuid() == 0:
        return 'user = "nobody"\n', "    user = nobody\n"
    return "", ""


def startNetd(directory: str, port: int) -> subprocess.Popen[bytes]:
    """
    @param directory: Where its configuration and log go.
    @param port: Its port.
    @return: The running C{twistd -n netd}.
    """
    netdUser, _ = userLines()
    config = os.path.join(directory, "netd.toml")
    with open(config, "w") as f:
        f.write(
            "[netd]\nallow_root = true\n"
            "[services.bench]\n"
            'type = "exec"\n'
            f'listen = ["tcp:{port}:interface={HOST}"]\n'
            f"command = {PROGRAM!r}\n".replace("'", '"') + netdUser
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    log = open(os.path.join(directory, "netd.log"), "wb")
    return subprocess.Popen(
        [sys.executable, twistd, "-n", "--pidfile=", "netd", "--config", config],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def startXinetd(directory: str, port: int) -> subprocess.Popen[bytes]:
    """
    @param directory: Where its configuration and log go.
    @param port: Its port.
    @return: The running C{xinetd -dontfork}.
    """
    _, xinetdUser = userLines()
    config = os.path.join(directory, "xinetd.conf")
    with open(config, "w") as f:
        f.write(
            "defaults\n{\n    instances = UNLIMITED\n    per_source = UNLIMITED\n"
            "    cps = 1000000 1\n}\n"
            "service netd-bench\n{\n"
            "    type = UNLISTED\n"
            f"    port = {port}\n"
            f"    bind = {HOST}\n"
            "    socket_type = stream\n"
            "    protocol = tcp\n"
            "    wait = no\n" + xinetdUser + f"    server = {PROGRAM[0]}\n"
            f"    server_args = {' '.join(PROGRAM[1:])}\n"
            f"    log_type = FILE {os.path.join(directory, 'xinetd.log')}\n"
            "    log_on_success =\n"
            "    log_on_failure =\n"
            "}\n"
        )
    return subprocess.Popen(
        [XINETD, "-dontfork", "-f", config, "-pidfile", os.path.join(directory, "pid")],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(directory, "xinetd.stderr"), "wb"),
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """
    @param header: Column names.
    @param rows: Cells.
    @return: A Markdown table.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run(connections: int) -> str:
    """
    Start netd and xinetd, measure, stop them.

    @param connections: Connections per daemon.
    @return: The table.
    @raise RuntimeError: If xinetd is missing or a daemon does not serve.
    """
    if not os.access(XINETD, os.X_OK):
        raise RuntimeError("xinetd is not installed (package xinetd)")
    processes: list[subprocess.Popen[bytes]] = []
    times: dict[str, list[float]] = {"netd": [], "xinetd": []}
    with tempfile.TemporaryDirectory(prefix="netd-exec-bench-") as directory:
        os.chmod(directory, 0o755)
        try:
            netdPort = freePort()
            xinetdPort = freePort()
            while xinetdPort == netdPort:
                xinetdPort = freePort()
            netd = startNetd(directory, netdPort)
            processes.append(netd)
            xinetd = startXinetd(directory, xinetdPort)
            processes.append(xinetd)
            ports = {"netd": netdPort, "xinetd": xinetdPort}
            waitServes(netdPort, netd)
            waitServes(xinetdPort, xinetd)
            for i in range(connections):
                order = ["netd", "xinetd"] if i % 2 == 0 else ["xinetd", "netd"]
                for name in order:
                    times[name].append(firstByte(ports[name]))
                if (i + 1) % max(1, connections // 5) == 0:
                    progress(f"{i + 1}/{connections} connections each")
        finally:
            for process in reversed(processes):
                stop(process)
    rows = []
    figures = {}
    for name in ("netd", "xinetd"):
        values = times[name]
        figures[name] = (statistics.median(values), percentile(values, 0.99))
        rows.append(
            [
                name,
                str(len(values)),
                f"{figures[name][0] * 1000:.2f}",
                f"{figures[name][1] * 1000:.2f}",
                f"{min(values) * 1000:.2f}",
                f"{max(values) * 1000:.2f}",
            ]
        )
    rows.append(
        [
            "netd / xinetd",
            "",
            f"{figures['netd'][0] / figures['xinetd'][0]:.2f}",
            f"{figures['netd'][1] / figures['xinetd'][1]:.2f}",
            "",
            "",
        ]
    )
    return table(
        ["daemon", "connections", "median ms", "p99 ms", "min ms", "max ms"], rows
    )


def main(argv: Sequence[str]) -> None:
    """
    @param argv: The command-line arguments.
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--connections", type=int, default=1000, help="connections per daemon"
    )
    options = parser.parse_args(argv)
    print(
        f"exec: connect to first byte of {' '.join(PROGRAM)}, {options.connections} "
        "sequential connections per daemon, alternating"
    )
    print(run(options.connections))


if __name__ == "__main__":
    main(sys.argv[1:])
