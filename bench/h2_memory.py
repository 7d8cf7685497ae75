# -*- test-case-name: tests.test_bench -*-
"""
HTTP/2 in memory: the Python cost of one request, without TLS, sockets or a
load generator. The real protocol stack (the session wrapper, then
L{HTTPConnection<netd.http.protocol.HTTPConnection>} handing over as ALPN
said C{h2}) runs on a C{StringTransport}; the client's bytes are made
beforehand by C{h2}'s client (the first request's fields indexed, every
later one fully indexed, as h2load and browsers send them), C{--batch}
requests per read as C{h2load -m 10} sends them.

    python bench/h2_memory.py [--requests 20000] [--batch 10] [--rounds 5]
        [--path /1k.bin] [--profile]

Prints microseconds per request (the best of C{--rounds}); with
C{--profile}, the C{cProfile} summary of one round instead.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if sys.path and os.path.abspath(sys.path[0]) == HERE:
    del sys.path[0]
sys.path.insert(0, REPO)


def clientBytes(path: str, requests: int, batch: int) -> list[bytes]:
    """
    @param path: The target of every request.
    @param requests: How many.
    @param batch: Requests per chunk.
    @return: The client's preface (with windows opened wide) and then one
        chunk per C{batch} requests.
    """
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.settings import SettingCodes

    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    client.increment_flow_control_window(2**31 - 1 - 65535)
    chunks = [client.data_to_send()]
    fields = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"127.0.0.1"),
        (b":path", path.encode()),
        (b"user-agent", b"h2load nghttp2/1.52.0"),
    ]
    for start in range(0, requests, batch):
        for _ in range(min(batch, requests - start)):
            stream = client.get_next_available_stream_id()
            client.send_headers(stream, fields, end_stream=True)
            # Forget the stream at once (the server's answers are not fed
            # back): the client would otherwise refuse more than its
            # concurrent-stream limit.
            client._stream_id_cache = None
            del client.streams[stream]
        chunks.append(client.data_to_send())
    return chunks


def run(root: str, chunks: list[bytes]) -> tuple[float, int]:
    """
    Serve the chunks once.

    @param root: The document root.
    @param chunks: The client's bytes.
    @return: Seconds spent in C{dataReceived}, and bytes answered.
    """
    from twisted.internet.task import Clock

    from netd.http.protocol import HTTPConnection
    from tests.httpsupport import connect, makeFactory

    clock = Clock()
    clock.advance(1_700_000_000)
    factory, context = makeFactory(None, clock, root=root)
    session, transport = connect(factory, context)
    transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
    http = session.wrappedProtocol
    assert isinstance(http, HTTPConnection)
    http.handshakeCompleted()
    session.dataReceived(chunks[0])
    transport.clear()
    received = session.dataReceived
    clear = transport.clear
    value = transport.value
    answered = 0
    perf = time.perf_counter
    spent = 0.0
    for chunk in chunks[1:]:
        start = perf()
        received(chunk)
        spent += perf() - start
        answered += len(value())
        clear()
    return spent, answered


def main(argv: list[str] | None = None) -> int:
    """
    Measure and print.

    @param argv: Command-line arguments.
    @return: The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024, help="file size")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="netd-h2-memory-")
    with open(os.path.join(root, "f.bin"), "wb") as f:
        f.write(os.urandom(args.size))
    chunks = clientBytes("/f.bin", args.requests, args.batch)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(root, chunks)
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(25)
        return 0
    best: Any = None
    for _ in range(args.rounds):
        spent, answered = run(root, chunks)
        best = spent if best is None else min(best, spent)
        if answered < args.requests * args.size:
            print(f"only {answered} bytes answered", file=sys.stderr)
            return 1
    print(
        f"{args.requests} requests of {args.size} bytes, {args.batch} per read: "
        f"{best / args.requests * 1e6:.2f} us per request (best of {args.rounds})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
