# -*- test-case-name: tests.test_http -*-
"""
The pieces of HTTP responses that do not depend on a connection: status
lines, HTTP dates, error responses built once, conditional requests
(RFC 9110 section 13) and byte ranges (RFC 9110 section 14).

Everything here is computed once where it can be, so that answering a
request is mostly joining pre-built bytes.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from collections.abc import Iterable
from email.utils import formatdate

STATUS_REASONS = {
    100: "Continue",
    200: "OK",
    206: "Partial Content",
    301: "Moved Permanently",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

STATUS_LINES = {
    code: f"HTTP/1.1 {code} {reason}\r\n".encode("ascii")
    for code, reason in STATUS_REASONS.items()
}

CLOSE = b"Connection: close\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"
ALLOW = b"Allow: GET, HEAD\r\n"


def httpDate(when: float) -> str:
    """
    Format a time as an IMF-fixdate (C{Sun, 06 Nov 1994 08:49:37 GMT}).

    @param when: Seconds since the epoch.
    @return: The date.
    """
    return formatdate(when, usegmt=True)


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun")
        + ("jul", "aug", "sep", "oct", "nov", "dec"),
        1,
    )
}
_IMF_DATE = re.compile(
    rb"^\s*(?:[A-Za-z]{3,9},\s*)?(\d{1,2})[ -]([A-Za-z]{3})[ -](\d{2,4})\s+"
    rb"(\d{2}):(\d{2}):(\d{2})\s*(?:GMT|UTC)?\s*$"
)
_ASCTIME = re.compile(
    rb"^\s*[A-Za-z]{3}\s+([A-Za-z]{3})\s+(\d{1,2})\s+"
    rb"(\d{2}):(\d{2}):(\d{2})\s+(\d{4})\s*$"
)


def parseHTTPDate(value: bytes) -> int | None:
    """
    Parse an HTTP date in any of the three forms RFC 9110 requires a
    recipient to accept (IMF-fixdate, RFC 850, asctime).

    @param value: The header value.
    @return: Seconds since the epoch, or L{None} if it is not a date (an
        invalid date is ignored, as RFC 9110 says).
    """
    if len(value) > 64:
        return None
    match = _IMF_DATE.match(value)
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
    else:
        match = _ASCTIME.match(value)
        if match is None:
            return None
        month, day, hour, minute, second, year = match.groups()
    monthNumber = _MONTHS.get(month.decode("ascii").lower())
    if monthNumber is None:
        return None
    yearNumber = int(year)
    if yearNumber < 100:
        yearNumber += 2000 if yearNumber < 70 else 1900
    try:
        when = datetime(
            yearNumber,
            monthNumber,
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),
            tzinfo=timezone.utc,
        )
    except (ValueError, OverflowError):
        return None
    return int(when.timestamp())


def headerLines(headers: Iterable[tuple[str, str]]) -> bytes:
    """
    Serialize header fields.

    @param headers: C{(name, value)} pairs, already checked.
    @return: C{Name: value\\r\\n} lines.
    """
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)


def errorResponse(status: int, extra: bytes, close: bool) -> bytes:
    """
    Build a complete error response, except its C{Date} line.

    The body is one short line of text: never a traceback, never an echo of
    the request.

    @param status: The status code.
    @param extra: Pre-built header lines added to every response.
    @param close: Whether to announce C{Connection: close}.
    @return: The header lines after C{Date}, the blank line and the body.
    """
    body = f"{status} {STATUS_REASONS[status]}\n".encode("ascii")
    headers = (
        extra
        + b"Content-Type: text/plain; charset=utf-8\r\n"
        + b"Content-Length: "
        + str(len(body)).encode("ascii")
        + b"\r\n"
    )
    if status == 405:
        headers += ALLOW
    if close:
        headers += CLOSE
    return headers + b"\r\n" + body


def etagMatches(header: bytes, etag: bytes) -> bool:
    """
    Evaluate C{If-None-Match} with the weak comparison of RFC 9110 13.1.2.

    @param header: The C{If-None-Match} value(s), comma-joined.
    @param etag: The current entity tag, quoted.
    @return: C{True} if any listed tag matches (or the list is C{*}).
    """
    if header.strip() == b"*":
        return True
    for candidate in header.split(b","):
        candidate = candidate.strip()
        if candidate.startswith(b"W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def etagMatchesStrongly(header: bytes, etag: bytes) -> bool:
    """
    Evaluate C{If-Match} with the strong comparison of RFC 9110 13.1.1.

    @param header: The C{If-Match} value(s), comma-joined.
    @param etag: The current entity tag, quoted (a strong one).
    @return: C{True} if the list is C{*} or names the current tag; a weak
        tag (C{W/"..."}) never matches.
    """
    if header.strip() == b"*":
        return True
    return any(candidate.strip() == etag for candidate in header.split(b","))


def modifiedSince(header: bytes, mtime: int) -> bool:
    """
    Evaluate C{If-Unmodified-Since} (RFC 9110 13.1.4): whether it fails.

    @param header: Its value.
    @param mtime: The file's modification time, whole seconds.
    @return: C{True} if the file changed after that date; C{False} if not,
        or if the date cannot be read (the header is then ignored).
    """
    date = parseHTTPDate(header)
    return date is not None and mtime > date


def notModifiedSince(header: bytes, mtime: int) -> bool:
    """
    Evaluate C{If-Modified-Since}.

    @param header: Its value.
    @param mtime: The file's modification time, whole seconds.
    @return: C{True} if the file has not changed since that date.
    """
    date = parseHTTPDate(header)
    return date is not None and mtime <= date


def ifRangeHolds(header: bytes, etag: bytes, lastModified: bytes) -> bool:
    """
    Evaluate C{If-Range} (RFC 9110 13.1.5): the range applies only if the
    validator still matches, strongly.

    @param header: The C{If-Range} value.
    @param etag: The current entity tag, quoted.
    @param lastModified: The current C{Last-Modified} value.
    @return: Whether to honour C{Range}.
    """
    header = header.strip()
    if header.startswith(b'"'):
        return header == etag
    if header.startswith(b"W/"):
        return False
    return header == lastModified


UNSATISFIABLE = (-1, -1)
_RANGE = re.compile(rb"^\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$")


def parseRange(header: bytes, size: int) -> tuple[int, int] | None:
    """
    Interpret a C{Range} header against a representation's size.

    Only a single range is honoured. Several ranges are ignored (the whole
    representation is sent, C{200}), as RFC 9110 allows: a response is then
    never larger than the file, however the ranges overlap.

    @param header: The C{Range} value.
    @param size: The file size.
    @return: C{(first, last)} byte positions (inclusive) to send with
        C{206}; L{UNSATISFIABLE} for C{416}; or L{None} to ignore the header
        (malformed, another unit, several ranges).
    """
    unit, _, spec = header.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    match = _RANGE.match(spec)
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        if last:
            end = int(last)
            if end < start:
                return None
        else:
            end = size - 1
        if start >= size:
            return UNSATISFIABLE
        return start, min(end, size - 1)
    if not last:
        return None
    suffix = int(last)
    if suffix == 0 or size == 0:
        return UNSATISFIABLE
    return max(0, size - suffix), size - 1


def fieldsOf(lines: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """
    Turn pre-built HTTP/1.1 header lines into the field list of an HTTP/2
    header block (lowercase names, RFC 9113 section 8.2.1).

    @param lines: C{Name: value\\r\\n} lines.
    @return: C{(name, value)} pairs.
    """
    fields = []
    for line in lines.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            fields.append((name.strip().lower(), value.strip()))
    return tuple(fields)
