# -*- test-case-name: tests.test_chargen -*-
"""
The character generator service (RFC 864).

TCP: L{Chargen} sends the rotating pattern of RFC 864, 72 printable
characters and CR LF per line, each line starting one character further
along the ring of the 95 printable ASCII characters, until the client
closes. It is a pull producer registered on its transport: a chunk is made
only when the transport has sent the previous one, so it runs exactly as
fast as the client reads, and a client that never reads costs one chunk of
memory, not a growing buffer. The session layer's limits
(C{max_duration}, C{max_bytes}, C{idle_timeout}) apply as to every type.

UDP: each datagram that passes the filter and the L{ReplyGuard
<netd.reflection.ReplyGuard>} gets one datagram of a random length between
0 and C{udp_max_reply} (512 by default, the RFC's bound) characters of the
pattern, and never longer than the request's payload: chargen over UDP is
the classic amplifier and one end of the classic echo-chargen loop, so it
answers with no more bytes than it was sent (an empty request gets an empty
reply), behind the guard (see C{docs/security.md}).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocolFactory,
    IPullProducer,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols import wire
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.probe import ProbeFailed, ProbeTarget
from netd.reflection import guardedReplies, guardSettings
from netd.servicetype import ServiceContext, ServiceType
from netd.settings import Setting, integer

LINE_LENGTH = 72
# The 95 printable ASCII characters, starting where RFC 864's example does.
RING = bytes(range(33, 127)) + b" "


def patternLine(index: int) -> bytes:
    """
    One line of the RFC 864 pattern.

    @param index: The line number, from 0.
    @return: 72 characters starting at C{RING[index % 95]}, then CR LF.
    """
    start = index % len(RING)
    doubled = RING + RING
    return doubled[start : start + LINE_LENGTH] + b"\r\n"


# One full turn of the ring: 95 lines (7030 bytes), after which the pattern
# repeats exactly, so a stream of whole cycles is the pattern itself.
CYCLE = b"".join(patternLine(index) for index in range(len(RING)))
# What one resumeProducing writes: whole cycles, under Twisted's 64 KiB
# bufferSize, one bytes object made once.
CHUNK = CYCLE * 9


@implementer(IHalfCloseableProtocol, IPullProducer)
class Chargen(wire.Chargen):
    """
    RFC 864 over a stream: L{wire.Chargen}'s pull producer, writing the
    rotating pattern instead of one fixed line, stopping when the
    connection ends, and half-close aware so that a client's end of input
    ends the session instead of leaving it generating for ever.

    L{wire.Chargen.connectionMade} registers this protocol as a pull
    producer (C{streaming=False}): the transport calls L{resumeProducing}
    whenever it has written everything it had.

    @ivar produced: How many bytes this protocol has handed to its transport.
    """

    # Set by makeConnection: a TCP, TLS or session transport (with
    # producer registration and loseConnection).
    transport: Any

    produced = 0
    _stopped = False

    def resumeProducing(self) -> None:
        """
        The transport has sent everything: hand it one more chunk.
        """
        if self._stopped:
            return
        self.produced += len(CHUNK)
        self.transport.write(CHUNK)

    def stopProducing(self) -> None:
        """
        The connection is going away: produce nothing more.
        """
        self._stopped = True

    def readConnectionLost(self) -> None:
        """
        The client closed (or half-closed) its side: the session is over.
        """
        self._finish()

    def writeConnectionLost(self) -> None:
        """
        The client cannot receive any more: nothing left to do.
        """
        self._finish()

    def _finish(self) -> None:
        """
        Stop producing and close once what is queued is written.
        """
        self._stopped = True
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        @param reason: Why the connection ended.
        """
        self._stopped = True


def datagramAnswer(
    maxReply: int, randint: Callable[[int, int], int] = random.randint
) -> Callable[[bytes], bytes]:
    """
    Make the UDP reply maker of one listener.

    Successive replies start on successive lines of the pattern, as a TCP
    stream's lines do.

    @param maxReply: The longest reply, in characters.
    @param randint: Picks the length, as L{random.randint} does.
    @return: A function of the request payload to the reply: never longer
        than the payload, so chargen does not amplify.
    """
    state = {"line": 0}
    doubled = CYCLE + CYCLE[:maxReply]
    lineSize = LINE_LENGTH + 2

    def answer(data: bytes) -> bytes:
        line = state["line"]
        state["line"] = (line + 1) % len(RING)
        start = line * lineSize
        return doubled[start : start + randint(0, min(maxReply, len(data)))]

    return answer


def buildStreamFactory(context: ServiceContext) -> IProtocolFactory:
    """
    @param context: The service instance.
    @return: A factory of L{Chargen} protocols.
    """
    factory = Factory.forProtocol(Chargen)
    factory.noisy = False
    return factory


# Each UDP listener gets its own guard and its own rotation.
buildDatagramProtocol = guardedReplies(
    lambda context: datagramAnswer(context.settings["udp_max_reply"])
)


def chargenProbe(target: ProbeTarget) -> str:
    """
    Chargen: TCP sends the first lines of the pattern; UDP answers a
    datagram with a prefix of it (possibly empty: the length is random, at
    most the request's).

    @param target: The listener.
    @return: What was checked.
    @raise ProbeFailed: If what comes is not the pattern.
    """
    wanted = CYCLE[: 3 * (LINE_LENGTH + 2)]
    if target.transport == "datagram":
        reply = target.askDatagram(b"netd probe " * 8)
        if reply not in CYCLE + CYCLE:
            raise ProbeFailed(f"replied {reply[:40]!r}, not the pattern")
        return f"answered a datagram with {len(reply)} characters of the pattern"
    with target.connect() as skt:
        received = b""
        try:
            while len(received) < len(wanted):
                chunk = skt.recv(len(wanted) - len(received))
                if not chunk:
                    break
                received += chunk
        except OSError as e:
            raise ProbeFailed(f"reading failed: {e.strerror or e}") from None
    if received != wanted:
        raise ProbeFailed(f"sent {received[:40]!r}, not the RFC 864 pattern")
    return f"sent the pattern ({len(received)} bytes checked)"


chargen = ServiceType(
    name="chargen",
    description="RFC 864: a rotating character pattern, as fast as the client reads (TCP) or per datagram (UDP)",
    settings=guardSettings()
    + (
        Setting(
            "udp_max_reply",
            512,
            integer(0, 512),
            "longest UDP reply in characters (RFC 864: random 0-512); a reply is never longer than its request",
        ),
    ),
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=buildDatagramProtocol,
    probe=chargenProbe,
)
