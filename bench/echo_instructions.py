"""
Count the user-space CPU instructions of one 64-byte TCP echo, with
C{valgrind --tool=callgrind}: a figure that does not move with the noise of
a shared machine, as timings do.

C{python bench/echo_instructions.py} runs, under callgrind, one process per
server kind. Each connects C{--connections} socket pairs; in every round it
sends 64 bytes on each client end, lets the server's event loop echo them,
and reads the echoes back. Each kind runs twice, with C{--rounds} and with
three times as many, and the difference of the two totals divided by the
extra messages is what one echo costs, the setup cancelled out. The kinds:

  - C{netd}: netd's reactor (L{netd.reactor.NetdEPollReactor}), transport
    (L{netd.transport.WriteThroughServer}) and session around netd's echo
    protocol, built by the echo service's own factory;
  - C{twisted}: Twisted's epoll reactor and C{tcp.Server} around
    C{wire.Echo}, as bare Twisted runs it (its reply goes out on the next
    turn of the reactor, so each round turns it twice);
  - C{python}: a bare loop on C{select.epoll} that calls C{recv} and
    C{send}: what any Python server must do at least.

The instructions counted are those of the whole process, the client ends'
C{send} and C{recv} included (the same for every kind); the kernel's are not
counted. C{PYTHONHASHSEED} is fixed so that dictionaries are laid out alike
in every run. It prints one Markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KINDS = ("netd", "uvloop", "twisted", "python")
MESSAGE = b"x" * 64


def connectPairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """
    @param count: How many.
    @return: C{(client, server)} socket pairs; the server ends do not block.
    """
    pairs = []
    for _ in range(count):
        client, server = socket.socketpair()
        server.setblocking(False)
        pairs.append((client, server))
    return pairs


def netdLoop(pairs: list[tuple[socket.socket, socket.socket]]) -> Any:
    """
    Serve the server ends with netd's echo service, as a netd listener
    would.

    @return: A function that turns the event loop once.
    """
    from twisted.internet.address import IPv4Address

    from netd.limits import Limits
    from netd.reactor import NetdEPollReactor
    from netd.services.echo import buildStreamFactory
    from netd.sessions import SessionFactory
    from netd.transport import WriteThroughServer
    from tests.support import makeContext

    reactor = NetdEPollReactor()
    limits = Limits(idleTimeout=0, maxSessions=100000, maxSessionsPerPeer=100000)
    context = makeContext("echo", limits=limits, reactor=reactor)
    factory = SessionFactory(buildStreamFactory(context), context, "tcp:7")
    for number, (client, server) in enumerate(pairs):
        address = ("127.0.0.1", 40000 + number)
        session = factory.buildProtocol(IPv4Address("TCP", *address))
        transport = WriteThroughServer(server, session, address, None, number, reactor)
        session.makeConnection(transport)
        transport.startReading()
    return lambda: reactor.doPoll(0)


def twistedLoop(pairs: list[tuple[socket.socket, socket.socket]]) -> Any:
    """
    Serve the server ends with C{wire.Echo} on Twisted's own reactor and
    transport.

    @return: A function that turns the event loop twice (read, then write).
    """
    from twisted.internet import epollreactor, tcp
    from twisted.protocols import wire

    reactor = epollreactor.EPollReactor()
    for number, (client, server) in enumerate(pairs):
        protocol = wire.Echo()
        transport = tcp.Server(
            server, protocol, ("127.0.0.1", 40000 + number), None, number, reactor
        )
        protocol.makeConnection(transport)
        transport.startReading()

    def turn() -> None:
        reactor.doPoll(0)
        reactor.doPoll(0)

    return turn


def pythonLoop(pairs: list[tuple[socket.socket, socket.socket]]) -> Any:
    """
    Serve the server ends with the plainest epoll loop.

    @return: A function that turns it once.
    """
    poller = select.epoll()
    servers = {}
    for client, server in pairs:
        servers[server.fileno()] = server
        poller.register(server.fileno(), select.EPOLLIN)

    def turn() -> None:
        for fd, event in poller.poll(0, 1000):
            skt = servers[fd]
            skt.send(skt.recv(65536))

    return turn


def uvloopLoop(pairs: list[tuple[socket.socket, socket.socket]]) -> Any:
    """
    Serve the server ends with the plainest asyncio protocol on uvloop's
    event loop (libuv, in C), the issue's fastest Python peer.

    @return: A function that runs the loop until the echoes are sent.
    """
    import asyncio

    import uvloop

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    loop = uvloop.new_event_loop()
    for client, server in pairs:
        loop.run_until_complete(loop.connect_accepted_socket(Echo, server))

    def turn() -> None:
        loop.run_until_complete(asyncio.sleep(0))

    return turn


def child(kind: str, connections: int, rounds: int) -> None:
    """
    Run C{rounds} rounds of echoes through one kind of server.

    @param kind: One of L{KINDS}.
    @param connections: How many connections.
    @param rounds: How many rounds.
    @raise RuntimeError: If an echo does not come back whole.
    """
    pairs = connectPairs(connections)
    loops = {
        "netd": netdLoop,
        "uvloop": uvloopLoop,
        "twisted": twistedLoop,
        "python": pythonLoop,
    }
    turn = loops[kind](pairs)
    for client, server in pairs:
        client.settimeout(10)
    for _ in range(rounds):
        for client, server in pairs:
            client.send(MESSAGE)
        turn()
        for client, server in pairs:
            if client.recv(128) != MESSAGE:
                raise RuntimeError(f"{kind}: an echo did not come back whole")


def countInstructions(kind: str, connections: int, rounds: int) -> int:
    """
    Run L{child} under callgrind.

    @return: The instructions the whole process executed.
    @raise RuntimeError: If the run fails.
    """
    with tempfile.TemporaryDirectory() as directory:
        output = os.path.join(directory, "callgrind.out")
        env = dict(os.environ, PYTHONHASHSEED="0")
        env["PYTHONPATH"] = os.pathsep.join(
            [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={output}",
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            kind,
            "--connections",
            str(connections),
            "--rounds",
            str(rounds),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=3600
        )
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"{kind} failed ({done.returncode}):\n{done.stderr}")
        return int(found.group(1))


def importable(name: str) -> bool:
    """
    @param name: A module.
    @return: Whether it can be imported (C{pip install uvloop} for uvloop).
    """
    try:
        __import__(name)
    except ImportError:
        print(f"{name} is not installed: left out", file=sys.stderr)
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child, options.connections, options.rounds)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: apt-get install valgrind")
    extra = 2 * options.rounds * options.connections
    perMessage = {}
    kinds = [k for k in KINDS if k != "uvloop" or importable("uvloop")]
    for kind in kinds:
        started = time.monotonic()
        few = countInstructions(kind, options.connections, options.rounds)
        many = countInstructions(kind, options.connections, 3 * options.rounds)
        perMessage[kind] = (many - few) / extra
        print(
            f"{kind}: {perMessage[kind]:,.0f} instructions per echo "
            f"({time.monotonic() - started:.0f}s)",
            file=sys.stderr,
        )
    print(
        f"User-space instructions per 64-byte echo, {options.connections} "
        f"connections, {extra:,} echoes counted (callgrind)\n"
    )
    print("| server | instructions per echo | above the bare Python loop |")
    print("|---|---|---|")
    floor = perMessage["python"]
    names = {
        "netd": "netd (reactor, transport, session, echo)",
        "uvloop": "uvloop (`asyncio.Protocol`)",
        "twisted": "bare Twisted (`wire.Echo`, epoll reactor)",
        "python": "bare Python epoll loop (`recv`, `send`)",
    }
    for kind in kinds:
        print(
            f"| {names[kind]} | {perMessage[kind]:,.0f} "
            f"| {perMessage[kind] - floor:+,.0f} |"
        )


if __name__ == "__main__":
    main()
