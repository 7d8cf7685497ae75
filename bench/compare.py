"""
The whole comparison of issue 6 in one command: netd against C epoll,
uvloop, asyncio, bare Twisted, C{twistd inetd}, xinetd, nginx,
C{twistd web} and C{ncat --chat}, on this machine, in the same run.

C{python bench/compare.py [--seconds 5] [--repeat 3] [--only ROWS]
[--peers PEERS]}

installs the peers that are missing (Debian packages with C{apt-get}, uvloop
with C{pip} into the running Python), compiles C{bench/loadgen.c},
C{bench/chatload.c} and C{bench/epoll_echo.c} into a temporary directory,
then for every row (workload) starts each peer that applies on free
loopback ports and measures it C{--repeat} times, rotating the order of the
peers from one repetition to the next.  It prints one Markdown table of
figures (median, with the lowest and highest repetition in parentheses) and
one of netd's ratio to each peer, computed within each repetition.

Only processes this script started are ever signalled, by PID (C{SIGTERM},
then C{SIGKILL}), and they are always stopped on the way out.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from types import ModuleType, SimpleNamespace
from typing import NoReturn

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
HOST = "127.0.0.1"
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
SETTLE = 0.3
INSTALL_TIMEOUT = 600

# Idle sessions held open for the RSS row.
IDLE_SESSIONS = 10000
IDLE_DEADLINE = 120.0

# Chat fan-out: clients, senders and the offered rate (lines per second in
# total), far more than any server here keeps up with (servers that batch
# their writes deliver millions of lines a second), so that deliveries/s is
# the server's capacity rather than the offered rate.
CHAT_CLIENTS = 100
CHAT_SENDERS = 1
CHAT_RATE = 300000
CHAT_PROCS = 2

HTTP_CONNECTIONS = 50

# Twisted's inetd finds internal services by their name in /etc/services, so
# its echo can only listen on the echo port.
INETD_ECHO_PORT = 7


def loadSibling(name: str) -> ModuleType:
    """
    Import one of the other benchmark scripts of C{bench/} by path.

    @param name: its file name without C{.py}.
    @return: the module.
    """
    path = os.path.join(BENCH, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


runBench = loadSibling("run")
chatBench = loadSibling("chat")
httpBench = loadSibling("http_bench")

# Columns: key for --peers, heading.
PEERS = {
    "netd": "netd",
    "netd-2w": "netd, 2 workers",
    "netd-log": "netd, access log on",
    "c-epoll": "C epoll",
    "uvloop": "uvloop",
    "asyncio": "asyncio",
    "twisted": "bare Twisted",
    "twistd-inetd": "twistd inetd",
    "xinetd": "xinetd",
    "nginx": "nginx",
    "twistd-web": "twistd web",
    "ncat": "ncat --chat",
}

ECHO_PEERS = ("netd", "netd-2w", "c-epoll", "uvloop", "asyncio", "twisted")
ECHO_PEERS += ("twistd-inetd", "xinetd")
HTTP_PEERS = ("netd", "netd-2w", "netd-log", "nginx", "twistd-web")
# Columns that are netd itself, set up differently: compared with netd in a
# table of their own, not in the "netd ÷ peer" one.
NETD_VARIANTS = ("netd-2w", "netd-log")

# Rows: key for --only, label, the peers it applies to, how to format a figure.
ROWS = {
    "tcp-echo": ("TCP echo, 50 conns, 64 B, msg/s", ECHO_PEERS),
    "tcp-cpu": ("TCP echo: server CPU per message, µs", ECHO_PEERS),
    "udp-echo": ("UDP echo, 8 senders, 64 B, dgram/s", ECHO_PEERS),
    "http-1k": (
        f"HTTP 1 KiB, wrk -t1 -c{HTTP_CONNECTIONS}, req/s",
        HTTP_PEERS,
    ),
    "http-1m": (
        f"HTTP 1 MiB, wrk -t1 -c{HTTP_CONNECTIONS}, MiB/s",
        HTTP_PEERS,
    ),
    "chat": (
        f"chat fan-out, {CHAT_CLIENTS} clients, {CHAT_SENDERS} sender, deliveries/s",
        ("netd", "twisted", "ncat"),
    ),
    "idle-rss": (
        f"idle TCP session ({IDLE_SESSIONS:,} held), RSS bytes each",
        ("netd", "c-epoll", "uvloop", "asyncio", "twisted"),
    ),
}
# tcp-cpu is measured with tcp-echo and selected with it.
SELECTABLE = [row for row in ROWS if row != "tcp-cpu"]
LOWER_IS_BETTER = {"tcp-cpu", "idle-rss"}

NETD_ECHO_CONFIG = """\
[netd]
{allowRoot}
[services.echo]
type = "echo"
# reuse_port on UDP: with workers, each one gets its own socket.
listen = [
  "tcp:{port}:interface={host}:backlog=4096",
  {{ address = "udp:{port}:interface={host}", reuse_port = true }},
]
# All the load comes from one address: lift the per-source UDP reply budget.
udp_reply_rate = 10000000
udp_reply_burst = 10000000

[services.echo.limits]
max_sessions = 100000
max_sessions_per_peer = 100000
idle_timeout = 0
"""

INETD_CONF = "echo stream tcp nowait root internal\n"

# twistd inetd listens on every interface; this runs it unchanged except
# that its TCP listeners bind 127.0.0.1 only.
INETD_LAUNCHER = """\
from twisted.application import internet
class LoopbackTCPServer(internet.TCPServer):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("interface", "127.0.0.1")
        super().__init__(*args, **kwargs)
internet.TCPServer = LoopbackTCPServer
from twisted.scripts.twistd import run
run()
"""

XINETD_CONF = """\
defaults
{{
    instances = UNLIMITED
    per_source = UNLIMITED
    cps = 0 0
}}
service echo
{{
    type = INTERNAL UNLISTED
    id = echo-stream
    socket_type = stream
    protocol = tcp
    port = {port}
    bind = {host}
    wait = no
    user = root
}}
service echo
{{
    type = INTERNAL UNLISTED
    id = echo-dgram
    socket_type = dgram
    protocol = udp
    port = {port}
    bind = {host}
    wait = yes
    user = root
}}
"""


class Unavailable(Exception):
    """
    A peer cannot run here; the message says why (a footnote).
    """


def progress(message: str) -> None:
    """
    Report progress on standard error, keeping standard output for results.
    """
    print(message, file=sys.stderr, flush=True)


def isRoot() -> bool:
    """
    @return: whether this process runs as root.
    """
    return os.geteuid() == 0


class Process:
    """
    A server process started by this script.

    @ivar name: what to call it in reports.
    @ivar process: the running process.
    @ivar log: the file its output goes to.
    """

    def __init__(self, name: str, command: Sequence[str], directory: str) -> None:
        """
        Start C{command} in C{directory}, with the repository on
        C{PYTHONPATH}.
        """
        self.name = name
        self.log = os.path.join(directory, f"{name}.log")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        shown = " ".join(command).replace("\n", "; ")
        progress(f"  starting {name}: {shown}")
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                list(command),
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        """
        @return: the process ID.
        """
        return self.process.pid

    def logTail(self, lines: int = 5) -> str:
        """
        @return: the last lines the process wrote.
        """
        with open(self.log, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()

    def checkAlive(self) -> None:
        """
        @raise RuntimeError: if the process has exited.
        """
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with status {self.process.returncode}: "
                + self.logTail()
            )

    def cpuSeconds(self) -> float:
        """
        @return: user plus system CPU time used so far by the process, its
            reaped children and its live descendants (xinetd forks one child
            per TCP connection).
        """
        return treeCPU(self.pid)

    def residentKiB(self) -> int:
        """
        @return: the process's resident set size (C{VmRSS}) in KiB.
        """
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.name}")

    def stop(self) -> None:
        """
        Stop it: C{SIGTERM}, then C{SIGKILL} after L{STOP_TIMEOUT} seconds.
        """
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            progress(f"  {self.name} ignored SIGTERM: killing it")
            self.process.kill()
            self.process.wait()


def treeCPU(pid: int) -> float:
    """
    @return: CPU seconds of C{pid}, its reaped children and, recursively, its
        live children; 0 for a process that is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Fields after the parenthesised command name, which may hold
            # spaces: utime, stime, cutime and cstime are fields 14 to 17.
            fields = f.read().rsplit(")", 1)[1].split()
        children: list[int] = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(child) for child in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK") + sum(treeCPU(c) for c in children)


@contextmanager
def serving(
    name: str,
    command: Sequence[str],
    directory: str,
    port: int,
    udp: bool,
) -> Iterator[Process]:
    """
    Start a server, wait until its TCP port accepts connections (and its UDP
    echo answers, if C{udp}), and stop it on the way out.
    """
    server = Process(name, command, directory)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not (runBench.accepts(port) and (not udp or runBench.echoesUDP(port))):
            server.checkAlive()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} not ready after {READY_TIMEOUT:.0f}s: " + server.logTail()
                )
            time.sleep(0.1)
        time.sleep(SETTLE)
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------
# Installing and building the peers.


class Tools:
    """
    What this run found, installed or built, and why a peer is missing.

    @ivar directory: the temporary directory of the run.
    @ivar missing: a footnote for each peer that cannot run, by peer key.
    @ivar loadgen: the path of the compiled C{loadgen}.
    @ivar chatload: the path of the compiled C{chatload}.
    @ivar epollEcho: the path of the compiled C epoll echo server.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.missing: dict[str, str] = {}
        self.aptUpdated = False
        self.loadgen = ""
        self.chatload = ""
        self.epollEcho = ""

    def aptInstall(self, program: str, package: str) -> str | None:
        """
        Find C{program}, installing Debian's C{package} if it is missing.

        @return: its path, or L{None} if it cannot be had.
        """
        found = shutil.which(program) or shutil.which(program, path="/usr/sbin")
        if found or not isRoot() or shutil.which("apt-get") is None:
            return found
        try:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            if not self.aptUpdated:
                progress("apt-get update")
                subprocess.run(
                    ["apt-get", "update"],
                    env=env,
                    check=True,
                    timeout=INSTALL_TIMEOUT,
                    stdout=subprocess.DEVNULL,
                )
                self.aptUpdated = True
            progress(f"apt-get install -y {package}")
            subprocess.run(
                ["apt-get", "install", "-y", package],
                env=env,
                check=True,
                timeout=INSTALL_TIMEOUT,
                stdout=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as e:
            progress(f"could not install {package}: {e}")
        return shutil.which(program) or shutil.which(program, path="/usr/sbin")

    def pipInstall(self, module: str) -> bool:
        """
        Make C{module} importable by this Python, installing it from PyPI
        with C{pip} if it is missing.

        @return: whether it is importable now.
        """
        probe = [sys.executable, "-c", f"import {module}"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return True
        progress(f"pip install {module}")
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", module],
                check=True,
                timeout=INSTALL_TIMEOUT,
            )
        except (OSError, subprocess.SubprocessError) as e:
            progress(f"could not install {module}: {e}")
        return subprocess.run(probe, capture_output=True).returncode == 0

    def compile(self, source: str, extra: Sequence[str] = ()) -> str:
        """
        Compile C{bench/SOURCE} into the run's directory.

        @return: the binary's path.
        """
        binary = os.path.join(self.directory, source.removesuffix(".c"))
        subprocess.run(
            ["gcc", "-O2", *extra, "-o", binary, os.path.join(BENCH, source)],
            check=True,
        )
        return binary

    def prepare(self, peers: Sequence[str], rows: Sequence[str]) -> None:
        """
        Build the load generators and the C server, and install the peers
        and load tools that are missing.
        """
        if shutil.which("gcc") is None:
            raise RuntimeError("gcc is needed (apt-get install gcc)")
        self.loadgen = self.compile("loadgen.c", ["-pthread"])
        self.chatload = self.compile("chatload.c")
        if "c-epoll" in peers:
            self.epollEcho = self.compile("epoll_echo.c")
        if "uvloop" in peers and not self.pipInstall("uvloop"):
            self.missing["uvloop"] = "uvloop could not be installed with pip"
        wanted = {
            "xinetd": ("xinetd", "xinetd"),
            "nginx": ("nginx", "nginx"),
            "ncat": ("ncat", "ncat"),
        }
        for peer, (program, package) in wanted.items():
            if peer in peers and self.aptInstall(program, package) is None:
                self.missing[peer] = (
                    f"{program} not found and `{package}` not installable"
                )
        if {"http-1k", "http-1m"} & set(rows):
            if self.aptInstall("wrk", "wrk") is None:
                for peer in ROWS["http-1k"][1]:
                    self.missing.setdefault(
                        f"http:{peer}", "wrk not found and not installable"
                    )
        if "xinetd" in peers and not isRoot():
            self.missing["xinetd"] = "xinetd's internal services need root here"
        if "twistd-inetd" in peers:
            if not isRoot():
                self.missing["twistd-inetd"] = (
                    f"its internal echo can only use port {INETD_ECHO_PORT}, "
                    "which needs root"
                )
            elif runBench.accepts(INETD_ECHO_PORT):
                self.missing["twistd-inetd"] = (
                    f"port {INETD_ECHO_PORT} (echo), the only one its internal "
                    "echo can use, is taken"
                )


# ----------------------------------------------------------------------------
# Echo servers (TCP echo, UDP echo, idle sessions).


def allowRootLine() -> str:
    """
    @return: the C{[netd]} line that lets netd run as root, when it is.
    """
    return "allow_root = true" if isRoot() else ""


def echoServer(
    peer: str, tools: Tools, directory: str
) -> tuple[str, list[str], int, bool]:
    """
    How to start one echo server on free loopback ports.

    @param peer: a key of L{PEERS} in L{ECHO_PEERS}.
    @return: its process name, command, TCP (and UDP) echo port, and whether
        it serves UDP echo.
    """
    if peer in tools.missing:
        raise Unavailable(tools.missing[peer])
    python = sys.executable
    port, other = runBench.freePorts(2)
    if peer in ("netd", "netd-2w"):
        config = os.path.join(directory, f"{peer}-echo-{port}.toml")
        workers = "workers = 2" if peer == "netd-2w" else ""
        with open(config, "w") as f:
            f.write(
                NETD_ECHO_CONFIG.format(
                    allowRoot=allowRootLine() + "\n" + workers, port=port, host=HOST
                )
            )
        command = [python, TWISTD, "-n", "--pidfile=", "netd", "--config", config]
        return peer, command, port, True
    if peer == "c-epoll":
        return "c-epoll", [tools.epollEcho, str(port)], port, True
    if peer in ("uvloop", "asyncio"):
        command = [python, os.path.join(BENCH, "asyncio_echo.py"), str(port)]
        if peer == "uvloop":
            command.append("--uvloop")
        return peer, command, port, True
    if peer == "twisted":
        command = [python, os.path.join(BENCH, "baseline.py"), str(port), str(other)]
        return "twisted", command, port, True
    if peer == "twistd-inetd":
        config = os.path.join(directory, "inetd.conf")
        with open(config, "w") as f:
            f.write(INETD_CONF)
        command = [python, "-c", INETD_LAUNCHER, "-n", "--pidfile="]
        command += ["inetd", "-f", config]
        return "twistd-inetd", command, INETD_ECHO_PORT, False
    if peer == "xinetd":
        config = os.path.join(directory, f"xinetd-{port}.conf")
        with open(config, "w") as f:
            f.write(XINETD_CONF.format(port=port, host=HOST))
        xinetd = shutil.which("xinetd") or "/usr/sbin/xinetd"
        command = [xinetd, "-dontfork", "-stayalive", "-f", config]
        command += ["-filelog", os.path.join(directory, "xinetd-service.log")]
        return "xinetd", command, port, True
    raise ValueError(peer)


def holdIdleSessions(port: int, count: int) -> list[socket.socket]:
    """
    Open C{count} TCP connections to an echo server, each doing one 1-byte
    round trip, so that the server has accepted and set up every session.

    @return: the open sockets; the caller closes them.
    @raise RuntimeError: if it takes longer than L{IDLE_DEADLINE}.
    """
    sockets: list[socket.socket] = []
    deadline = time.monotonic() + IDLE_DEADLINE
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                raise RuntimeError(f"opening {count} sessions took too long")
            s = socket.create_connection((HOST, port), timeout=5)
            sockets.append(s)
            s.sendall(b"x")
            if s.recv(1) != b"x":
                raise RuntimeError("a session was not echoed")
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


def measureIdle(server: Process, port: int) -> float:
    """
    @return: the growth of C{server}'s RSS per session, in bytes, while
        L{IDLE_SESSIONS} idle sessions are held open.
    """
    for s in holdIdleSessions(port, 100):  # warm up the code paths
        s.close()
    time.sleep(1)
    before = server.residentKiB()
    sockets = holdIdleSessions(port, IDLE_SESSIONS)
    try:
        time.sleep(1)
        server.checkAlive()
        after = server.residentKiB()
    finally:
        for s in sockets:
            s.close()
    return (after - before) * 1024 / IDLE_SESSIONS


# ----------------------------------------------------------------------------
# Results.


class Results:
    """
    Every figure of the run.

    @ivar figures: per row and peer, one figure per repetition.
    @ivar extras: per row and peer, remarks shown after the figure (UDP
        loss, errors).
    @ivar notes: per row and peer, a text shown instead of (or after) the
        figure, such as C{"none"} or C{"n/a"}, with its footnote.
    @ivar footnotes: the footnotes, in order.
    """

    def __init__(self) -> None:
        self.figures: dict[str, dict[str, list[float]]] = {}
        self.extras: dict[str, dict[str, list[str]]] = {}
        self.notes: dict[str, dict[str, str]] = {}
        self.footnotes: list[str] = []

    def add(self, row: str, peer: str, value: float, extra: str = "") -> None:
        """
        Record one repetition's figure, and an optional remark for it.
        """
        self.figures.setdefault(row, {}).setdefault(peer, []).append(value)
        if extra:
            self.extras.setdefault(row, {}).setdefault(peer, []).append(extra)

    def note(self, row: str, peer: str, text: str, footnote: str) -> None:
        """
        Show C{text} with a footnote in a cell that has no figure.
        """
        footnote = f"{PEERS[peer]}: {footnote}"
        if footnote not in self.footnotes:
            self.footnotes.append(footnote)
        marker = self.footnotes.index(footnote) + 1
        self.notes.setdefault(row, {})[peer] = f"{text} [{marker}]"


def compact(value: float, row: str) -> str:
    """
    @return: C{value} formatted for C{row}.
    """
    if row == "tcp-cpu":
        return f"{value:.1f}"
    if row == "idle-rss":
        return f"{value:,.0f}"
    if row == "http-1m":
        return f"{value:,.0f}"
    if abs(value) >= 1e6:
        return f"{value / 1e6:,.2f}M"
    if abs(value) >= 1000:
        return f"{value / 1000:,.1f}k"
    return f"{value:,.0f}"


def spread(values: Sequence[float], format: Callable[[float], str]) -> str:
    """
    @return: C{"median (min–max)"}, or just the value for one repetition.
    """
    text = format(statistics.median(values))
    if len(values) > 1:
        text += f" ({format(min(values))}–{format(max(values))})"
    return text


def remarks(extras: Sequence[str]) -> str:
    """
    @param extras: the remarks of the repetitions, such as C{"loss 2%"}.
    @return: them in one cell: losses as one range, others as they are.
    """
    losses = [float(e[5:-1]) for e in extras if e.startswith("loss ")]
    others = sorted({e for e in extras if not e.startswith("loss ")})
    if losses:
        low, high = min(losses), max(losses)
        text = f"loss {low:.0f}%" if low == high else f"loss {low:.0f}–{high:.0f}%"
        others.insert(0, text)
    return "; ".join(others)


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """
    @return: a Markdown table.
    """
    return runBench.table(header, rows)


def figuresTable(results: Results, rows: Sequence[str], peers: Sequence[str]) -> str:
    """
    @return: the Markdown table of every figure.
    """
    lines = []
    for row in rows:
        label, _ = ROWS[row]
        cells = [label]
        for peer in peers:
            values = results.figures.get(row, {}).get(peer)
            note = results.notes.get(row, {}).get(peer, "")
            if values:
                cell = spread(values, lambda v: compact(v, row))
                extras = results.extras.get(row, {}).get(peer)
                if extras:
                    cell += ", " + remarks(extras)
                cells.append(cell + (f" {note}" if note else ""))
            elif note:
                cells.append(note)
            else:
                cells.append("")
        lines.append(cells)
    return markdown(["workload"] + [PEERS[p] for p in peers], lines)


def ratioTable(results: Results, rows: Sequence[str], peers: Sequence[str]) -> str:
    """
    @return: the Markdown table of netd's figure divided by each peer's,
        within each repetition, as median (min–max).
    """
    others = [p for p in peers if p != "netd" and p not in NETD_VARIANTS]
    lines = []
    for row in rows:
        label, _ = ROWS[row]
        if row in LOWER_IS_BETTER:
            label += " (lower is better)"
        cells = [label]
        netd = results.figures.get(row, {}).get("netd")
        for peer in others:
            values = results.figures.get(row, {}).get(peer)
            if not netd or not values:
                cells.append("")
                continue
            ratios = [n / v for n, v in zip(netd, values) if v]
            cells.append(spread(ratios, lambda r: f"{r:.2f}") if ratios else "")
        lines.append(cells)
    return markdown(["netd ÷ peer"] + [PEERS[p] for p in others], lines)


def variantsTable(results: Results, rows: Sequence[str], peers: Sequence[str]) -> str:
    """
    @return: the Markdown table of netd set up differently (two workers,
        access log on) divided by plain netd (one worker, no access log),
        within each repetition, as median (min–max); or C{""} if no row
        has both.
    """
    variants = [p for p in peers if p in NETD_VARIANTS]
    lines = []
    for row in rows:
        netd = results.figures.get(row, {}).get("netd")
        cells = [
            ROWS[row][0] + (" (lower is better)" if row in LOWER_IS_BETTER else "")
        ]
        for peer in variants:
            values = results.figures.get(row, {}).get(peer)
            ratios = [v / n for n, v in zip(netd or [], values or []) if n]
            cells.append(spread(ratios, lambda r: f"{r:.2f}") if ratios else "")
        if any(cells[1:]):
            lines.append(cells)
    if not lines:
        return ""
    return markdown(["variant ÷ netd"] + [PEERS[p] for p in variants], lines)


# ----------------------------------------------------------------------------
# The rows.


def rotated(items: Sequence[str], repetition: int) -> list[str]:
    """
    @return: C{items}, rotated by C{repetition}, so that no peer always goes
        first.
    """
    if not items:
        return []
    shift = repetition % len(items)
    return list(items[shift:]) + list(items[:shift])


def failed(results: Results, rows: Sequence[str], peer: str, error: Exception) -> None:
    """
    Record that C{peer} could not be measured for C{rows}.
    """
    if isinstance(error, Unavailable):
        text, footnote = "n/a", str(error)
    else:
        text = "failed"
        footnote = " ".join(str(error).split())[:300]
    progress(f"  {peer}: {text}: {footnote}")
    for row in rows:
        results.note(row, peer, text, footnote)


def echoRows(
    tools: Tools,
    rows: Sequence[str],
    peers: Sequence[str],
    options: argparse.Namespace,
    results: Results,
) -> None:
    """
    Measure TCP echo (with server CPU) and UDP echo: every echo server runs
    for the whole phase, and each repetition measures them in turn.
    """
    workloads = {w.name: w for w in runBench.WORKLOADS}
    tcp, udp = workloads["tcp-echo-50x64"], workloads["udp-echo-8x64"]
    wanted = [r for r in ("tcp-echo", "udp-echo") if r in rows]
    measured = list(wanted) + (["tcp-cpu"] if "tcp-echo" in rows else [])
    with ExitStack() as stack:
        servers: dict[str, tuple[Process, int, bool]] = {}
        for peer in [p for p in peers if p in ECHO_PEERS]:
            try:
                name, command, port, hasUDP = echoServer(peer, tools, tools.directory)
                server = stack.enter_context(
                    serving(name, command, tools.directory, port, hasUDP)
                )
                servers[peer] = (server, port, hasUDP)
            except (Unavailable, RuntimeError, OSError) as e:
                failed(results, measured, peer, e)
        for peer, (_, _, hasUDP) in servers.items():
            if "udp-echo" in wanted and not hasUDP:
                results.note(
                    "udp-echo",
                    peer,
                    "none",
                    "has no UDP: its makeService raises "
                    "`RuntimeError: not supporting UDP` for udp/dgram lines",
                )
        for row in wanted:
            workload = tcp if row == "tcp-echo" else udp
            progress(f"{ROWS[row][0]}")
            for repetition in range(options.repeat):
                for peer in rotated(list(servers), repetition):
                    server, port, hasUDP = servers[peer]
                    if row == "udp-echo" and not hasUDP:
                        continue
                    if peer in results.notes.get(row, {}):
                        continue
                    try:
                        server.checkAlive()
                        before = server.cpuSeconds()
                        result = runBench.runLoadgen(
                            tools.loadgen, workload, port, options.seconds, 1
                        )
                        time.sleep(SETTLE)  # let forked children exit and be reaped
                        cpu = server.cpuSeconds() - before
                    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                        rowsHit = (
                            ["tcp-echo", "tcp-cpu"] if row == "tcp-echo" else [row]
                        )
                        failed(results, rowsHit, peer, e)
                        continue
                    messages = result["messages"]
                    extra = ""
                    if result.get("errors"):
                        extra = f"{result['errors']:.0f} errors"
                    if row == "udp-echo" and result.get("loss_pct", 0) >= 1:
                        extra = f"loss {result['loss_pct']:.0f}%"
                    results.add(row, peer, result["messages_per_s"], extra)
                    if row == "tcp-echo" and messages:
                        results.add("tcp-cpu", peer, cpu * 1e6 / messages)
                    progress(
                        f"  #{repetition + 1} {peer}: "
                        f"{result['messages_per_s']:,.0f}/s, CPU {cpu:.2f}s {extra}"
                    )


def idleRow(
    tools: Tools, peers: Sequence[str], options: argparse.Namespace, results: Results
) -> None:
    """
    Measure the RSS of idle sessions, with a fresh server every time.
    """
    row = "idle-rss"
    applies = [p for p in peers if p in ROWS[row][1]]
    progress(ROWS[row][0])
    for repetition in range(options.repeat):
        for peer in rotated(applies, repetition):
            if peer in results.notes.get(row, {}):
                continue
            try:
                name, command, port, hasUDP = echoServer(peer, tools, tools.directory)
                with serving(name, command, tools.directory, port, hasUDP) as server:
                    perSession = measureIdle(server, port)
            except (Unavailable, RuntimeError, OSError) as e:
                failed(results, [row], peer, e)
                continue
            results.add(row, peer, perSession)
            progress(f"  #{repetition + 1} {peer}: {perSession:,.0f} B per session")


def httpRows(
    tools: Tools,
    rows: Sequence[str],
    peers: Sequence[str],
    options: argparse.Namespace,
    results: Results,
) -> None:
    """
    Measure HTTP with wrk, using C{bench/http_bench.py}'s servers: the same
    1 KiB and 1 MiB files, servers on CPU 0 and wrk on CPU 1 when there are
    two CPUs.
    """
    wanted = [r for r in ("http-1k", "http-1m") if r in rows]
    applies = [p for p in peers if p in ROWS["http-1k"][1]]
    if "http:netd" in tools.missing:
        for peer in applies:
            failed(results, wanted, peer, Unavailable(tools.missing["http:netd"]))
        return
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    serverCPU, wrkCPU = (0, 1) if pin else (None, None)
    work = os.path.join(tools.directory, "http")
    root = os.path.join(work, "root")
    os.makedirs(root)
    os.chmod(tools.directory, 0o755)
    os.chmod(work, 0o755)
    for name, size in httpBench.FILES.values():
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(size))
    files = {
        "http-1k": httpBench.FILES["1 KiB"][0],
        "http-1m": httpBench.FILES["1 MiB"][0],
    }
    builders = {
        "netd": lambda: httpBench.netdServer(work, root, serverCPU),
        # Two workers are not pinned: they share both CPUs with wrk.
        "netd-2w": lambda: httpBench.netdServer(work, root, None, workers=2),
        "netd-log": lambda: httpBench.netdServer(work, root, serverCPU, True),
        "nginx": lambda: httpBench.nginxServer(work, root, serverCPU),
        "twistd-web": lambda: httpBench.twistdWebServer(work, root, serverCPU),
    }
    servers = {}
    try:
        for peer in applies:
            try:
                if peer in tools.missing:
                    raise Unavailable(tools.missing[peer])
                server = builders[peer]()
                if server is None:
                    raise Unavailable("not installed")
                servers[peer] = server
                progress(f"  starting {peer} (http) on port {server.port}")
                server.start("/" + files["http-1k"])
                for name in files.values():  # warm up
                    url = f"http://{HOST}:{server.port}/{name}"
                    httpBench.runWrk(url, 1, HTTP_CONNECTIONS, wrkCPU)
            except (
                Unavailable,
                RuntimeError,
                OSError,
                subprocess.SubprocessError,
            ) as e:
                servers.pop(peer, None)
                failed(results, wanted, peer, e)
        for row in wanted:
            progress(ROWS[row][0])
            for repetition in range(options.repeat):
                for peer in rotated(list(servers), repetition):
                    if peer in results.notes.get(row, {}):
                        continue
                    url = f"http://{HOST}:{servers[peer].port}/{files[row]}"
                    try:
                        result = httpBench.runWrk(
                            url, options.seconds, HTTP_CONNECTIONS, wrkCPU
                        )
                    except (OSError, subprocess.SubprocessError, AttributeError) as e:
                        failed(results, [row], peer, RuntimeError(f"wrk failed: {e}"))
                        continue
                    errors = result["errors"] + result["socketErrors"]
                    extra = f"{errors:.0f} errors" if errors else ""
                    value = result["rps"] if row == "http-1k" else result["mibps"]
                    results.add(row, peer, value, extra)
                    progress(f"  #{repetition + 1} {peer}: {value:,.1f} {extra}")
    finally:
        for server in servers.values():
            server.stop()


def chatRow(
    tools: Tools, peers: Sequence[str], options: argparse.Namespace, results: Results
) -> None:
    """
    Measure chat fan-out with C{bench/chatload.c}, through
    C{bench/chat.py}'s measurement, with a fresh server every time (as
    C{bench/chat.py} does: C{ncat} quits when many clients leave at once).
    """
    row = "chat"
    applies = [p for p in peers if p in ROWS[row][1]]
    chatOptions = SimpleNamespace(
        procs=CHAT_PROCS,
        clients=CHAT_CLIENTS,
        senders=CHAT_SENDERS,
        seconds=options.seconds,
    )
    progress(ROWS[row][0])
    for repetition in range(options.repeat):
        for peer in rotated(applies, repetition):
            if peer in results.notes.get(row, {}):
                continue
            try:
                if peer in tools.missing:
                    raise Unavailable(tools.missing[peer])
                port = chatBench.freePort()
                if peer == "netd":
                    config = os.path.join(tools.directory, f"netd-chat-{port}.toml")
                    text = chatBench.NETD_CONFIG.format(port=port, host=HOST)
                    text = text.replace("[netd]\n", f"[netd]\n{allowRootLine()}\n", 1)
                    with open(config, "w") as f:
                        f.write(text)
                    command = [sys.executable, TWISTD, "-n", "--pidfile=", "netd"]
                    command += ["--config", config]
                else:
                    command = chatBench.serverCommand(peer, port, tools.directory)
                with serving(f"{peer}-chat", command, tools.directory, port, False):
                    result = chatBench.measure(
                        tools.chatload, peer, port, chatOptions, CHAT_RATE
                    )
            except (
                Unavailable,
                RuntimeError,
                OSError,
                subprocess.SubprocessError,
            ) as e:
                failed(results, [row], peer, e)
                continue
            results.add(row, peer, result["deliveries_per_s"])
            progress(
                f"  #{repetition + 1} {peer}: {result['deliveries_per_s']:,.0f} "
                f"deliveries/s, p99 {result['p99_ms']:.1f} ms"
            )


# ----------------------------------------------------------------------------
# The command.


def parseList(text: str | None, known: Sequence[str], what: str) -> list[str]:
    """
    @return: the comma-separated items of C{text} in their order in
        C{known}, or all of C{known} for L{None}.
    @raise SystemExit: for an unknown item.
    """
    if text is None:
        return list(known)
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if item not in known:
            sys.exit(
                f"bench/compare.py: unknown {what} {item!r}; known: {', '.join(known)}"
            )
    return [k for k in known if k in items]


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    @return: the command-line options.
    """
    parser = argparse.ArgumentParser(
        prog="bench/compare.py",
        description="Benchmark netd against every peer of issue 6 in one run.",
    )
    parser.add_argument(
        "--seconds", type=int, default=5, help="length of each run (default 5)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--only", metavar="ROWS", help="comma-separated rows: " + ", ".join(SELECTABLE)
    )
    parser.add_argument(
        "--peers", metavar="PEERS", help="comma-separated columns: " + ", ".join(PEERS)
    )
    options = parser.parse_args(argv)
    if not 1 <= options.seconds <= 60:
        parser.error("--seconds must be between 1 and 60")
    if not 1 <= options.repeat <= 20:
        parser.error("--repeat must be between 1 and 20")
    options.rows = parseList(options.only, SELECTABLE, "row")
    if "tcp-echo" in options.rows:
        options.rows.insert(options.rows.index("tcp-echo") + 1, "tcp-cpu")
    options.peerList = parseList(options.peers, list(PEERS), "peer")
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
        f"median (min–max) of {options.repeat} × {options.seconds} s; "
        "ratios are netd ÷ peer within each repetition."
    )


def main(argv: Sequence[str]) -> None:
    """
    Run the comparison and print the tables.
    """
    options = parseArguments(argv)
    signal.signal(signal.SIGTERM, exitOnSignal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < IDLE_SESSIONS + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows, peers = options.rows, options.peerList
    results = Results()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="netd-compare-") as directory:
        tools = Tools(directory)
        tools.prepare(peers, rows)
        if {"tcp-echo", "udp-echo"} & set(rows):
            echoRows(tools, rows, peers, options, results)
        if {"http-1k", "http-1m"} & set(rows):
            httpRows(tools, rows, peers, options, results)
        if "chat" in rows:
            chatRow(tools, peers, options, results)
        if "idle-rss" in rows:
            idleRow(tools, peers, options, results)
    progress(f"done in {time.monotonic() - started:.0f}s")
    used = [p for p in peers if any(p in ROWS[r][1] for r in rows)]
    print(environment(options))
    print()
    print(figuresTable(results, rows, used))
    if "netd" in used and len(used) > 1:
        print()
        print(ratioTable(results, rows, used))
        variants = variantsTable(results, rows, used)
        if variants:
            print()
            print(variants)
    if results.footnotes:
        print()
        for number, footnote in enumerate(results.footnotes, 1):
            print(f"[{number}] {footnote}  ")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        sys.exit(f"bench/compare.py: {e}")
