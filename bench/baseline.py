"""
The benchmark's baseline: the plainest Twisted echo and discard servers.

C{python bench/baseline.py ECHO_PORT DISCARD_PORT} serves
L{twisted.protocols.wire.Echo} on TCP C{ECHO_PORT}, a UDP echo on
C{ECHO_PORT} and L{twisted.protocols.wire.Discard} on TCP C{DISCARD_PORT},
all on 127.0.0.1 only, with the default reactor (as C{twistd} would use), and
prints one line once it is listening.  C{bench/run.py} measures netd against
it: whatever netd adds on top of these few lines is what the ratio shows.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.protocols import wire


class UDPEcho(DatagramProtocol):
    """
    Send every datagram back to where it came from.
    """

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.write(data, addr)


def main(argv: list[str]) -> None:
    """
    Listen on the ports named in C{argv} and run the reactor.

    @param argv: C{[program, echoPort, discardPort]}.
    """
    if len(argv) != 3:
        sys.exit(f"usage: {argv[0]} ECHO_PORT DISCARD_PORT")
    echoPort, discardPort = int(argv[1]), int(argv[2])
    reactor.listenTCP(echoPort, Factory.forProtocol(wire.Echo), interface="127.0.0.1")
    reactor.listenUDP(echoPort, UDPEcho(), interface="127.0.0.1")
    reactor.listenTCP(
        discardPort, Factory.forProtocol(wire.Discard), interface="127.0.0.1"
    )
    print(
        f"baseline listening on tcp+udp:127.0.0.1:{echoPort} (echo) "
        f"and tcp:127.0.0.1:{discardPort} (discard)",
        flush=True,
    )
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
