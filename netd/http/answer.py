# -*- test-case-name: tests.test_http -*-
"""
What to answer to a request, whatever its framing: L{answer}.

HTTP/1.1 (L{netd.http.protocol}) and HTTP/2 (L{netd.http.h2}) both read a
request into the same L{Request<netd.http.request.Request>} and hand it
here. This module decides everything that does not depend on the framing:
the target's path and query, the status endpoint, the document root's
lookup (path safety, index files, MIME types, redirects: L{netd.http.files}),
the preconditions (C{If-Match}, C{If-Unmodified-Since}, C{If-None-Match},
C{If-Modified-Since}, in the order of RFC 9110 section 13.2.2), C{If-Range}
and C{Range}, and opening the file. The framing only writes what it is
told, through its L{Responder} methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from netd.http.files import FileEntry, Redirect
from netd.http.paths import BadTarget, splitTarget
from netd.http.request import Request
from netd.http.responses import (
    UNSATISFIABLE,
    etagMatches,
    etagMatchesStrongly,
    ifRangeHolds,
    modifiedSince,
    notModifiedSince,
    parseRange,
)

if TYPE_CHECKING:
    from netd.http.server import HTTPFactory

_GET = b"GET"
_HEAD = b"HEAD"


class Responder(Protocol):
    """
    One framing's way of writing the responses L{answer} decides.
    """

    def peer(self) -> Any:
        """
        @return: The client's address (for the status endpoint's filter).
        """

    def sendError(self, req: Request, status: int) -> None:
        """
        Answer an error status with its one-line body.
        """

    def sendUnsatisfiable(self, req: Request, entry: FileEntry) -> None:
        """
        Answer C{416} with C{Content-Range: bytes */size}.
        """

    def sendRedirect(self, req: Request, location: bytes) -> None:
        """
        Answer C{301} to C{location}.
        """

    def sendStatusPage(self, req: Request, body: bytes) -> None:
        """
        Answer C{200} with the status endpoint's JSON (C{no-store}).
        """

    def sendNotModified(self, req: Request, entry: FileEntry) -> None:
        """
        Answer C{304} with the entry's validators.
        """

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
        Answer C{200} or C{206} with C{length} bytes from C{start}.

        @param body: The bytes to send (C{b""} for C{HEAD} or an empty
            range), or L{None} when they are to be read from C{fd}.
        @param fd: The open file to stream from (the framing owns and closes
            it), or L{None}.
        """


def answer(factory: HTTPFactory, req: Request, responder: Responder) -> None:
    """
    Answer one complete, valid request (C{GET} or C{HEAD}, rules on the head
    already applied).

    @param factory: The service's shared state.
    @param req: The request.
    @param responder: The framing to answer through.
    """
    url = req.url
    if url[:1] == b"/" and b"?" not in url and b"#" not in url:
        path = url
        query = b""
    else:
        try:
            target = splitTarget(url)
        except BadTarget:
            responder.sendError(req, 400)
            return
        path, query = target.path, target.query
    if path == factory.statusPath:
        if factory.statusAllowed(responder.peer()):
            responder.sendStatusPage(req, factory.statusBody())
        else:
            responder.sendError(req, 403)
        return
    result: FileEntry | Redirect | int | None = factory.pages.get(path)
    if result is None:
        result = factory.root.lookup(path, query, factory.now)
    if type(result) is FileEntry:
        serveFile(factory, req, result, path, responder)
    elif type(result) is Redirect:
        responder.sendRedirect(req, result.location)
    else:
        mount = factory.mount
        if result == 404 and mount is not None and path == mount.prefix[:-1]:
            responder.sendRedirect(req, mount.prefix + (b"?" + query if query else b""))
            return
        assert isinstance(result, int)
        responder.sendError(req, result)


def serveFile(
    factory: HTTPFactory,
    req: Request,
    entry: FileEntry,
    path: bytes,
    responder: Responder,
    retry: bool = True,
) -> None:
    """
    Answer with a file: C{200}, C{206}, C{304}, C{412} or C{416}.

    @param factory: The service's shared state.
    @param req: The request.
    @param entry: The file.
    @param path: The request path (its cache key).
    @param responder: The framing to answer through.
    @param retry: Whether to look the path up again if the file turns out
        to have changed.
    """
    if req.ifMatch is not None:
        if not etagMatchesStrongly(req.ifMatch, entry.etag):
            responder.sendError(req, 412)
            return
    elif req.ifUnmodifiedSince is not None:
        if modifiedSince(req.ifUnmodifiedSince, entry.mtime):
            responder.sendError(req, 412)
            return
    if req.ifNoneMatch is not None:
        notModified = etagMatches(req.ifNoneMatch, entry.etag)
    elif req.ifModifiedSince is not None:
        notModified = notModifiedSince(req.ifModifiedSince, entry.mtime)
    else:
        notModified = False
    if notModified:
        responder.sendNotModified(req, entry)
        return
    start = 0
    length = entry.size
    status = 200
    if (
        req.range is not None
        and req.ranges == 1
        and req.method == _GET
        and (
            req.ifRange is None
            or ifRangeHolds(req.ifRange, entry.etag, entry.lastModified)
        )
    ):
        byteRange = parseRange(req.range, entry.size)
        if byteRange is UNSATISFIABLE:
            responder.sendUnsatisfiable(req, entry)
            return
        if byteRange is not None:
            status = 206
            start, end = byteRange
            length = end - start + 1
    if req.method == _HEAD or length == 0:
        responder.sendFile(req, entry, status, start, length, b"", None)
        return
    body = entry.body
    if body is not None:
        if status == 206:
            body = body[start : start + length]
        responder.sendFile(req, entry, status, start, length, body, None)
        return
    fd = factory.root.open(entry)
    if fd is None:
        # The file changed since it was looked up: look again, once.
        factory.root.invalidate(path)
        result = factory.root.lookup(path, b"", factory.now)
        if retry and type(result) is FileEntry and result is not entry:
            serveFile(factory, req, result, path, responder, retry=False)
        else:
            responder.sendError(req, 404)
        return
    responder.sendFile(req, entry, status, start, length, None, fd)
