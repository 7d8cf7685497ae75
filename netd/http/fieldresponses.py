# -*- test-case-name: tests.test_http2 -*-
"""
The responses of the framings that send header fields rather than header
lines (HTTP/2, L{netd.http.h2}; HTTP/3, L{netd.http.h3}): L{FieldResponder}
builds each response's fields from what L{answer<netd.http.answer.answer>}
decided, and hands them to the framing's C{_respond}.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from netd.http.answer import answer
from netd.http.files import FileEntry
from netd.http.request import FieldReader, Reject, Request
from netd.http.responses import STATUS_REASONS, fieldsOf

if TYPE_CHECKING:
    from netd.http.server import HTTPFactory

_CONTENT_LENGTH = b"content-length"
_NO_STORE = ((b"content-type", b"application/json"), (b"cache-control", b"no-store"))
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_ALLOW = (b"allow", b"GET, HEAD")
_GET = b"GET"
_HEAD = b"HEAD"


class Body:
    """
    A response body still owed on one stream.

    @ivar req: The request it answers.
    @ivar status: The response status.
    @ivar data: The bytes, for a body held in memory, else L{None}.
    @ivar fd: The open file, else L{None}.
    @ivar offset: The next byte to send (of C{data} or of the file).
    @ivar remaining: Bytes still to send.
    @ivar sent: Bytes sent.
    """

    __slots__ = ("req", "status", "data", "fd", "offset", "remaining", "sent")

    def __init__(
        self,
        req: Request,
        status: int,
        data: bytes | None,
        fd: int | None,
        offset: int,
        remaining: int,
    ) -> None:
        self.req = req
        self.status = status
        self.data = data
        self.fd = fd
        self.offset = offset
        self.remaining = remaining
        self.sent = 0

    def close(self) -> None:
        """
        Release the file, if any.
        """
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class FieldResponder(FieldReader, ABC):
    """
    The L{Responder<netd.http.answer.Responder>} methods of a framing that
    sends header fields: each builds the fields after C{:status} and
    C{date} and calls L{_respond}. A L{FieldReader}: L{answerFields} reads
    a decoded header block with the same limits as HTTP/1.1's. Abstract:
    each framing gives L{_respond}, L{_resetStream} and L{peer}.

    @ivar factory: The service's shared state.
    """

    factory: HTTPFactory
    _req: Request | None = None
    _open: set[int]
    _log = Logger()
    # The framing's name, for the log.
    framing = "HTTP"

    def _read(self, body: Body, size: int) -> bytes | None:
        """
        The next bytes of a body.

        @param body: The body.
        @param size: How many.
        @return: The bytes, or L{None} if the file shrank (the stream is then
            reset: the promised length cannot be sent).
        """
        if body.data is not None:
            return body.data[body.offset : body.offset + size]
        assert body.fd is not None
        try:
            data = os.pread(body.fd, size, body.offset)
        except OSError:
            data = b""
        if data:
            return data
        self._log.warn(
            "{service}: a file shrank while being sent; {framing} stream reset",
            service=self.factory.name,
            framing=self.framing,
        )
        body.close()
        self._open.discard(body.req.streamId)
        self._resetStream(body.req.streamId)
        return None

    @abstractmethod
    def _resetStream(self, streamId: int) -> None:
        """
        Reset a stream whose response cannot be completed (the framing's).

        @param streamId: The stream.
        """

    @abstractmethod
    def peer(self) -> Any:
        """
        @return: The client's address (the framing's).
        """

    @abstractmethod
    def _respond(
        self,
        req: Request,
        status: int,
        fields: list[tuple[bytes, bytes]],
        data: bytes | None,
        fd: int | None = None,
        offset: int = 0,
        length: int = 0,
    ) -> None:
        """
        Send a response's header block, and queue its body (the framing's).

        @param req: The request.
        @param status: The status.
        @param fields: The header fields after C{:status} and C{date}.
        @param data: The body held in memory, or L{None}.
        @param fd: The file to stream the body from, or L{None}.
        @param offset: Where the body starts (in C{data} or the file).
        @param length: Its length (0 for none, as for C{HEAD}).
        """

    def answerFields(self, streamId: int, headers: Any, version: str) -> None:
        """
        A request's decoded header block: read it into a L{Request} with the
        limits of L{FieldReader.on_header}, check it, and answer it.

        @param streamId: Its stream.
        @param headers: The decoded fields, C{(name, value)} bytes pairs,
            pseudo-header fields included.
        @param version: C{"2"} or C{"3"}, for the access log.
        """
        factory = self.factory
        req = Request()
        req.version = version
        req.streamId = streamId
        req.started = factory.clock.seconds()
        self._req = req
        try:
            for name, value in headers:
                if name[:1] == b":":
                    if name == b":method":
                        req.method = value
                    elif name == b":path":
                        req.url = value
                    elif name == b":authority":
                        req.host = value
                else:
                    self.on_header(name, value)
        except Reject as e:
            req.error = e.status
        self._req = None
        if not req.error:
            if len(req.url) > factory.maxRequestLine:
                req.error = 414
            elif req.method != _GET and req.method != _HEAD:
                req.error = 405
            elif req.url[:1] != b"/":
                req.error = 400
        if req.error:
            self.sendError(req, req.error)
        else:
            answer(factory, req, self)

    def sendError(self, req: Request, status: int) -> None:
        """
        Answer an error status with its one-line body.

        @param req: The request.
        @param status: The status.
        """
        body = b"%d %s\n" % (status, STATUS_REASONS[status].encode("ascii"))
        fields = list(self.factory.extraFields)
        fields.append(_TEXT)
        fields.append((_CONTENT_LENGTH, b"%d" % len(body)))
        if status == 405:
            fields.append(_ALLOW)
        self._respond(req, status, fields, body, length=len(body))

    def sendUnsatisfiable(self, req: Request, entry: FileEntry) -> None:
        """
        Answer C{416} with the size of the file.

        @param req: The request.
        @param entry: The file.
        """
        body = b"416 %s\n" % STATUS_REASONS[416].encode("ascii")
        fields = list(self.factory.extraFields)
        fields.append(_TEXT)
        fields.append((_CONTENT_LENGTH, b"%d" % len(body)))
        fields.append((b"content-range", b"bytes */%d" % entry.size))
        self._respond(req, 416, fields, body, length=len(body))

    def sendRedirect(self, req: Request, location: bytes) -> None:
        """
        Answer C{301}.

        @param req: The request.
        @param location: Where to.
        """
        body = b"301 Moved Permanently\n"
        fields = list(self.factory.extraFields)
        fields.append((b"location", location))
        fields.append(_TEXT)
        fields.append((_CONTENT_LENGTH, b"%d" % len(body)))
        self._respond(req, 301, fields, body, length=len(body))

    def sendStatusPage(self, req: Request, body: bytes) -> None:
        """
        Answer the status endpoint with its JSON.

        @param req: The request.
        @param body: The JSON.
        """
        fields = list(self.factory.extraFields)
        fields.extend(_NO_STORE)
        fields.append((_CONTENT_LENGTH, b"%d" % len(body)))
        self._respond(req, 200, fields, body, length=len(body))

    def sendNotModified(self, req: Request, entry: FileEntry) -> None:
        """
        Answer C{304} with the file's validators.

        @param req: The request.
        @param entry: The file.
        """
        fields = list(entryFields(entry))
        fields.append((_CONTENT_LENGTH, b"%d" % entry.size))
        self._respond(req, 304, fields, None)

    def sendFile(
        self,
        req: Request,
        entry: FileEntry,
        status: int,
        start: int,
        length: int,
        body: bytes | None,
        fd: int | None,
    ) -> None:
        """
        Answer C{200} or C{206}; the body goes out as the windows allow.

        @param req: The request.
        @param entry: The file.
        @param status: C{200} or C{206}.
        @param start: The first byte.
        @param length: How many bytes.
        @param body: The bytes (C{b""} for none), or L{None} to stream from
            C{fd}.
        @param fd: The open file, or L{None}.
        """
        fields = list(entryFields(entry))
        fields.append((_CONTENT_LENGTH, b"%d" % length))
        if status == 206:
            fields.append(
                (
                    b"content-range",
                    b"bytes %d-%d/%d" % (start, start + length - 1, entry.size),
                )
            )
        if body is not None:
            self._respond(req, status, fields, body, length=len(body))
        else:
            self._respond(req, status, fields, None, fd, start, length)


def entryFields(entry: FileEntry) -> tuple[tuple[bytes, bytes], ...]:
    """
    The HTTP/2 and HTTP/3 header fields of a file's responses (except
    C{content-length}), from its pre-built HTTP/1.1 lines, made once per
    entry.

    @param entry: The file.
    @return: The fields.
    """
    fields = entry.fields
    if fields is None:
        fields = entry.fields = fieldsOf(entry.common)
    return fields
