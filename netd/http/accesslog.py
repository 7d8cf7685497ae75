# -*- test-case-name: tests.test_http -*-
"""
The access log: one record per request, in Combined Log Format to a file,
and/or as a structured C{twisted.logger} event.

Both are off by default, and then nothing at all is done per request. The
file is written through a buffer that is flushed once a second (by the http
service's clock), when it holds 64 KiB, and at shutdown, so that a busy
server makes one C{write} per second rather than one per request. When the
file is moved away (log rotation), the next flush notices and opens a new
one.
"""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.logger import Logger

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun") + (
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_FLUSH_SIZE = 64 * 1024
_ESCAPES = {i: f"\\x{i:02x}" for i in [*range(0x20), *range(0x7F, 0x100)]}
_ESCAPES[ord('"')] = '\\"'
_ESCAPES[ord("\\")] = "\\\\"


def escape(value: bytes) -> str:
    """
    Make request bytes safe for a log line: no quotes, no control bytes, no
    newlines, nothing outside ASCII.

    @param value: The bytes.
    @return: Printable ASCII.
    """
    text = value.decode("latin-1")
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return text.translate(_ESCAPES)


_stampSecond = -1
_stamp = ""


def _timestamp(when: float) -> str:
    """
    The CLF time of a moment, computed once per second.

    @param when: Seconds since the epoch.
    @return: C{10/Oct/2000:13:55:36 +0000}.
    """
    global _stampSecond, _stamp
    second = int(when)
    if second != _stampSecond:
        t = time.gmtime(second)
        _stamp = (
            f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
        )
        _stampSecond = second
    return _stamp


def combinedLogLine(
    peer: str,
    method: bytes,
    target: bytes,
    version: str,
    status: int,
    sent: int,
    referer: bytes,
    userAgent: bytes,
    when: float,
) -> str:
    """
    Format one request in the Combined Log Format (Apache's C{combined}).

    @param peer: The client's address.
    @param method: The request method.
    @param target: The request target, as received.
    @param version: C{"1.1"}, C{"1.0"}, ...
    @param status: The response status.
    @param sent: Body bytes sent.
    @param referer: The C{Referer} header, or C{b""}.
    @param userAgent: The C{User-Agent} header, or C{b""}.
    @param when: When the request began (seconds since the epoch).
    @return: One line, with its newline.
    """
    return (
        f'{peer} - - [{_timestamp(when)}] "{escape(method)} {escape(target)} '
        f'HTTP/{version}" {status} {sent or "-"} '
        f'"{escape(referer) if referer else "-"}" '
        f'"{escape(userAgent) if userAgent else "-"}"\n'
    )


class AccessLog:
    """
    Where a service's access records go.

    @ivar service: The service name, for events.
    @ivar path: The Combined Log Format file, or L{None}.
    @ivar events: Whether each record is also a C{twisted.logger} event.
    """

    _log = Logger()

    def __init__(self, service: str, path: str | None, events: bool) -> None:
        self.service = service
        self.path = path
        self.events = events
        self._fd: int | None = None
        self._buffer: list[str] = []
        self._buffered = 0

    @property
    def enabled(self) -> bool:
        """
        Whether anything is recorded at all.
        """
        return self.path is not None or self.events

    def open(self) -> None:
        """
        Open the file (at start-up, before privileges are dropped).

        @raise OSError: If it cannot be opened.
        """
        if self.path is not None and self._fd is None:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
            )

    def record(
        self,
        peer: str,
        method: bytes,
        target: bytes,
        version: str,
        status: int,
        sent: int,
        duration: float,
        referer: bytes,
        userAgent: bytes,
        when: float,
    ) -> None:
        """
        Record one request.

        @param peer: The client's address.
        @param method: The request method.
        @param target: The request target, as received.
        @param version: C{"1.1"}, C{"1.0"}, ...
        @param status: The response status.
        @param sent: Body bytes sent.
        @param duration: Seconds from the first byte of the request to the
            last byte of the response handed to the transport.
        @param referer: The C{Referer} header, or C{b""}.
        @param userAgent: The C{User-Agent} header, or C{b""}.
        @param when: When the request began (seconds since the epoch).
        """
        if self.events:
            self._log.info(
                '{service} {peer} "{method} {target} HTTP/{version}" {status} {bytes}',
                service=self.service,
                peer=peer,
                method=escape(method),
                target=escape(target),
                version=version,
                status=status,
                bytes=sent,
                duration=round(duration, 6),
                referer=escape(referer),
                userAgent=escape(userAgent),
            )
        if self.path is not None:
            line = combinedLogLine(
                peer, method, target, version, status, sent, referer, userAgent, when
            )
            self._buffer.append(line)
            self._buffered += len(line)
            if self._buffered >= _FLUSH_SIZE:
                self.flush()

    def flush(self) -> None:
        """
        Write what is buffered; reopen the file if it was rotated away.
        """
        if not self._buffer or self.path is None:
            return
        data = "".join(self._buffer).encode("utf-8")
        self._buffer.clear()
        self._buffered = 0
        try:
            self._reopenIfMoved()
            if self._fd is None:
                self.open()
            assert self._fd is not None
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as e:
            self._log.error(
                "{service} cannot write its access log {path}: {error}",
                service=self.service,
                path=self.path,
                error=e.strerror or str(e),
            )

    def _reopenIfMoved(self) -> None:
        """
        Close the file if the path no longer names it (rotated).
        """
        if self._fd is None or self.path is None:
            return
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(self._fd)
        if current is None or (current.st_dev, current.st_ino) != (
            mine.st_dev,
            mine.st_ino,
        ):
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """
        Flush and close (at shutdown).
        """
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def describeHost(address: Any) -> str:
    """
    The client part of a log line: its IP address, or C{unix}.

    @param address: An L{IAddress} provider.
    @return: The host.
    """
    return getattr(address, "host", None) or "unix"
