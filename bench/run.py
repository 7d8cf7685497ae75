"""
Benchmark netd against a bare Twisted baseline on this machine.

C{python bench/run.py [--seconds 5] [--repeat 3] [--only tcp-echo,...]}
compiles C{bench/loadgen.c}, starts C{twistd -n netd} with a temporary
config and C{bench/baseline.py} side by side on free loopback ports, runs
every workload against each of them in turn (alternating which goes first)
and prints a Markdown table of throughput, the netd/baseline ratio and the
server CPU time spent per message.

C{python bench/run.py --flow-control} instead pushes 1 GiB into each echo
service without ever reading, and reports how much its resident memory grew.

Only processes this script started are ever signalled, by PID, and they are
always stopped on the way out, whatever happened.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import NoReturn

from attrs import define, frozen

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
HOST = "127.0.0.1"
SIDES = ("netd", "baseline")

# How the daemon under test is started; the hidden --netd-command option
# replaces it (e.g. with bench/baseline.py, to try this script without netd).
NETD_COMMAND = "{python} {twistd} -n --pidfile= netd --config {config}"

NETD_CONFIG = """\
[netd]
# Benchmarks run as whoever starts them, root included: no user to drop to.
allow_root = true

[services.echo]
type = "echo"
listen = ["tcp:{echo}:interface={host}", "udp:{echo}:interface={host}"]
# All the load comes from one address: lift the per-source UDP reply budget.
udp_reply_rate = 10000000
udp_reply_burst = 10000000

[services.echo.limits]
max_sessions_per_peer = 100000

[services.discard]
type = "discard"
listen = ["tcp:{discard}:interface={host}", "udp:{discard}:interface={host}"]

[services.discard.limits]
max_sessions_per_peer = 100000
"""

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
SETTLE = 0.5

FLOW_CONTROL_BYTES = 1 << 30
FLOW_CONTROL_TIMEOUT = 60.0
FLOW_CONTROL_STALL = 5.0
FLOW_CONTROL_LIMIT_KIB = 32 * 1024


@frozen
class Workload:
    """
    One load pattern, run with C{loadgen}.

    @ivar name: what C{--only} selects and the tables show.
    @ivar mode: the C{loadgen} mode.
    @ivar service: C{"echo"} or C{"discard"}: the port to aim at.
    @ivar args: C{loadgen} arguments between the port and the duration.
    """

    name: str
    mode: str
    service: str
    args: tuple[int, ...]

    @property
    def bulk(self) -> bool:
        """
        Whether this workload moves a byte stream rather than messages.
        """
        return self.mode.startswith("tcp-bulk-")

    @property
    def metric(self) -> str:
        """
        The key of the C{loadgen} result that the tables compare.
        """
        return "mb_per_s" if self.bulk else "messages_per_s"

    @property
    def unit(self) -> str:
        """
        The unit of L{metric}.
        """
        if self.bulk:
            return "MB/s"
        return "dgram/s" if self.mode.startswith("udp-") else "msg/s"

    @property
    def costUnit(self) -> str:
        """
        What server CPU time is divided by: megabytes moved or messages
        echoed.
        """
        return "MB" if self.bulk else "msg"


WORKLOADS = [
    Workload("tcp-echo-100x64", "tcp-echo", "echo", (100, 64)),
    Workload("tcp-echo-50x64", "tcp-echo", "echo", (50, 64)),
    Workload("tcp-bulk-echo", "tcp-bulk-echo", "echo", (4,)),
    Workload("tcp-bulk-discard", "tcp-bulk-discard", "discard", (4,)),
    Workload("udp-echo-8x64", "udp-echo", "echo", (8, 64)),
    Workload("udp-echo-8x1400", "udp-echo", "echo", (8, 1400)),
]


@define(eq=False)
class Server:
    """
    A server process started by this script.

    @ivar name: C{"netd"} or C{"baseline"}.
    @ivar process: the running process.
    @ivar log: the file its standard output and error go to.
    @ivar ports: its port for each service name.
    """

    name: str
    process: subprocess.Popen[bytes]
    log: str
    ports: dict[str, int]

    def cpuSeconds(self) -> float:
        """
        @return: the user plus system CPU time the process has used so far.
        """
        with open(f"/proc/{self.process.pid}/stat") as f:
            # Fields after the parenthesised command name, which may hold spaces;
            # utime and stime are fields 14 and 15 of the whole line.
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def residentKiB(self) -> int:
        """
        @return: the process's resident set size (C{VmRSS}) in KiB.
        """
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.name}")

    def logTail(self, lines: int = 20) -> str:
        """
        @return: the last lines the process wrote.
        """
        with open(self.log, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def checkAlive(self) -> None:
        """
        @raise RuntimeError: if the process has exited.
        """
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with status {self.process.returncode}:\n"
                + self.logTail()
            )


def progress(message: str) -> None:
    """
    Report progress on standard error, keeping standard output for results.
    """
    print(message, file=sys.stderr, flush=True)


def freePorts(count: int) -> list[int]:
    """
    Find ports free for both TCP and UDP on L{HOST}.

    @param count: how many distinct ports to return.
    @return: the port numbers.  They are released before returning, so
        another program could still take one; that is unlikely enough here.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(tcp)
            tcp.bind((HOST, 0))
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(udp)
            try:
                udp.bind((HOST, port))
            except OSError:
                continue
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def compileLoadgen(directory: str) -> str:
    """
    Compile C{bench/loadgen.c}.

    @param directory: where to put the binary.
    @return: the path of the binary.
    """
    binary = os.path.join(directory, "loadgen")
    subprocess.run(
        ["gcc", "-O2", "-pthread", "-o", binary, os.path.join(BENCH, "loadgen.c")],
        check=True,
    )
    return binary


def accepts(port: int) -> bool:
    """
    @return: whether a TCP connection to C{port} on L{HOST} succeeds.
    """
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def echoesUDP(port: int) -> bool:
    """
    @return: whether a datagram sent to C{port} on L{HOST} comes back.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.connect((HOST, port))
        try:
            s.send(b"bench/run.py readiness probe")
            return s.recv(2048) == b"bench/run.py readiness probe"
        except OSError:
            return False


def waitUntilReady(server: Server) -> None:
    """
    Wait until C{server}'s TCP ports accept connections and its UDP echo
    answers.

    @raise RuntimeError: if it exits or is not ready in L{READY_TIMEOUT}.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        server.checkAlive()
        if all(accepts(port) for port in server.ports.values()) and echoesUDP(
            server.ports["echo"]
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{server.name} not ready after {READY_TIMEOUT:.0f}s:\n"
                + server.logTail()
            )
        time.sleep(0.1)


@contextmanager
def running(
    name: str, command: Sequence[str], ports: dict[str, int], directory: str
) -> Iterator[Server]:
    """
    Start a server, wait until it is ready, and stop it on the way out.

    It gets C{SIGTERM}, then C{SIGKILL} if it is still there after
    L{STOP_TIMEOUT} seconds.

    @param name: what to call it in reports.
    @param command: its argument vector.
    @param ports: its port for each service.
    @param directory: its working directory, which also receives its log.
    """
    log = os.path.join(directory, f"{name}.log")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    progress(f"starting {name}: {shlex.join(command)}")
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Server(name, process, log, ports)
    try:
        waitUntilReady(server)
        yield server
    finally:
        stopProcess(server)


def stopProcess(server: Server) -> None:
    """
    Stop C{server}'s process: C{SIGTERM}, then C{SIGKILL} if needed.

    Complain if it does not exit cleanly on C{SIGTERM}.  After a clean
    shutdown C{twistd} re-raises the signal that stopped it, so dying of
    C{SIGTERM} counts as clean, as does exiting with status 0.
    """
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        progress(f"{server.name} ignored SIGTERM for {STOP_TIMEOUT:.0f}s: killing it")
        process.kill()
        process.wait()
        return
    if status not in (0, -signal.SIGTERM):
        progress(
            f"{server.name} exited with status {status} on SIGTERM:\n"
            + server.logTail()
        )


def runLoadgen(
    loadgen: str, workload: Workload, port: int, seconds: int, threads: int
) -> dict[str, float]:
    """
    Run one workload once.

    @return: C{loadgen}'s JSON result.
    """
    command = [loadgen, "-t", str(threads), workload.mode, HOST, str(port)]
    command += [str(arg) for arg in workload.args] + [str(seconds)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(command)} failed ({done.returncode}): {done.stderr}"
        )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure(
    server: Server, loadgen: str, workload: Workload, seconds: int, threads: int
) -> dict[str, float]:
    """
    Run one workload once against C{server}, timing the server's CPU.

    @return: C{loadgen}'s result plus C{server_cpu_s} and C{server_cpu_per},
        the server's CPU microseconds per message or per megabyte.
    """
    server.checkAlive()
    before = server.cpuSeconds()
    result = runLoadgen(
        loadgen, workload, server.ports[workload.service], seconds, threads
    )
    cpu = server.cpuSeconds() - before
    units = result["bytes"] / 1e6 if workload.bulk else result["messages"]
    result["server_cpu_s"] = cpu
    result["server_cpu_per"] = cpu * 1e6 / units if units else float("nan")
    return result


def spread(values: Sequence[float], digits: int = 0) -> str:
    """
    @return: C{"median (min–max)"}, or just the value if all are equal.
    """
    text = f"{statistics.median(values):,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}–{max(values):,.{digits}f})"
    return text


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """
    @return: a Markdown table.
    """
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


Results = dict[str, dict[str, list[dict[str, float]]]]


def throughputTable(workloads: Sequence[Workload], results: Results) -> str:
    """
    @param results: C{loadgen} results by workload name, then server name.
    @return: a Markdown table of each server's figure, their ratio, and the
        server CPU time per message or megabyte, as medians with spreads.
    """
    rows = []
    for workload in workloads:
        runs = results[workload.name]
        figures = {side: [run[workload.metric] for run in runs[side]] for side in runs}
        ratios = [n / b for n, b in zip(figures["netd"], figures["baseline"]) if b]
        row = [workload.name]
        row += [f"{spread(figures[side])} {workload.unit}" for side in SIDES]
        row.append(spread(ratios, 2) if ratios else "n/a")
        row += [
            f"{spread([run['server_cpu_per'] for run in runs[side]], 1)} "
            f"µs/{workload.costUnit}"
            for side in SIDES
        ]
        rows.append(row)
    header = ["workload", "netd", "baseline", "netd / baseline"]
    header += ["netd server CPU", "baseline server CPU"]
    return table(header, rows)


def detailsTable(workloads: Sequence[Workload], results: Results) -> str:
    """
    @param results: C{loadgen} results by workload name, then server name.
    @return: a Markdown table of median latencies, UDP loss and the total
        count of errors (mismatched bytes and failed connections).
    """
    rows = []
    for workload in workloads:
        runs = results[workload.name]
        row = [workload.name]
        for side in SIDES:
            if workload.bulk:
                row.append("–")
            else:
                p50 = statistics.median(run["p50_us"] for run in runs[side])
                p99 = statistics.median(run["p99_us"] for run in runs[side])
                row.append(f"{p50:,.0f} / {p99:,.0f}")
        for side in SIDES:
            if workload.mode == "udp-echo":
                row.append(spread([run["loss_pct"] for run in runs[side]], 2))
            else:
                row.append("–")
        row += [str(sum(int(run["errors"]) for run in runs[side])) for side in SIDES]
        rows.append(row)
    header = ["workload", "netd p50 / p99 µs", "baseline p50 / p99 µs"]
    header += ["netd loss %", "baseline loss %", "netd errors", "baseline errors"]
    return table(header, rows)


def benchmark(
    servers: dict[str, Server],
    loadgen: str,
    workloads: Sequence[Workload],
    seconds: int,
    repeat: int,
    threads: int,
) -> Results:
    """
    Run every workload C{repeat} times against each server, alternating which
    server goes first so that neither always gets the warmer machine.

    @return: C{loadgen} results by workload name, then server name.
    """
    results: Results = {}
    for workload in workloads:
        results[workload.name] = {side: [] for side in SIDES}
        for repetition in range(repeat):
            order = list(SIDES)
            if repetition % 2:
                order.reverse()
            for side in order:
                result = measure(servers[side], loadgen, workload, seconds, threads)
                results[workload.name][side].append(result)
                progress(
                    f"{workload.name} #{repetition + 1} {side}: "
                    f"{result[workload.metric]:,.1f} {workload.unit}, "
                    f"server CPU {result['server_cpu_s']:.2f}s, "
                    f"errors {result['errors']:.0f}"
                )
                time.sleep(SETTLE)
    return results


def pushWithoutReading(s: socket.socket) -> tuple[int, str]:
    """
    Send up to 1 GiB on C{s} without ever reading from it.

    Sending stops when it is all sent, after L{FLOW_CONTROL_TIMEOUT} seconds,
    or when the kernel has accepted nothing for L{FLOW_CONTROL_STALL} seconds,
    which is what flow control in the server should lead to.

    @param s: a connected TCP socket; it is made non-blocking.
    @return: the bytes the kernel accepted, and why sending stopped.
    """
    chunk = memoryview(b"x" * (1 << 20))
    sent = 0
    s.setblocking(False)
    start = lastProgress = time.monotonic()
    while True:
        now = time.monotonic()
        if sent >= FLOW_CONTROL_BYTES:
            return sent, "all sent"
        if now - start > FLOW_CONTROL_TIMEOUT:
            return sent, f"time up ({FLOW_CONTROL_TIMEOUT:.0f}s)"
        if now - lastProgress > FLOW_CONTROL_STALL:
            return sent, f"stalled: nothing accepted for {FLOW_CONTROL_STALL:.0f}s"
        select.select([], [s], [], 0.5)
        try:
            sent += s.send(chunk[: FLOW_CONTROL_BYTES - sent])
        except BlockingIOError:
            continue
        lastProgress = time.monotonic()


def flowControl(servers: dict[str, Server]) -> str:
    """
    Push 1 GiB into each server's TCP echo without reading, and measure how
    much its resident memory grows while the connection is still open.

    @return: a Markdown table of the outcome.
    """
    rows = []
    for name, server in servers.items():
        server.checkAlive()
        before = server.residentKiB()
        started = time.monotonic()
        with socket.create_connection((HOST, server.ports["echo"])) as s:
            sent, outcome = pushWithoutReading(s)
            elapsed = time.monotonic() - started
            time.sleep(1)  # let the server read whatever it is going to read
            server.checkAlive()
            after = server.residentKiB()
        growth = after - before
        verdict = "pass" if growth < FLOW_CONTROL_LIMIT_KIB else "FAIL"
        progress(
            f"{name}: {sent:,} bytes accepted in {elapsed:.1f}s ({outcome}), "
            f"RSS {before:,} -> {after:,} KiB"
        )
        rows.append(
            [
                name,
                f"{sent / (1 << 20):,.1f} MiB",
                outcome,
                f"{before / 1024:,.1f} MiB",
                f"{after / 1024:,.1f} MiB",
                f"{growth / 1024:+,.1f} MiB",
                verdict if name == "netd" else f"{verdict} (reference only)",
            ]
        )
        time.sleep(SETTLE)
    return table(
        [
            "server",
            "accepted by the kernel",
            "sending stopped",
            "RSS before",
            "RSS after",
            "RSS growth",
            "growth < 32 MiB",
        ],
        rows,
    )


def selectWorkloads(only: str | None) -> list[Workload]:
    """
    @param only: comma-separated workload names or name prefixes
        (C{"tcp-echo"} selects C{"tcp-echo-100x64"} and C{"tcp-echo-50x64"}),
        or L{None} for all.
    @return: the selected workloads, in their usual order.
    @raise SystemExit: if a name matches nothing.
    """
    if only is None:
        return WORKLOADS
    selected = set()
    for name in filter(None, (part.strip() for part in only.split(","))):
        matches = {
            w for w in WORKLOADS if w.name == name or w.name.startswith(name + "-")
        }
        if not matches:
            known = ", ".join(w.name for w in WORKLOADS)
            sys.exit(f"bench/run.py: unknown workload {name!r}; known: {known}")
        selected |= matches
    return [w for w in WORKLOADS if w in selected]


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    @return: the command-line options.
    """
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description="Benchmark netd against bare Twisted."
    )
    parser.add_argument(
        "--seconds", type=int, default=5, help="length of each run (default 5)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per workload and server (default 3)"
    )
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated workloads or prefixes: "
        + ", ".join(w.name for w in WORKLOADS),
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="load generator threads (default 1)"
    )
    parser.add_argument(
        "--flow-control",
        action="store_true",
        help="instead of benchmarking, push 1 GiB into echo without reading "
        "and report the servers' memory growth",
    )
    # A template for starting the daemon under test, with {python}, {twistd},
    # {config}, {echo}, {discard} and {repo} filled in; for trying this script
    # out against bench/baseline.py.
    parser.add_argument("--netd-command", default=NETD_COMMAND, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if not 1 <= options.seconds <= 120:
        parser.error("--seconds must be between 1 and 120")
    if options.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not 1 <= options.threads <= 16:
        parser.error("--threads must be between 1 and 16")
    return options


def exitOnSignal(signum: int, frame: object) -> NoReturn:
    """
    Turn C{SIGTERM} into C{SystemExit}, so that the servers get stopped.
    """
    raise SystemExit(128 + signum)


def environment(options: argparse.Namespace) -> str:
    """
    @return: a Markdown line describing the conditions of the run.
    """
    import twisted

    return (
        f"Python {platform.python_version()}, Twisted {twisted.__version__}, "
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs; "
        f"{options.repeat} × {options.seconds} s per workload and server, "
        f"{options.threads} load generator thread(s)."
    )


def startServers(
    netdTemplate: str, directory: str, stack: ExitStack
) -> dict[str, Server]:
    """
    Start netd and the baseline on free ports, each stopped when C{stack}
    closes.

    @param netdTemplate: how to start netd (see L{NETD_COMMAND}).
    @param directory: where their config and logs go.
    @return: the two servers, ready, by name.
    """
    netdEcho, netdDiscard, baseEcho, baseDiscard = freePorts(4)
    config = os.path.join(directory, "netd.toml")
    with open(config, "w") as f:
        f.write(NETD_CONFIG.format(host=HOST, echo=netdEcho, discard=netdDiscard))
    fields = dict(
        python=sys.executable,
        twistd=os.path.join(os.path.dirname(sys.executable), "twistd"),
        config=config,
        echo=netdEcho,
        discard=netdDiscard,
        repo=REPO,
    )
    netdCommand = [part.format(**fields) for part in shlex.split(netdTemplate)]
    baseCommand = [sys.executable, os.path.join(BENCH, "baseline.py")]
    baseCommand += [str(baseEcho), str(baseDiscard)]
    netdPorts = {"echo": netdEcho, "discard": netdDiscard}
    basePorts = {"echo": baseEcho, "discard": baseDiscard}
    return {
        "netd": stack.enter_context(running("netd", netdCommand, netdPorts, directory)),
        "baseline": stack.enter_context(
            running("baseline", baseCommand, basePorts, directory)
        ),
    }


def main(argv: Sequence[str]) -> None:
    """
    Run the benchmark, or the flow-control check, and print the results.
    """
    options = parseArguments(argv)
    workloads = selectWorkloads(options.only)
    signal.signal(signal.SIGTERM, exitOnSignal)
    # The servers stop (stack) before their directory goes.
    with (
        tempfile.TemporaryDirectory(prefix="netd-bench-") as directory,
        ExitStack() as stack,
    ):
        if options.flow_control:
            servers = startServers(options.netd_command, directory, stack)
            print(flowControl(servers))
            return
        loadgen = compileLoadgen(directory)
        servers = startServers(options.netd_command, directory, stack)
        results = benchmark(
            servers,
            loadgen,
            workloads,
            options.seconds,
            options.repeat,
            options.threads,
        )
        print(environment(options))
        print()
        print(throughputTable(workloads, results))
        print()
        print(detailsTable(workloads, results))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        sys.exit(f"bench/run.py: {e}")
