"""
Which Twisted Redis client for the chat hub: netd's small protocol on
hiredis (C{netd.chat.redisclient}) against C{txredisapi} (its pure-Python
parser and its hiredis one), on this machine, in the same run.

C{python bench/redis_client.py [--commands 20000] [--repeat 3]}

starts its own C{redis-server} (loopback, free port, no persistence), and
for each client and repeat times C{--commands} C{XADD} commands (64-byte
values, what the hub sends) issued in one go and waited for together, then
a tenth as many C{XREAD}s of 100 entries (netd: one
L{pipeline<netd.chat.redisclient.RedisProtocol.pipeline>} call; C{txredisapi}:
one C{execute_command} each, and through its C{pipeline()}); prints commands per second, medians of
the repeats, and each client's ratio to netd's. C{txredisapi} must be
installed (C{pip install txredisapi}); it is not a dependency of netd.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))

from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol  # noqa: E402

from netd.chat.redisclient import RedisProtocol  # noqa: E402
from tests.redissupport import RedisServer  # noqa: E402

VALUE = "x" * 64


async def netdClient(port: int, commands: int) -> tuple[float, float]:
    protocol = RedisProtocol(reactor)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    try:
        start = time.perf_counter()
        await protocol.pipeline(
            [("XADD", "bench:netd", "*", "e", VALUE) for _ in range(commands)]
        )
        writes = commands / (time.perf_counter() - start)
        start = time.perf_counter()
        await protocol.pipeline(
            [
                ("XREAD", "COUNT", 100, "STREAMS", "bench:netd", "0-0")
                for _ in range(commands // 10)
            ]
        )
        reads = commands // 10 / (time.perf_counter() - start)
    finally:
        protocol.transport.loseConnection()
    return writes, reads


def txredisClient(hiredis: bool, pipelined: bool = False) -> Callable[[int, int], Any]:
    async def run(port: int, commands: int) -> tuple[float, float]:
        import txredisapi

        # The parser is the factory's protocol class: swap it for this run.
        txredisapi.RedisFactory.protocol = (
            txredisapi.HiredisProtocol if hiredis else txredisapi.RedisProtocol
        )
        client = await txredisapi.Connection("127.0.0.1", port, reconnect=False)
        key = f"bench:tx{int(hiredis)}{int(pipelined)}"

        async def batch(commands: list[tuple[Any, ...]]) -> None:
            if pipelined:
                pipe = await client.pipeline()
                for command in commands:
                    pipe.execute_command(*command)
                await pipe.execute_pipeline()
            else:
                await defer.gatherResults(
                    [client.execute_command(*command) for command in commands]
                )

        try:
            start = time.perf_counter()
            await batch([("XADD", key, "*", "e", VALUE)] * commands)
            writes = commands / (time.perf_counter() - start)
            start = time.perf_counter()
            await batch(
                [("XREAD", "COUNT", 100, "STREAMS", key, "0-0")] * (commands // 10)
            )
            reads = commands // 10 / (time.perf_counter() - start)
        finally:
            await client.disconnect()
        return writes, reads

    return run


CLIENTS = {
    "netd (hiredis Reader)": netdClient,
    "txredisapi (hiredis)": txredisClient(True),
    "txredisapi (hiredis, pipeline())": txredisClient(True, pipelined=True),
    "txredisapi (Python parser)": txredisClient(False),
}


async def measure(options: argparse.Namespace) -> None:
    redis = RedisServer()
    redis.start()
    results: dict[str, list[tuple[float, float]]] = {}
    try:
        for repeat in range(options.repeat):
            names = list(CLIENTS)
            names = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in names:
                result = await CLIENTS[name](redis.port, options.commands)
                print(f"repeat {repeat + 1} {name}: {result}", file=sys.stderr)
                results.setdefault(name, []).append(result)
                redis.command("FLUSHALL")
    finally:
        redis.stop()
    base = statistics.median(w for w, _ in results["netd (hiredis Reader)"])
    baseReads = statistics.median(r for _, r in results["netd (hiredis Reader)"])
    print(
        f"Redis clients: {options.commands} pipelined XADDs (64-byte values) and "
        f"{options.commands // 10} XREADs of 100 entries, median of {options.repeat}"
    )
    print()
    print("| client | XADD/s | / netd | XREAD(100)/s | / netd |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        writes = statistics.median(w for w, _ in runs)
        reads = statistics.median(r for _, r in runs)
        print(
            f"| {name} | {writes:,.0f} | {writes / base:.2f} | {reads:,.0f} | "
            f"{reads / baseReads:.2f} |"
        )


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args(argv)

    def done(result: Any) -> None:
        reactor.stop()  # type: ignore[attr-defined]
        return result

    d = defer.ensureDeferred(measure(options))
    d.addErrback(lambda f: print(f.getTraceback(), file=sys.stderr))
    d.addBoth(done)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
