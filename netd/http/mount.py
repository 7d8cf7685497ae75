# -*- test-case-name: tests.test_http_mount -*-
"""
Mounting another service's web resource (the chat service's browser page
and WebSocket) under a path of an http service.

Requests under the mount path are not served by netd's own protocol: the
connection is handed over to a C{twisted.web} L{Site} whose root leads to
the resource. The request is rebuilt from what the parser delivered (origin
form, no transfer coding) and fed to a fresh L{HTTPChannel}, which takes the
transport over:

    - a WebSocket upgrade keeps the connection: C{twisted.web.websocket}
      answers C{101} and the channel becomes the WebSocket;
    - any other request gets C{Connection: close} added, so that
      C{twisted.web} closes the connection after its response and the
      client's next request (a style sheet, an image) reaches netd's fast
      protocol again on a new connection.

Everything before the handover (limits, timeouts, C{Host} rules, path
checks) has already been applied by netd's protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.resource import Resource
from twisted.web.server import Site

from netd.http.accesslog import describeHost

if TYPE_CHECKING:
    from netd.http.request import Request
    from netd.http.server import HTTPFactory
    from netd.servicetype import ServiceContext

_DROPPED = frozenset(
    (b"transfer-encoding", b"content-length", b"expect", b"connection", b"keep-alive")
)


class MountedSite(Site):
    """
    A L{Site} for a mounted resource: no timeout of its own (netd's protocol
    applied its deadlines before the handover, and a WebSocket may idle), no
    tracebacks, and access records through the http service's access log.
    """

    noisy = False
    displayTracebacks = False

    def __init__(self, resource: Any, factory: HTTPFactory) -> None:
        super().__init__(resource, reactor=factory.clock, timeout=None)
        self._http = factory

    def log(self, request: Any) -> None:
        """
        Record a request answered by the mounted resource.

        @param request: The L{twisted.web.server.Request}.
        """
        self._http.stats.record(request.code, None)
        accessLog = self._http.accessLog
        if not accessLog.enabled:
            return
        now = self._http.clock.seconds()
        accessLog.record(
            describeHost(request.getClientAddress()),
            request.method or b"-",
            request.uri or b"-",
            (request.clientproto or b"HTTP/1.1")[5:].decode("ascii", "replace"),
            request.code,
            request.sentLength,
            0.0,
            request.getHeader(b"referer") or b"",
            request.getHeader(b"user-agent") or b"",
            now,
        )


def mountRoot(resource: Any, prefix: bytes) -> Resource:
    """
    A root resource under which C{resource} sits at C{prefix}.

    @param resource: The mounted resource.
    @param prefix: The mount path, e.g. C{b"/chat/"} or C{b"/apps/chat/"}.
    @return: The root.
    """
    segments = prefix.strip(b"/").split(b"/")
    root = node = Resource()
    for segment in segments[:-1]:
        child = Resource()
        node.putChild(segment, child)
        node = child
    node.putChild(segments[-1], resource)
    return root


class Mount:
    """
    A web resource of another service, mounted at a path.

    @ivar context: The http service's context.
    @ivar service: The name of the service whose resource is mounted.
    @ivar prefix: The mount path, ending with C{/}.
    """

    def __init__(
        self, context: ServiceContext, service: str, prefix: bytes, factory: HTTPFactory
    ) -> None:
        self.context = context
        self.service = service
        self.prefix = prefix
        self._factory = factory
        self._site: Site | None = None

    def site(self) -> Site:
        """
        The L{Site}, built at first use (every service exists by then).

        @return: The site.
        @raise KeyError: If the service is not running.
        """
        if self._site is None:
            other = self.context.instances[self.service]
            serviceType = other.config.serviceType
            assert serviceType.buildWebResource is not None
            resource = serviceType.buildWebResource(other)
            self._site = MountedSite(mountRoot(resource, self.prefix), self._factory)
        return self._site


def rebuildRequest(req: Request, close: bool) -> bytes:
    """
    Serialize a parsed request again, for C{twisted.web}.

    @param req: The request, with its header fields and body.
    @param close: Whether to ask for C{Connection: close}.
    @return: The request bytes: origin-form target, the header fields
        (without framing and hop-by-hop fields when closing), a
        C{Content-Length} body.
    """
    from netd.http.paths import splitTarget

    target = splitTarget(req.url)
    url = target.path + (b"?" + target.query if target.query else b"")
    lines = [req.method + b" " + url + b" HTTP/" + req.version.encode("ascii")]
    body = b"".join(req.body or ())
    for name, value in req.headers or ():
        lower = name.lower()
        if lower in _DROPPED and (close or lower not in (b"connection",)):
            continue
        lines.append(name + b": " + value)
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
