# -*- test-case-name: tests.test_daytime -*-
"""
The daytime service (RFC 867): the date and time as a line of text.

TCP: L{Daytime} writes one line and closes. UDP: each datagram that passes
the filter and the L{ReplyGuard<netd.reflection.ReplyGuard>} gets the same
line back, whatever it contained. The time is the service's reactor's
C{seconds()}, so tests run on a L{task.Clock<twisted.internet.task.Clock>}.

RFC 867 leaves the format open; the default is C{ctime()}'s, as inetd
sends, with the zone name added (C{Mon Dec  7 06:13:24 2026 UTC}), in UTC
unless C{utc = false}. C{format} takes any C{strftime} format.

L{wire.Daytime<twisted.protocols.wire.Daytime>} is not reused: it adds
C{str} to C{bytes} (a L{TypeError} on Python 3) and reads the wall clock
instead of the injected reactor.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol

from netd.probe import ProbeFailed, ProbeTarget
from netd.reflection import guardedReplies, guardSettings
from netd.servicetype import ServiceContext, ServiceType
from netd.settings import Setting, boolean, describe

DEFAULT_FORMAT = "%a %b %e %H:%M:%S %Y %Z"
MAX_LINE = 256


def strftimeFormat(value: Any) -> str:
    """
    Accept a C{strftime} format that makes one printable line.

    @param value: The raw value.
    @return: The format.
    @raise ValueError: If it is not a string, is empty, has a line break or
        a control character, or makes a line longer than 256 characters.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty strftime format, got {describe(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("expected one line, without control characters")
    try:
        sample = datetime.datetime(2026, 12, 31, 23, 59, 59).strftime(value)
    except (ValueError, UnicodeError) as e:
        raise ValueError(f"not a strftime format: {e}") from None
    if len(sample) > MAX_LINE:
        raise ValueError(f"makes lines of {len(sample)} characters, over {MAX_LINE}")
    return value


def daytimeLine(seconds: float, format: str, utc: bool) -> bytes:
    """
    @param seconds: A POSIX time.
    @param format: A C{strftime} format.
    @param utc: Whether to show it in UTC (else in the local time zone).
    @return: The line, with CR LF, in ASCII (other characters become C{?}).
    """
    if utc:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    else:
        moment = datetime.datetime.fromtimestamp(seconds).astimezone()
    return moment.strftime(format).encode("ascii", "replace") + b"\r\n"


def lineMaker(context: ServiceContext) -> Callable[[], bytes]:
    """
    @param context: The service instance.
    @return: A function making the current line on the instance's clock.
    """
    seconds = context.reactor.seconds
    format = context.settings["format"]
    utc = context.settings["utc"]
    return lambda: daytimeLine(seconds(), format, utc)


class Daytime(Protocol):
    """
    RFC 867 over a stream: one line, then close.

    @ivar line: Makes the line.
    """

    # Set by makeConnection: a TCP, TLS or session transport (with
    # producer registration and loseConnection).
    transport: Any

    def __init__(self, line: Callable[[], bytes]) -> None:
        self.line = line

    def connectionMade(self) -> None:
        """
        Send the line and close once it is written.
        """
        self.transport.write(self.line())
        self.transport.loseConnection()


def buildStreamFactory(context: ServiceContext) -> IProtocolFactory:
    """
    @param context: The service instance.
    @return: A factory of L{Daytime} protocols.
    """
    factory = Factory()
    factory.protocol = partial(Daytime, lineMaker(context))
    factory.noisy = False
    return factory


def datagramAnswer(context: ServiceContext) -> Callable[[bytes], bytes]:
    """
    @param context: The service instance.
    @return: The UDP reply maker: the current line, whatever the request.
    """
    line = lineMaker(context)
    return lambda data: line()


buildDatagramProtocol = guardedReplies(datagramAnswer)


def daytimeProbe(target: ProbeTarget) -> str:
    """
    Daytime: one line of printable text (over TCP, then the end of the
    stream).

    @param target: The listener.
    @return: The line.
    @raise ProbeFailed: If no such line comes.
    """
    if target.transport == "datagram":
        reply = target.askDatagram(b"probe")
    else:
        with target.connect() as skt:
            reply = b""
            try:
                for _ in range(MAX_LINE):
                    chunk = skt.recv(MAX_LINE + 2)
                    if not chunk:
                        break
                    reply += chunk
            except OSError as e:
                why = "timed out" if isinstance(e, socket.timeout) else e
                raise ProbeFailed(f"no line: {why}") from None
    text = reply.rstrip(b"\r\n")
    if not reply.endswith(b"\n") or not text or not text.isascii() or b"\n" in text:
        raise ProbeFailed(f"sent {reply[:60]!r}, not one line")
    return f"sent {text.decode('ascii')!r}"


daytime = ServiceType(
    name="daytime",
    description="RFC 867: the date and time as a line of text, over TCP and UDP",
    settings=guardSettings()
    + (
        Setting(
            "format",
            DEFAULT_FORMAT,
            strftimeFormat,
            "strftime format of the line (default: ctime's, as inetd, plus the zone)",
        ),
        Setting(
            "utc",
            True,
            boolean,
            "show the time in UTC (false: in netd's local time zone)",
        ),
    ),
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=buildDatagramProtocol,
    probe=daytimeProbe,
)
