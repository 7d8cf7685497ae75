# -*- test-case-name: tests.test_timeservice -*-
"""
The time service (RFC 868): the time as 4 bytes, seconds since 1900.

TCP: L{Time} writes the 32-bit big-endian count of seconds since
1900-01-01 00:00 UTC and closes. UDP: each datagram that passes the filter
and the L{ReplyGuard<netd.reflection.ReplyGuard>} gets those 4 bytes. The
time is the service's reactor's C{seconds()}.

The count is modulo 2**32 (L{rfc868Seconds}): it wraps to 0 at
2036-02-07 06:28:16 UTC (L{WRAP}), and a client must pick the era nearest
its own idea of the time, as L{fromRfc868Seconds} does. The RFC defines
nothing else, and a 4-byte field cannot carry more.

The module is C{timeservice}, not C{time}, so that C{netd.services.time}
never reads as the standard library's C{time} in imports and tracebacks.
L{wire.Time<twisted.protocols.wire.Time>} is not reused: it sends signed
seconds since 1970, not RFC 868's unsigned seconds since 1900, from the wall
clock instead of the injected reactor.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol

from netd.probe import ProbeFailed, ProbeTarget
from netd.reflection import guardedReplies, guardSettings
from netd.servicetype import ServiceContext, ServiceType

# Seconds from 1900-01-01 00:00 UTC to the POSIX epoch (RFC 868's own
# example: 2,208,988,800 is 00:00 1 January 1970 GMT).
EPOCH_OFFSET = 2_208_988_800
ERA = 2**32
# The POSIX time at which the count wraps to 0: 2036-02-07 06:28:16 UTC.
WRAP = ERA - EPOCH_OFFSET
# How far from the probe's clock the answer may be.
PROBE_TOLERANCE = 10.0


def rfc868Seconds(seconds: float) -> int:
    """
    @param seconds: A POSIX time.
    @return: Whole seconds since 1900-01-01 UTC, modulo 2**32 (RFC 868).
    """
    return (math.floor(seconds) + EPOCH_OFFSET) % ERA


def fromRfc868Seconds(value: int, near: float) -> int:
    """
    Undo L{rfc868Seconds}, choosing the 136-year era nearest a known time.

    @param value: An RFC 868 count.
    @param near: A POSIX time the answer should be close to.
    @return: The POSIX time.
    """
    base = value - EPOCH_OFFSET
    return base + ERA * round((near - base) / ERA)


def encode(seconds: float) -> bytes:
    """
    @param seconds: A POSIX time.
    @return: The 4 bytes RFC 868 sends for it.
    """
    return struct.pack("!I", rfc868Seconds(seconds))


class Time(Protocol):
    """
    RFC 868 over a stream: 4 bytes, then close.

    @ivar clock: Returns the current POSIX time.
    """

    # Set by makeConnection: a TCP, TLS or session transport (with
    # producer registration and loseConnection).
    transport: Any

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock

    def connectionMade(self) -> None:
        """
        Send the time and close once it is written.
        """
        self.transport.write(encode(self.clock()))
        self.transport.loseConnection()


def buildStreamFactory(context: ServiceContext) -> IProtocolFactory:
    """
    @param context: The service instance.
    @return: A factory of L{Time} protocols.
    """
    factory = Factory()
    factory.protocol = partial(Time, context.reactor.seconds)
    factory.noisy = False
    return factory


def datagramAnswer(context: ServiceContext) -> Callable[[bytes], bytes]:
    """
    @param context: The service instance.
    @return: The UDP reply maker: the current time, whatever the request.
    """
    clock = context.reactor.seconds
    return lambda data: encode(clock())


buildDatagramProtocol = guardedReplies(datagramAnswer)


def timeProbe(target: ProbeTarget, clock: Callable[[], float] = time.time) -> str:
    """
    Time: exactly 4 bytes (over TCP, then the end of the stream) that decode
    to within 10 seconds of this host's clock.

    @param target: The listener.
    @param clock: This host's clock.
    @return: The time received.
    @raise ProbeFailed: If the answer is not 4 bytes near now.
    """
    if target.transport == "datagram":
        reply = target.askDatagram(b"")
    else:
        with target.connect() as skt:
            reply = b""
            try:
                for _ in range(5):
                    chunk = skt.recv(5)
                    if not chunk:
                        break
                    reply += chunk
            except OSError as e:
                raise ProbeFailed(f"no answer: {e.strerror or e}") from None
    if len(reply) != 4:
        raise ProbeFailed(f"sent {len(reply)} bytes ({reply[:8]!r}), not 4")
    now = clock()
    seconds = fromRfc868Seconds(struct.unpack("!I", reply)[0], now)
    if abs(seconds - now) > PROBE_TOLERANCE:
        raise ProbeFailed(f"sent a time {seconds - now:+.0f}s from this host's")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
    return f"sent {stamp}"


timeService = ServiceType(
    name="time",
    description="RFC 868: the time as 4 bytes, seconds since 1900 (mod 2**32), over TCP and UDP",
    settings=guardSettings(),
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=buildDatagramProtocol,
    probe=timeProbe,
)
