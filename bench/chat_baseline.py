"""
The minimal Twisted chat bench/chat.py compares netd's chat service with: a
LineReceiver that writes every line it receives to every other client, and
nothing else (no nicknames, rooms, sanitising, flood control or limits).

C{python bench/chat_baseline.py PORT [--nodelay]}: listens on 127.0.0.1.
With C{--nodelay} each connection turns Nagle's algorithm off, as netd does.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


class Chat(LineReceiver):
    delimiter = b"\n"

    def connectionMade(self) -> None:
        if self.factory.nodelay:
            self.transport.setTcpNoDelay(True)
        self.factory.clients.add(self)

    def connectionLost(self, reason: object = None) -> None:
        self.factory.clients.discard(self)

    def lineReceived(self, line: bytes) -> None:
        data = line + b"\n"
        for client in self.factory.clients:
            if client is not self:
                client.transport.write(data)


def main() -> None:
    factory = Factory.forProtocol(Chat)
    factory.clients = set()
    factory.nodelay = "--nodelay" in sys.argv[2:]
    factory.noisy = False
    reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1")
    print("baseline chat listening", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
