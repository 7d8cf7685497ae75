# -*- test-case-name: tests.test_forward_bench -*-
"""
Throughput and CPU per MiB of netd's C{forward} service beside C{socat}, in
the same run, in front of the same target.

Three kinds of process, all on 127.0.0.1 and all stopped by PID on the way
out:

  - the target: a small asyncio server (L{TARGET}, run with this Python) that
    discards everything after an C{U} and, after C{D} and an 8-byte count,
    sends that many bytes and closes;
  - the forwarders: C{twistd -n --pidfile= netd} with one C{forward} service
    to the target, and C{socat TCP-LISTEN:P,bind=127.0.0.1,fork,reuseaddr
    TCP:127.0.0.1:TARGET};
  - the client: this script, with blocking sockets.

For each repetition, forwarder (alternating which goes first) and direction
(C{upload}: client to target; C{download}: target to client), one
connection moves C{--mib} MiB, or as much as fits in C{--seconds}. The
forwarder's CPU is read from C{/proc/PID/stat} before and after: utime +
stime + cutime + cstime, because socat serves each connection in a forked
child whose time reaches the parent's cutime/cstime once it is reaped (the
script waits for that); netd has no children, so its two last fields stay 0.

Usage::

    python bench/forward_bench.py [--mib 1024] [--seconds 10] [--repeat 3] [--socat-buffer N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

HOST = "127.0.0.1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 256 * 1024
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

TARGET = r"""
import asyncio, struct, sys

async def serve(reader, writer):
    try:
        mode = await reader.readexactly(1)
    except asyncio.IncompleteReadError:  # a readiness check
        writer.close()
        return
    if mode == b"U":
        while await reader.read(1 << 18):
            pass
    else:
        (count,) = struct.unpack("!Q", await reader.readexactly(8))
        chunk = b"x" * (1 << 18)
        while count > 0:
            writer.write(chunk[:count])
            count -= min(count, len(chunk))
            await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


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
        return s.getsockname()[1]


def cpuSeconds(pid: int) -> float:
    """
    @param pid: A process.
    @return: Its utime + stime + cutime + cstime, in seconds.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def waitAccepts(port: int, process: subprocess.Popen[bytes]) -> None:
    """
    Wait until C{port} accepts a connection.

    @param port: The port on L{HOST}.
    @param process: The process that should be listening on it.
    @raise RuntimeError: If it exits or L{START_TIMEOUT} passes first.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited ({process.returncode})")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing accepts on {HOST}:{port} after {START_TIMEOUT}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """
    Stop a process this script started: SIGTERM, then SIGKILL.

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


def transfer(port: int, direction: str, size: int, seconds: float) -> tuple[int, float]:
    """
    Move bytes through a forwarder on one connection.

    @param port: The forwarder's port.
    @param direction: C{"upload"} or C{"download"}.
    @param size: The most bytes to move.
    @param seconds: The most seconds to spend moving them.
    @return: The bytes moved and the seconds it took, until the connection
        closed (so an upload counts only bytes that reached the target's
        side of the forwarder and were acknowledged by its close).
    """
    moved = 0
    with socket.create_connection((HOST, port), timeout=seconds + 30) as s:
        started = time.monotonic()
        deadline = started + seconds
        if direction == "upload":
            s.sendall(b"U")
            chunk = b"u" * CHUNK
            while moved < size and time.monotonic() < deadline:
                s.sendall(chunk[: size - moved])
                moved += min(CHUNK, size - moved)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        else:
            s.sendall(b"D" + struct.pack("!Q", size))
            while moved < size and time.monotonic() < deadline:
                data = s.recv(CHUNK)
                if not data:
                    break
                moved += len(data)
        elapsed = time.monotonic() - started
    return moved, elapsed


def measure(
    pid: int, port: int, direction: str, size: int, seconds: float
) -> tuple[float, float]:
    """
    One transfer through one forwarder, with its CPU.

    @return: MiB/s and forwarder CPU milliseconds per MiB.
    """
    before = cpuSeconds(pid)
    moved, elapsed = transfer(port, direction, size, seconds)
    # socat's child must exit and be reaped for its time to count.
    time.sleep(0.3)
    used = cpuSeconds(pid) - before
    mib = moved / (1024 * 1024)
    return mib / elapsed, 1000 * used / mib


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """
    @return: A Markdown table.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run(mib: int, seconds: float, repeat: int, socatBuffer: int | None = None) -> str:
    """
    Start the target, netd and socat, measure, stop them all.

    @param mib: MiB per transfer at most.
    @param seconds: Seconds per transfer at most.
    @param repeat: Repetitions of each measurement.
    @param socatBuffer: socat's C{-b} (bytes per read), or L{None} for its
        default (8192).
    @return: The table.
    """
    if shutil.which("socat") is None:
        raise RuntimeError("socat is not installed (package socat)")
    size = mib * 1024 * 1024
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="netd-forward-bench-") as directory:
        try:
            target = subprocess.Popen(
                [sys.executable, "-c", TARGET], stdout=subprocess.PIPE
            )
            processes.append(target)
            assert target.stdout is not None
            targetPort = int(target.stdout.readline())
            netdPort, socatPort = freePort(), freePort()
            while socatPort == netdPort:
                socatPort = freePort()
            config = os.path.join(directory, "netd.toml")
            with open(config, "w") as f:
                f.write(
                    # Run as root (a container), netd needs to be told it may.
                    "[netd]\nallow_root = true\n"
                    "[services.fwd]\n"
                    'type = "forward"\n'
                    f'listen = ["tcp:{netdPort}:interface={HOST}"]\n'
                    f'to = "tcp:{HOST}:{targetPort}"\n'
                )
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
            )
            twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
            log = open(os.path.join(directory, "netd.log"), "wb")
            netd = subprocess.Popen(
                [
                    sys.executable,
                    twistd,
                    "-n",
                    "--pidfile=",
                    "netd",
                    "--config",
                    config,
                ],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            processes.append(netd)
            socat = subprocess.Popen(
                ["socat"]
                + (["-b", str(socatBuffer)] if socatBuffer else [])
                + [
                    f"TCP-LISTEN:{socatPort},bind={HOST},fork,reuseaddr",
                    f"TCP:{HOST}:{targetPort}",
                ],
                stdin=subprocess.DEVNULL,
            )
            processes.append(socat)
            forwarders = {"netd": (netd, netdPort), "socat": (socat, socatPort)}
            for process, port in forwarders.values():
                waitAccepts(port, process)
            time.sleep(0.5)
            results: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for i in range(repeat):
                order = ["netd", "socat"] if i % 2 == 0 else ["socat", "netd"]
                for direction in ("upload", "download"):
                    for name in order:
                        process, port = forwarders[name]
                        result = measure(process.pid, port, direction, size, seconds)
                        progress(
                            f"{name} {direction} #{i + 1}: {result[0]:.0f} MiB/s, "
                            f"{result[1]:.2f} ms CPU/MiB"
                        )
                        results.setdefault((name, direction), []).append(result)
        finally:
            for process in reversed(processes):
                stop(process)
    rows = []
    for direction in ("upload", "download"):
        n = [
            statistics.median(r[0] for r in results[("netd", direction)]),
            statistics.median(r[1] for r in results[("netd", direction)]),
        ]
        s = [
            statistics.median(r[0] for r in results[("socat", direction)]),
            statistics.median(r[1] for r in results[("socat", direction)]),
        ]
        rows.append(
            [
                direction,
                f"{n[0]:.0f}",
                f"{s[0]:.0f}",
                f"{n[0] / s[0]:.2f}",
                f"{n[1]:.2f}",
                f"{s[1]:.2f}",
                f"{n[1] / s[1]:.2f}" if s[1] else "n/a",
            ]
        )
    return table(
        [
            "direction",
            "netd MiB/s",
            "socat MiB/s",
            "netd/socat",
            "netd ms CPU/MiB",
            "socat ms CPU/MiB",
            "netd/socat",
        ],
        rows,
    )


def main(argv: Sequence[str]) -> None:
    """
    @param argv: The command-line arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mib", type=int, default=1024, help="MiB per transfer at most"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds per transfer at most"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median)")
    parser.add_argument(
        "--socat-buffer",
        type=int,
        default=None,
        help="socat's -b (bytes per read; its default is 8192)",
    )
    options = parser.parse_args(argv)
    print(
        f"forward vs socat: one connection, up to {options.mib} MiB or "
        f"{options.seconds:g} s per transfer, median of {options.repeat}"
    )
    print(run(options.mib, options.seconds, options.repeat, options.socat_buffer))


if __name__ == "__main__":
    main(sys.argv[1:])
