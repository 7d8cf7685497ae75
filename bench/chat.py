"""
Benchmark netd's chat service against C{ncat --chat} and a minimal Twisted
broadcast chat, on this machine, in the same run.

C{python bench/chat.py [--clients 200] [--senders 10] [--rates 500,1000,2000]
[--seconds 5] [--repeat 3]}

compiles C{bench/chatload.c} (an epoll load generator split over several
processes), then for every repeat, every rate and every server (in an order
that rotates from one repeat to the next) starts the server fresh on a free
loopback port, connects C{--clients} clients, has C{--senders} of them send
C{--rates} lines a second in total (64-byte lines carrying their send time)
for C{--seconds}, and counts deliveries (a line reaching one of the other
clients) and their latency. It prints a Markdown table of medians (with
min-max) per rate and server, and netd's ratio to the minimal Twisted chat.

The servers:

  - C{netd}: C{twistd -n netd} with one chat service (flood control lifted,
    since all the load comes from one address and one room);
  - C{twisted}: C{bench/chat_baseline.py --nodelay}, a LineReceiver that
    writes each line to every other client, with TCP_NODELAY like netd;
  - C{twisted-nagle}: the same without TCP_NODELAY (Twisted's default);
  - C{ncat}: C{ncat --chat} (Debian's ncat), started fresh for each run
    because it quits when many clients disconnect at once.

Only processes this script started are ever signalled, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

NETD_CONFIG = """\
[netd]
stats_interval = 3600

[services.chat]
type = "chat"
listen = ["tcp:{port}:interface={host}"]
# All the load comes from one address and one room: lift flood control.
flood_lines_per_second = 1e9
flood_lines_burst = 1000000000
flood_bytes_per_second = 1e12
flood_bytes_burst = 1000000000000
history_lines = 0
# On a loaded machine a client of the load generator can fall behind for a
# moment; measure throughput rather than slow-consumer kicks.
max_pending_output = 67108864

[services.chat.limits]
max_sessions = 100000
max_sessions_per_peer = 100000
idle_timeout = 0
"""

SERVERS = ("netd", "twisted", "twisted-nagle", "ncat")


def progress(message: str) -> None:
    """
    Report progress on standard error (standard output is for results).
    """
    print(message, file=sys.stderr, flush=True)


def freePort() -> int:
    """
    @return: a TCP port free on L{HOST} now.
    """
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    """
    @return: whether a TCP connection to C{port} succeeds.
    """
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def compileLoadgen(directory: str) -> str:
    """
    Compile C{bench/chatload.c}.

    @return: the binary's path.
    """
    binary = os.path.join(directory, "chatload")
    subprocess.run(
        ["gcc", "-O2", "-o", binary, os.path.join(BENCH, "chatload.c")], check=True
    )
    return binary


def serverCommand(name: str, port: int, directory: str) -> list[str]:
    """
    @param name: one of L{SERVERS}.
    @param port: its port.
    @param directory: where its files go.
    @return: its argument vector.
    """
    python = sys.executable
    if name == "netd":
        config = os.path.join(directory, "netd.toml")
        with open(config, "w") as f:
            f.write(NETD_CONFIG.format(port=port, host=HOST))
        command = [
            python,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "netd",
            "--config",
            config,
        ]
        if os.geteuid() == 0:
            command.append("--allow-root")
        return command
    baseline = [python, os.path.join(BENCH, "chat_baseline.py"), str(port)]
    if name == "twisted":
        return baseline + ["--nodelay"]
    if name == "twisted-nagle":
        return baseline
    if name == "ncat":
        return ["ncat", "--chat", "-l", HOST, str(port), "--max-conns", "100000"]
    raise ValueError(name)


@contextmanager
def running(name: str, directory: str) -> Iterator[int]:
    """
    Start a server on a free port, wait until it accepts, stop it on the way
    out (SIGTERM, then SIGKILL).

    @return: its port.
    """
    port = freePort()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    log = open(os.path.join(directory, f"{name}.log"), "ab")
    process = subprocess.Popen(
        serverCommand(name, port, directory),
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not accepts(port):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start in {READY_TIMEOUT:.0f}s")
            time.sleep(0.05)
        # The readiness probe was a client too: let the server see it go.
        time.sleep(0.3)
        yield port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def measure(
    loadgen: str,
    name: str,
    port: int,
    options: argparse.Namespace,
    rate: float,
) -> dict[str, float]:
    """
    Run the load generator once against a server.

    @return: its JSON result, plus C{deliveries_per_s}.
    """
    command = [loadgen, "-p", str(options.procs)]
    if name == "netd":
        command.append("-n")
    command += [
        HOST,
        str(port),
        str(options.clients),
        str(options.senders),
        str(rate),
        str(options.seconds),
    ]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=options.seconds + 60
    )
    if run.returncode != 0:
        raise RuntimeError(f"chatload failed against {name}: {run.stderr.strip()}")
    output = run.stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["deliveries_per_s"] = result["deliveries"] / result["seconds"]
    return result


def spread(values: Sequence[float], digits: int) -> str:
    """
    @return: C{"median (min-max)"}.
    """
    fmt = f"{{:,.{digits}f}}"
    median = statistics.median(values)
    if len(values) == 1:
        return fmt.format(median)
    return f"{fmt.format(median)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def table(
    results: dict[tuple[float, str], list[dict[str, float]]],
    rates: Sequence[float],
    servers: Sequence[str],
    clients: int,
) -> str:
    """
    @return: the Markdown table of results.
    """
    lines = [
        "| offered msg/s | offered deliveries/s | server | deliveries/s | p50 ms | p99 ms | netd / twisted |",
        "|---|---|---|---|---|---|---|",
    ]
    for rate in rates:
        base = results.get((rate, "twisted"))
        baseMedian = (
            statistics.median(r["deliveries_per_s"] for r in base) if base else None
        )
        for name in servers:
            runs = results.get((rate, name), [])
            if not runs:
                continue
            deliveries = [r["deliveries_per_s"] for r in runs]
            ratio = ""
            if name == "netd" and baseMedian:
                ratio = f"{statistics.median(deliveries) / baseMedian:.2f}"
            lines.append(
                f"| {rate:,.0f} | {rate * (clients - 1):,.0f} | {name} | "
                f"{spread(deliveries, 0)} | {spread([r['p50_ms'] for r in runs], 1)} | "
                f"{spread([r['p99_ms'] for r in runs], 1)} | {ratio} |"
            )
    return "\n".join(lines)


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument(
        "--rates",
        default="500,1000,2000",
        help="total lines per second sent, comma-separated (default 500,1000,2000)",
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--procs", type=int, default=2, help="load generator processes (default 2)"
    )
    parser.add_argument(
        "--only",
        default="netd,twisted,ncat",
        help=f"servers, comma-separated, from {', '.join(SERVERS)} (default netd,twisted,ncat)",
    )
    options = parser.parse_args(argv)
    options.rateList = [float(r) for r in options.rates.split(",") if r]
    options.servers = [s for s in options.only.split(",") if s]
    for name in options.servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    if "ncat" in options.servers and shutil.which("ncat") is None:
        progress("ncat not found (apt-get install ncat): skipping it")
        options.servers.remove("ncat")
    return options


def main(argv: Sequence[str]) -> None:
    options = parseArguments(argv)
    results: dict[tuple[float, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="netd-bench-chat-") as directory:
        loadgen = compileLoadgen(directory)
        for repeat in range(options.repeat):
            shift = repeat % len(options.servers)
            order = options.servers[shift:] + options.servers[:shift]
            for rate in options.rateList:
                for name in order:
                    with running(name, directory) as port:
                        progress(f"repeat {repeat + 1}, {rate:g} msg/s, {name}")
                        result = measure(loadgen, name, port, options, rate)
                    progress(f"  {json.dumps(result)}")
                    results.setdefault((rate, name), []).append(result)
    print(
        f"chat fan-out: {options.clients} clients, {options.senders} senders, "
        f"64-byte lines, {options.seconds}s per run, median of {options.repeat} "
        f"(min-max); {os.cpu_count()} CPUs, load generator in {options.procs} processes"
    )
    print()
    print(table(results, options.rateList, options.servers, options.clients))


if __name__ == "__main__":
    main(sys.argv[1:])
