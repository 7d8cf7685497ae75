# -*- test-case-name: tests.test_chat_udp -*-
"""
The chat service over UDP: each datagram is one line or command.

A source address (host and port) becomes a member when it sets a nickname
with C{/nick NAME}; from then on it is a L{ChatSession} like any TCP client,
in the same rooms, under the same flood control. A member that sends
nothing for C{udp_member_timeout} seconds leaves. Members count against the
service's C{max_sessions} and C{max_sessions_per_peer} limits.

UDP source addresses can be forged, so netd never sends a source more than
it sent: each source has a byte credit, what it sent (at most
C{udp_credit_limit} banked), and a datagram that does not fit the credit is
dropped and counted. A member that wants to receive a busy room keeps
sending (any datagram counts; an empty line is not relayed). A source that
has not joined gets at most one short reply, and only if it is no larger
than the datagram that asked for it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.task import LoopingCall
from zope.interface import implementer

from netd.chat.commands import ChatServer, ChatSession, IChatFrontEnd
from netd.chat.hub import EventBatch
from netd.datagrams import ServiceDatagramProtocol
from netd.servicetype import ServiceContext

#: The one reply a source that has not joined may get.
HINT = b"*** /nick NAME to join\r\n"

#: How many sources that have had their one reply are remembered.
MAX_REMEMBERED = 65536


def describeSource(addr: Any) -> str:
    """
    @param addr: A datagram's C{(host, port, ...)}.
    @return: C{"host:port"}, or C{"[host]:port"} for IPv6.
    """
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@implementer(IChatFrontEnd)
class UDPClient:
    """
    One UDP source with a session.

    @ivar protocol: The listener's protocol.
    @ivar addr: The source address (what replies go to).
    @ivar credit: Bytes it may still be sent.
    @ivar lastSeen: When it last sent a datagram.
    @ivar session: Its L{ChatSession}.
    """

    def __init__(
        self, protocol: ChatDatagramProtocol, addr: Any, credit: int, now: float
    ) -> None:
        self.protocol = protocol
        self.addr = addr
        self.key = (addr[0], addr[1])
        self.credit = credit
        self.lastSeen = now
        self.session = ChatSession(
            protocol.server, self, describeSource(addr), "udp", echo=False
        )

    def writeBatch(self, batch: EventBatch) -> None:
        """
        Send each event's line as a datagram, as far as the credit allows.

        @param batch: The events.
        """
        for event in batch.events:
            self._send(event.data)

    def writeNotice(self, text: str) -> None:
        """
        Send a line from the server, if the credit allows.

        @param text: The line.
        """
        self._send(text.encode("utf-8") + b"\r\n")

    def _send(self, data: bytes) -> None:
        """
        Send a datagram within the source's credit (and, before it has
        joined, only as its one reply).

        @param data: The payload.
        """
        protocol = self.protocol
        if len(data) > self.credit:
            protocol.drop("reply larger than what the source sent", self.addr[0])
            return
        if self.session.nick is None and not protocol.firstReply(self.key):
            protocol.drop("source has not joined", self.addr[0])
            return
        self.credit -= len(data)
        protocol.reply(data, self.addr)

    def disconnect(self, abort: bool) -> None:
        """
        Forget the source.

        @param abort: Ignored: nothing is pending.
        """
        self.protocol.forget(self)


class ChatDatagramProtocol(ServiceDatagramProtocol):
    """
    A chat service's UDP listener.

    @ivar server: The chat service.
    @ivar clients: Sources with a session, by C{(host, port)}.
    """

    def __init__(self, context: ServiceContext, server: ChatServer) -> None:
        super().__init__(context)
        self.server = server
        self.clients: dict[tuple[str, int], UDPClient] = {}
        self._replied: OrderedDict[tuple[str, int], None] = OrderedDict()
        settings = server.settings
        self._maxLine = settings.maxLineLength
        self._creditLimit = settings.udpCreditLimit
        self._timeout = settings.udpMemberTimeout
        self._sweeper: LoopingCall | None = None

    def startProtocol(self) -> None:
        """
        Start expiring silent members.
        """
        self._sweeper = LoopingCall(self.expire)
        self._sweeper.clock = self.context.reactor
        self._sweeper.start(min(5.0, self._timeout / 2), now=False)

    def stopProtocol(self) -> None:
        """
        Stop expiring; every member leaves.
        """
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        for client in list(self.clients.values()):
            client.session.end("server shutting down")
            self.forget(client)

    def serviceDatagram(self, data: bytes, addr: Any) -> None:
        """
        Handle one line or command from a source.

        @param data: The datagram.
        @param addr: Its source.
        """
        key = (addr[0], addr[1])
        client = self.clients.get(key)
        line = data[:-1] if data[-1:] == b"\n" else data
        if line[-1:] == b"\r":
            line = line[:-1]
        if client is None:
            self._stranger(data, line, addr, key)
            return
        credit = client.credit + len(data)
        client.credit = credit if credit < self._creditLimit else self._creditLimit
        client.lastSeen = self.context.reactor.seconds()
        if len(line) > self._maxLine:
            client.session.lineTooLong()
        else:
            client.session.lineReceived(line)

    def _stranger(self, data: bytes, line: bytes, addr: Any, key: Any) -> None:
        """
        A datagram from a source that has not joined: C{/nick NAME} makes it
        a member; anything else gets at most one short reply.

        @param data: The datagram.
        @param line: Its line.
        @param addr: Its source.
        @param key: C{(host, port)}.
        """
        head = line[:6].lower()
        if not (head == b"/nick " and len(line) <= self._maxLine):
            self.drop("source has not joined", addr[0])
            if len(HINT) <= len(data) and self.firstReply(key):
                self.reply(HINT, addr)
            return
        policy = self.server.policy
        host = addr[0]
        if policy is not None and not policy.admit(host):
            self.counters.datagramsDropped += 1
            return
        client = UDPClient(
            self,
            addr,
            min(len(data), self._creditLimit),
            self.context.reactor.seconds(),
        )
        self.clients[key] = client
        client.session.lineReceived(line)
        client.session.whenIdle().addCallback(lambda _: self._settle(client))

    def _settle(self, client: UDPClient) -> None:
        """
        After its C{/nick}: a source that did not get a nickname is
        forgotten; one that did has joined.

        @param client: The source.
        """
        if client.session.nick is None:
            client.session.end("no nickname")
            self.forget(client)
        else:
            self._replied.pop(client.key, None)

    def firstReply(self, key: tuple[str, int]) -> bool:
        """
        Whether a source that has not joined may have its one reply (and
        record that it had it).

        @param key: The source.
        @return: C{True} the first time.
        """
        if key in self._replied:
            return False
        if len(self._replied) >= MAX_REMEMBERED:
            self._replied.popitem(last=False)
        self._replied[key] = None
        return True

    def forget(self, client: UDPClient) -> None:
        """
        Drop a source's session and release its admission.

        @param client: The source.
        """
        if self.clients.get(client.key) is client:
            del self.clients[client.key]
            if self.server.policy is not None:
                self.server.policy.release(client.addr[0])

    def expire(self) -> None:
        """
        Members silent for C{udp_member_timeout} seconds leave.
        """
        deadline = self.context.reactor.seconds() - self._timeout
        for client in [c for c in self.clients.values() if c.lastSeen <= deadline]:
            client.session.end("timed out")
            self.forget(client)
