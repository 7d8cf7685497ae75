# -*- test-case-name: tests.test_http3_e2e -*-
"""
A small HTTP/3 client on aioquic's asyncio C{connect()}: the real client of
netd's HTTP/3 end-to-end tests and of C{bench/h3_bench.py} (aioquic 1.7.2's
wheel ships no example client).

    python bench/h3client.py --port 8443 [--host 127.0.0.1]
        [--connections 1] [--requests 1] [--method GET] [--timeout 30]
        [--progress [--pause]] PATH [PATH ...]

Opens C{--connections} QUIC connections (certificate not verified: the
tests' certificates are self-signed), each sends C{--requests} requests,
one at a time, cycling through the paths. Prints one JSON object: per path
the status, length and sha256 of the last body received, the counts of
requests and failures, the elapsed time, the latency of each request
(seconds) and the C{GOAWAY}s received (the first stream ID each named).
With C{--progress}, writes C{receiving} to standard error once the first
body bytes arrive (a test can then stop netd mid-download); with
C{--pause} too, it then reads nothing more (no acknowledgement either, so
netd's sending stalls) until a line arrives on standard input.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import ssl
import sys
import time
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer, BufferReadError
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived


class ClientH3Connection(H3Connection):
    """
    aioquic's HTTP/3 client side, with two additions:
        - it checks a response's C{content-length} against its body even for
          C{HEAD} (whose response has the length of C{GET}'s and no body),
          and closes the connection: this one knows which of its streams
          asked C{HEAD} (C{headStreams});
        - it skips C{GOAWAY} unread: this one reads the server's control
          stream beside it and records the stream ID each C{GOAWAY} names
          (C{goaways}).
    """

    def __init__(self, quic: Any) -> None:
        super().__init__(quic)
        self.headStreams: set[int] = set()
        self.goaways: list[int] = []
        self._uni: dict[int, bytearray] = {}

    def _check_content_length(self, stream: Any) -> None:
        if stream.stream_id not in self.headStreams:
            super()._check_content_length(stream)

    def handle_event(self, event: QuicEvent) -> list[H3Event]:
        if isinstance(event, StreamDataReceived) and event.stream_id % 4 == 3:
            self._controlData(event.stream_id, event.data)
        return super().handle_event(event)

    def _controlData(self, streamId: int, data: bytes) -> None:
        """
        Read the frames of the server's control stream (the server-initiated
        unidirectional stream whose type, its first byte, is 0) for
        C{GOAWAY}.
        """
        pending = self._uni.setdefault(streamId, bytearray())
        pending += data
        if not pending:
            return
        if pending[0] != 0:
            # Another kind of stream (QPACK's): not read.
            self._uni[streamId] = bytearray(b"\xff")
            return
        buf = Buffer(data=bytes(pending))
        buf.seek(1)
        whole = 1
        while not buf.eof():
            try:
                frameType = buf.pull_uint_var()
                payload = buf.pull_bytes(buf.pull_uint_var())
            except BufferReadError:
                break
            if frameType == FrameType.GOAWAY:
                self.goaways.append(Buffer(data=payload).pull_uint_var())
            whole = buf.tell()
        # Keep the stream type and what is not yet a whole frame.
        del pending[1:whole]


class H3Client(QuicConnectionProtocol):
    """
    One HTTP/3 connection: L{get} sends a request and waits for its end.

    @cvar progress: Whether to announce the first body bytes (C{--progress}).
    @cvar announced: Whether they were announced (by any connection).
    """

    progress = False
    pause = False
    announced = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = ClientH3Connection(self._quic)
        self.waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.status: dict[int, int] = {}
        self.bodies: dict[int, bytearray] = {}
        self.heads: set[int] = set()

    def quic_event_received(self, event: QuicEvent) -> None:
        """
        Collect each stream's status and body.

        @param event: A QUIC event.
        """
        for h3Event in self.h3.handle_event(event):
            if isinstance(h3Event, HeadersReceived):
                fields = dict(h3Event.headers)
                self.status[h3Event.stream_id] = int(fields[b":status"])
                self.bodies.setdefault(h3Event.stream_id, bytearray())
            elif isinstance(h3Event, DataReceived):
                self.bodies.setdefault(h3Event.stream_id, bytearray()).extend(
                    h3Event.data
                )
                if H3Client.progress and h3Event.data and not H3Client.announced:
                    H3Client.announced = True
                    sys.stderr.write("receiving\n")
                    sys.stderr.flush()
                    if H3Client.pause:
                        # Blocks the event loop on purpose: see --pause.
                        sys.stdin.readline()
            else:
                continue
            if h3Event.stream_ended:
                waiter = self.waiting.pop(h3Event.stream_id, None)
                if waiter is not None and not waiter.done():
                    body = bytes(self.bodies.pop(h3Event.stream_id, b""))
                    waiter.set_result((self.status.pop(h3Event.stream_id), body))

    async def get(self, authority: str, path: str, method: str) -> tuple[int, bytes]:
        """
        @param authority: The C{:authority}.
        @param path: The target.
        @param method: C{GET} or C{HEAD}.
        @return: The status and the body.
        """
        streamId = self._quic.get_next_available_stream_id()
        if method == "HEAD":
            self.h3.headStreams.add(streamId)
        self.h3.send_headers(
            streamId,
            [
                (b":method", method.encode()),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"user-agent", b"netd-h3client"),
            ],
            end_stream=True,
        )
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[streamId] = waiter
        self.transmit()
        return await waiter


async def run(options: argparse.Namespace) -> dict[str, Any]:
    """
    @param options: The command line.
    @return: The report.
    """
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=list(H3_ALPN),
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
        idle_timeout=options.timeout,
    )
    results: dict[str, Any] = {}
    latencies: list[float] = []
    goaways: list[int] = []
    failures = 0
    H3Client.progress = options.progress
    H3Client.pause = options.pause
    authority = f"{options.host}:{options.port}"

    async def one(index: int) -> None:
        nonlocal failures
        async with connect(
            options.host,
            options.port,
            configuration=configuration,
            create_protocol=H3Client,
        ) as client:
            assert isinstance(client, H3Client)
            for n in range(options.requests):
                path = options.paths[(index + n) % len(options.paths)]
                started = time.perf_counter()
                try:
                    status, body = await client.get(authority, path, options.method)
                except Exception:
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - started)
                results[path] = {
                    "status": status,
                    "length": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                }
            goaways.extend(client.h3.goaways)

    started = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(one(i) for i in range(options.connections))),
        options.timeout,
    )
    return {
        "paths": results,
        "requests": len(latencies),
        "failures": failures,
        "elapsed": time.perf_counter() - started,
        "latencies": latencies,
        "goaways": goaways,
    }


def main(argv: list[str]) -> int:
    """
    @param argv: The arguments.
    @return: The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--method", default="GET", choices=("GET", "HEAD"))
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--pause", action="store_true")
    parser.add_argument("paths", nargs="+")
    options = parser.parse_args(argv)
    report = asyncio.run(run(options))
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0 if not report["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
