# -*- test-case-name: tests.test_http -*-
"""
The request model every framing fills: L{Request}, and L{FieldReader},
which reads request header fields into it with the limits of the http
service's settings.

HTTP/1.1 (llhttp's callbacks, L{netd.http.protocol}) and HTTP/2 (the
decoded header block, L{netd.http.h2}) both read each field with
L{FieldReader.on_header}, so
that the fields the server looks at, their limits and their combination
rules are written once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netd.http.server import HTTPFactory

# Deadline kinds of a connection, whatever its framing (checked by the
# factory's clock once a second).
NONE = 0
IDLE = 1  # between requests: close quietly
HEAD = 2  # a request is arriving: 408, close
SEND = 3  # the transport is paused (the client is not reading): abort
CLOSING = 4  # closing: abort if not closed by then

# Request header fields the server looks at, by lowercase name.
_HOST = 1
_RANGE = 2
_IF_NONE_MATCH = 3
_IF_MODIFIED_SINCE = 4
_IF_RANGE = 5
_REFERER = 6
_USER_AGENT = 7
_CONTENT_LENGTH = 8
_TRANSFER_ENCODING = 9
_EXPECT = 10
_IF_MATCH = 11
_IF_UNMODIFIED_SINCE = 12
_FIELDS = {
    b"host": _HOST,
    b"range": _RANGE,
    b"if-none-match": _IF_NONE_MATCH,
    b"if-modified-since": _IF_MODIFIED_SINCE,
    b"if-range": _IF_RANGE,
    b"referer": _REFERER,
    b"user-agent": _USER_AGENT,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"expect": _EXPECT,
    b"if-match": _IF_MATCH,
    b"if-unmodified-since": _IF_UNMODIFIED_SINCE,
}


class Reject(Exception):
    """
    Raised inside a parser callback to stop parsing and answer an error.

    @ivar status: The status to answer.
    """

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Request:
    """
    What the server keeps of one request while it is read and answered.

    Attributes default at class level, so that a request that does not use
    a field costs nothing for it.
    """

    url = b""
    method = b""
    version = "1.1"
    keepAlive = True
    hosts = 0
    host = b""
    range: bytes | None = None
    ranges = 0
    ifMatch: bytes | None = None
    ifUnmodifiedSince: bytes | None = None
    ifNoneMatch: bytes | None = None
    ifModifiedSince: bytes | None = None
    ifRange: bytes | None = None
    referer = b""
    userAgent = b""
    contentLength: int | None = None
    chunked = False
    expect = False
    headerCount = 0
    headerBytes = 0
    bodyBytes = 0
    headDone = False
    error = 0
    mount = False
    upgrade = False
    started = 0.0
    headers: list[tuple[bytes, bytes]] | None = None
    body: list[bytes] | None = None
    rest = b""
    streamId = 0


class FieldReader:
    """
    Reads request header fields into the request being read, with the
    limits of the http service's settings: C{on_header}, the callback
    llhttp calls on L{HTTPConnection<netd.http.protocol.HTTPConnection>}
    for each field, which L{FieldResponder.answerFields
    <netd.http.fieldresponses.FieldResponder.answerFields>} calls for each
    field of a decoded header block (HTTP/2 and HTTP/3). A base class rather
    than a function both call: the HTTP/1.1 hot path then pays no call more
    per field than before HTTP/2 shared it.

    @ivar factory: The service (its limits).
    """

    factory: HTTPFactory
    _req: Request | None

    def on_header(self, name: bytes, value: bytes) -> None:
        """
        One request header field, complete.

        @param name: The field's name, as received.
        @param value: Its value, without surrounding whitespace.
        @raise Reject: C{431} past the size or count limit, C{400} for a bad
            C{Content-Length}, C{413} for a declared body that is too large.
        """
        req = self._req
        assert req is not None
        factory = self.factory
        count = req.headerCount = req.headerCount + 1
        size = req.headerBytes = req.headerBytes + len(name) + len(value)
        if count > factory.maxHeaders or size > factory.maxHeaderSize:
            raise Reject(431)
        if req.headers is not None:
            req.headers.append((name, value))
        field = _FIELDS.get(name.lower())
        if field is None:
            return
        if field == _HOST:
            req.hosts += 1
            req.host = value
        elif field == _RANGE:
            req.ranges += 1
            req.range = value
        elif field == _IF_NONE_MATCH:
            req.ifNoneMatch = (
                value if req.ifNoneMatch is None else req.ifNoneMatch + b"," + value
            )
        elif field == _IF_MODIFIED_SINCE:
            req.ifModifiedSince = value
        elif field == _IF_MATCH:
            req.ifMatch = value if req.ifMatch is None else req.ifMatch + b"," + value
        elif field == _IF_UNMODIFIED_SINCE:
            req.ifUnmodifiedSince = value
        elif field == _IF_RANGE:
            req.ifRange = value
        elif field == _REFERER:
            req.referer = value
        elif field == _USER_AGENT:
            req.userAgent = value
        elif field == _CONTENT_LENGTH:
            try:
                length = int(value)
            except ValueError:
                raise Reject(400) from None
            if length > factory.maxBodySize:
                raise Reject(413)
            req.contentLength = length
        elif field == _TRANSFER_ENCODING:
            req.chunked = True
        elif field == _EXPECT:
            req.expect = value.lower() == b"100-continue"
