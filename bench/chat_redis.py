"""
Benchmark netd's chat service with a Redis hub, against the in-process hub,
on this machine, in the same run.

C{python bench/chat_redis.py [--clients 100] [--seconds 5] [--repeat 3]
[--fanout-rates 1000,5000] [--rate 1000] [--fanout-only]}

starts its own C{redis-server} (Debian's; loopback, a free port, no
persistence) and, for every repeat:

  1. fan-out: C{--clients} clients in one room of one netd, one sender at
     each of C{--fanout-rates} lines a second: with the in-process hub and
     with the Redis hub (order rotating between repeats); deliveries/s, p50
     and p99 latency, and the ratio Redis / local;
  2. two processes: the same clients split over two netd processes on that
     Redis (senders, 10 of them, on the first), C{--rate} lines a second in
     total: deliveries/s, and p50/p99 latency from publish on the first
     process to receipt on the second;
  3. Redis restart: one sender on the first process (200 numbered lines a
     second), one receiver on the second; Redis is killed after 2 s and
     started again (empty) 2 s later; counts lines never received and the
     seconds from Redis accepting again to the first line sent after that
     reaching the receiver.

The load comes from C{bench/chatload.c} (as in C{bench/chat.py}; C{-P}
splits its processes over two servers). Only processes this script started
are signalled, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

from chat import HOST, NETD_CONFIG, REPO, compileLoadgen, freePort, spread  # noqa: E402

from tests.redissupport import RedisServer  # noqa: E402

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def progress(message: str) -> None:
    """
    Report progress on standard error (standard output is for results).
    """
    print(message, file=sys.stderr, flush=True)


def netdConfig(port: int, hub: str) -> str:
    """
    @return: The configuration of a netd with one chat service.
    """
    text = NETD_CONFIG.format(port=port, host=HOST)
    if hub:
        text = text.replace(
            "history_lines = 0\n",
            f'history_lines = 0\nhub = "{hub}"\nhub_retry_max = 0.5\nhub_timeout = 2\n',
        )
    return text


@contextmanager
def netd(directory: str, name: str, hub: str) -> Iterator[tuple[int, str]]:
    """
    Start a netd chat service on a free port; stop it on the way out.

    @return: Its port and its log file's path.
    """
    port = freePort()
    config = os.path.join(directory, f"{name}.toml")
    with open(config, "w") as f:
        f.write(netdConfig(port, hub))
    logPath = os.path.join(directory, f"{name}.log")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    command = [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "netd",
        "--config",
        config,
    ] + (["--allow-root"] if os.geteuid() == 0 else [])
    with open(logPath, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with open(logPath, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            if "listening on" in text and (not hub or "connected (commands)" in text):
                break
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {text}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {text}")
            time.sleep(0.05)
        yield port, logPath
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def load(
    loadgen: str,
    port: int,
    clients: int,
    senders: int,
    rate: float,
    seconds: int,
    port2: int = 0,
) -> dict[str, float]:
    """
    Run C{chatload} once.

    @return: Its JSON result, plus C{deliveries_per_s}.
    """
    command = [loadgen, "-p", "2", "-n"]
    if port2:
        command += ["-P", str(port2)]
    command += [HOST, str(port), str(clients), str(senders), str(rate), str(seconds)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if run.returncode != 0:
        raise RuntimeError(f"chatload failed: {run.stderr.strip()}")
    result: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    result["deliveries_per_s"] = result["deliveries"] / result["seconds"]
    return result


class Reader(threading.Thread):
    """
    A chat client that records when each numbered line arrives.
    """

    def __init__(self, port: int, nick: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection((HOST, port), 10)
        self.sock.sendall(nick.encode() + b"\n")
        self.arrivals: dict[int, float] = {}
        self.stopped = False

    def run(self) -> None:
        buffer = b""
        self.sock.settimeout(0.2)
        pattern = re.compile(rb"<[^>]+> n(\d+)")
        while not self.stopped:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                match = pattern.search(line)
                if match:
                    self.arrivals.setdefault(int(match.group(1)), time.monotonic())


def restart(
    directory: str, redis: RedisServer, rate: float = 200.0
) -> dict[str, float]:
    """
    Kill Redis mid-conversation and start it again.

    @return: Lines sent, lost, and seconds to resume after Redis is back.
    """
    with (
        netd(directory, "restart-a", redis.url) as (portA, _),
        netd(directory, "restart-b", redis.url) as (portB, _),
    ):
        reader = Reader(portB, "reader")
        reader.start()
        sender = socket.create_connection((HOST, portA), 10)
        sender.sendall(b"sender\n")
        time.sleep(1.0)
        sent: dict[int, float] = {}
        start = time.monotonic()
        killed = back = None
        n = 0
        while time.monotonic() - start < 8.0:
            elapsed = time.monotonic() - start
            if killed is None and elapsed >= 2.0:
                redis.kill()
                killed = time.monotonic()
            if back is None and elapsed >= 4.0:
                redis.start()
                back = time.monotonic()
            sent[n] = time.monotonic()
            sender.sendall(b"n%d\n" % n)
            n += 1
            time.sleep(1.0 / rate)
        time.sleep(3.0)
        reader.stopped = True
        reader.join(2)
        sender.close()
        reader.sock.close()
    assert back is not None
    lost = [k for k in sent if k not in reader.arrivals]
    after = [k for k in sent if sent[k] >= back and k in reader.arrivals]
    resumed = min(reader.arrivals[k] for k in after) - back if after else float("inf")
    return {"sent": len(sent), "lost": len(lost), "resume_s": resumed}


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fanout-rates", default="1000,5000")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument(
        "--fanout-only",
        action="store_true",
        help="skip the two-process and restart runs",
    )
    options = parser.parse_args(argv)
    rates = [float(r) for r in options.fanout_rates.split(",") if r]
    fanout: dict[tuple[float, str], list[dict[str, float]]] = {}
    split: list[dict[str, float]] = []
    restarts: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="netd-bench-redis-") as directory:
        loadgen = compileLoadgen(directory)
        redis = RedisServer()
        redis.start()
        try:
            for repeat in range(options.repeat):
                hubs = ["local", "redis"] if repeat % 2 == 0 else ["redis", "local"]
                for rate in rates:
                    for hub in hubs:
                        url = redis.url if hub == "redis" else ""
                        with netd(directory, f"fanout-{hub}", url) as (port, _):
                            progress(
                                f"repeat {repeat + 1}: fan-out {rate:g} msg/s, {hub}"
                            )
                            result = load(
                                loadgen, port, options.clients, 1, rate, options.seconds
                            )
                        progress(f"  {json.dumps(result)}")
                        fanout.setdefault((rate, hub), []).append(result)
                        redis.command("FLUSHALL")
                if options.fanout_only:
                    continue
                with (
                    netd(directory, "split-a", redis.url) as (portA, _),
                    netd(directory, "split-b", redis.url) as (portB, _),
                ):
                    progress(
                        f"repeat {repeat + 1}: two processes, {options.rate:g} msg/s"
                    )
                    result = load(
                        loadgen,
                        portA,
                        options.clients,
                        10,
                        options.rate,
                        options.seconds,
                        port2=portB,
                    )
                progress(f"  {json.dumps(result)}")
                split.append(result)
                redis.command("FLUSHALL")
                progress(f"repeat {repeat + 1}: Redis restart")
                result = restart(directory, redis)
                progress(f"  {json.dumps(result)}")
                restarts.append(result)
        finally:
            redis.stop()
    print(
        f"chat with a Redis hub: {options.clients} clients, 64-byte lines, "
        f"{options.seconds}s per run, median of {options.repeat} (min-max); "
        f"{os.cpu_count()} CPUs, load generator in 2 processes, redis-server on the "
        "same machine"
    )
    print()
    print("Fan-out, one room, one sender, one netd process:")
    print()
    print("| msg/s | hub | deliveries/s | p50 ms | p99 ms | redis / local |")
    print("|---|---|---|---|---|---|")
    for rate in rates:
        local = statistics.median(
            r["deliveries_per_s"] for r in fanout[(rate, "local")]
        )
        for hub in ("local", "redis"):
            runs = fanout[(rate, hub)]
            deliveries = [r["deliveries_per_s"] for r in runs]
            ratio = (
                f"{statistics.median(deliveries) / local:.2f}" if hub == "redis" else ""
            )
            print(
                f"| {rate:,.0f} | {hub} | {spread(deliveries, 0)} | "
                f"{spread([r['p50_ms'] for r in runs], 1)} | "
                f"{spread([r['p99_ms'] for r in runs], 1)} | {ratio} |"
            )
    if options.fanout_only:
        return
    print()
    print(
        f"Two netd processes on one Redis, {options.rate:g} msg/s from 10 senders on "
        "the first, clients split evenly:"
    )
    print()
    print(
        "| deliveries/s (all) | offered | deliveries/s on the other process | "
        "p50 ms there | p99 ms there | p99 ms (all) |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {spread([r['deliveries_per_s'] for r in split], 0)} | "
        f"{options.rate * (options.clients - 1):,.0f} | "
        f"{spread([r['remote_deliveries'] / r['seconds'] for r in split], 0)} | "
        f"{spread([r['remote_p50_ms'] for r in split], 1)} | "
        f"{spread([r['remote_p99_ms'] for r in split], 1)} | "
        f"{spread([r['p99_ms'] for r in split], 1)} |"
    )
    print()
    print(
        "Redis killed (SIGKILL) for 2 s mid-conversation, 200 msg/s across two "
        "processes:"
    )
    print()
    print("| lines sent | lines lost | seconds from Redis back to delivery resumed |")
    print("|---|---|---|")
    print(
        f"| {spread([r['sent'] for r in restarts], 0)} | "
        f"{spread([r['lost'] for r in restarts], 0)} | "
        f"{spread([r['resume_s'] for r in restarts], 2)} |"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
