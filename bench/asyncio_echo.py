"""
The asyncio and uvloop columns of C{bench/compare.py}: the plainest TCP and
UDP echo servers on an asyncio event loop.

C{python bench/asyncio_echo.py PORT [--uvloop]} serves TCP echo and UDP echo
on 127.0.0.1:PORT with low-level protocols (no streams), on the standard
event loop or, with C{--uvloop}, on uvloop's, and prints one line once it is
listening.  It runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast


class TCPEcho(asyncio.Protocol):
    """
    Write every chunk received back to the sender.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class UDPEcho(asyncio.DatagramProtocol):
    """
    Send every datagram back to where it came from.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def serve(port: int, name: str) -> None:
    """
    Listen on C{port} and serve forever.

    @param port: the TCP and UDP port on 127.0.0.1.
    @param name: what to call this server on standard output.
    """
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TCPEcho, "127.0.0.1", port, backlog=4096)
    await loop.create_datagram_endpoint(UDPEcho, local_addr=("127.0.0.1", port))
    print(f"{name} listening on tcp+udp:127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    """
    @param argv: C{[program, port]} or C{[program, port, "--uvloop"]}.
    """
    if len(argv) not in (2, 3) or argv[2:] not in ([], ["--uvloop"]):
        sys.exit(f"usage: {argv[0]} PORT [--uvloop]")
    port = int(argv[1])
    if argv[2:]:
        import uvloop

        uvloop.run(serve(port, "uvloop"))
    else:
        asyncio.run(serve(port, "asyncio"))


if __name__ == "__main__":
    main(sys.argv)
