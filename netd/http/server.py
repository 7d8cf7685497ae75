# -*- test-case-name: tests.test_http -*-
"""
What the connections of one http service share: L{HTTPFactory}.

Besides building L{HTTPConnection<netd.http.protocol.HTTPConnection>}s it
holds the configuration in the form the hot path wants (limits as plain
attributes, error responses pre-built), the document root and its cache,
the access log, the status page and the mount, and one clock: while any
connection is open, a call once a second refreshes the cached C{Date} line
and the current time, checks every connection's deadline and flushes the
access log. That replaces a timer per request (creating, resetting and
cancelling a C{DelayedCall} costs more than serving a cached file).
"""

from __future__ import annotations

import json
import resource
from typing import Any, Protocol

from attrs import frozen
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from netd import __version__
from netd.http.accesslog import AccessLog
from netd.http.files import DocumentRoot, FileEntry, MimeTypes
from netd.http.mount import Mount
from netd.counters import HTTPCounters
from netd.http.protocol import IDLE, HTTPConnection
from netd.http.request import Request
from netd.http.responses import (
    STATUS_REASONS,
    errorResponse,
    fieldsOf,
    headerLines,
    httpDate,
)
from netd.policy import AddressFilter
from netd.servicetype import ServiceContext
from netd.settings import Network

SERVER = b"Server: netd\r\n"


@frozen
class HTTPConfig:
    """
    An http service's settings, converted (see L{netd.services.http}).

    @ivar root: The document root, or L{None} for netd's bundled page.
    @ivar index: Index file names, in order.
    @ivar listing: Whether directories without an index are listed.
    @ivar followSymlinks: Whether symbolic links may lead out of the root.
    @ivar dotfiles: Whether names starting with C{.} are served.
    @ivar mimeTypes: Extension to type, over the built-in table.
    @ivar defaultType: The type of unknown extensions.
    @ivar charset: Added to textual types.
    @ivar headers: Extra response header fields.
    @ivar maxRequestLine: Longest request target (C{414} beyond).
    @ivar maxHeaderSize: Most bytes of header names and values (C{431}).
    @ivar maxHeaders: Most header fields (C{431}).
    @ivar maxBodySize: Largest request body (C{413}).
    @ivar headerTimeout: Seconds a request has to arrive once begun.
    @ivar keepaliveTimeout: Seconds an idle connection is kept; 0 disables
        keep-alive.
    @ivar sendTimeout: Seconds a client may stop reading.
    @ivar accessLogFile: A Combined Log Format file, or L{None}.
    @ivar accessLogEvents: Whether each request is a log event.
    @ivar statusPath: The status endpoint's path, or L{None}.
    @ivar statusAllow: Who may read it.
    @ivar http2: Whether C{h2} is offered by ALPN on C{ssl:} listeners.
    @ivar h2c: Whether HTTP/2 with prior knowledge is accepted in cleartext.
    @ivar http2MaxStreams: C{SETTINGS_MAX_CONCURRENT_STREAMS}.
    @ivar http2MaxResets: Streams a client may reset per second.
    @ivar http2MaxControlFrames: PING, SETTINGS and PRIORITY frames a client
        may send per second.
    @ivar chat: The service whose web resource is mounted, or L{None}.
    @ivar chatPath: Where.
    """

    root: str | None = None
    index: tuple[str, ...] = ("index.html",)
    listing: bool = False
    followSymlinks: bool = False
    dotfiles: bool = False
    mimeTypes: tuple[tuple[str, str], ...] = ()
    defaultType: str = "application/octet-stream"
    charset: str = "utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    maxRequestLine: int = 8192
    maxHeaderSize: int = 16384
    maxHeaders: int = 100
    maxBodySize: int = 1048576
    headerTimeout: float = 10.0
    keepaliveTimeout: float = 15.0
    sendTimeout: float = 30.0
    accessLogFile: str | None = None
    accessLogEvents: bool = False
    statusPath: str | None = None
    statusAllow: tuple[Network, ...] = ()
    http2: bool = True
    h2c: bool = False
    http2MaxStreams: int = 100
    http2MaxResets: int = 200
    http2MaxControlFrames: int = 200
    chat: str | None = None
    chatPath: str = "/chat/"


class Connection(Protocol):
    """
    What the factory's clock needs of a connection, whatever its framing
    (L{HTTPConnection}, L{HTTP2Connection<netd.http.h2.HTTP2Connection>}).
    """

    deadline: float

    def deadlineExpired(self) -> None:
        """
        L{deadline} has passed.
        """

    def drain(self) -> None:
        """
        The listeners closed: finish what is owed, then close.
        """


def raiseFileLimit() -> tuple[int, int] | None:
    """
    Raise the soft limit on open files to the hard limit.

    @return: C{(old, new)} if it was raised, else L{None}.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return None
    return soft, target


class HTTPFactory(Factory[HTTPConnection]):
    """
    Builds the connections of one http service and holds what they share.

    @ivar context: The service instance.
    @ivar config: Its settings.
    @ivar root: The document root.
    @ivar pages: Bodies served from memory by exact path (the bundled page).
    @ivar mount: The mounted web resource, if any.
    @ivar accessLog: Where access records go.
    @ivar now: The clock's time, refreshed once a second while connections
        are open.
    @ivar dateLine: The C{Date} header line for L{now}.
    @ivar requests: Responses sent since start.
    @ivar stats: Responses by status class, and their latencies.
    @ivar draining: Whether the service's listeners have closed (responses
        then close their connections).
    """

    protocol = HTTPConnection
    noisy = False
    _log = Logger()

    def __init__(self, context: ServiceContext, config: HTTPConfig) -> None:
        self.context = context
        self.config = config
        self.name = context.name
        self.clock = context.reactor
        self.maxRequestLine = config.maxRequestLine
        self.maxHeaderSize = config.maxHeaderSize
        self.maxHeaders = config.maxHeaders
        self.maxBodySize = config.maxBodySize
        # A head's raw bytes: the target, the fields, and generous room for
        # the method, version, separators and whitespace.
        self.maxHead = (
            config.maxRequestLine + config.maxHeaderSize + 8 * config.maxHeaders + 1024
        )
        self.headerTimeout = config.headerTimeout
        self.keepaliveTimeout = config.keepaliveTimeout
        self.noKeepAlive = config.keepaliveTimeout == 0
        self.sendTimeout = config.sendTimeout
        # HTTP/2 is not offered while a chat page is mounted: see
        # netd.services.http.alpnProtocols.
        self.http2 = config.http2 and not config.chat
        self.h2c = config.h2c and not config.chat
        self.http2MaxStreams = config.http2MaxStreams
        self.http2MaxResets = config.http2MaxResets
        self.http2MaxControlFrames = config.http2MaxControlFrames
        # HPACK counts 32 bytes per field on top of its name and value
        # (RFC 9113 section 6.5.2), and the pseudo-header fields come on top
        # of max_header_size.
        self.maxHeaderList = (
            config.maxHeaderSize + 32 * (config.maxHeaders + 4) + config.maxRequestLine
        )
        names = {name.lower() for name, _ in config.headers}
        self.extra = (b"" if "server" in names else SERVER) + headerLines(
            config.headers
        )
        self.extraFields = fieldsOf(self.extra)
        self.errorResponses = {
            (status, close): errorResponse(status, self.extra, close)
            for status in STATUS_REASONS
            if status >= 400
            for close in (False, True)
        }
        self.errorBodyLength = {
            status: len(f"{status} {reason}\n")
            for status, reason in STATUS_REASONS.items()
        }
        types = MimeTypes(dict(config.mimeTypes), config.defaultType, config.charset)
        self.builtin = config.root is None
        if config.root is None:
            from netd.http.site import bundledRoot

            rootPath = bundledRoot()
        else:
            rootPath = config.root
        self.root = DocumentRoot(
            rootPath,
            index=config.index,
            listing=config.listing,
            followSymlinks=config.followSymlinks,
            dotfiles=config.dotfiles,
            types=types,
            extra=self.extra,
        )
        self.pages: dict[bytes, FileEntry] = {}
        self.statusPath = (
            config.statusPath.encode("utf-8") if config.statusPath else None
        )
        self._statusFilter = AddressFilter(config.statusAllow, ())
        self.accessLog = AccessLog(
            context.name, config.accessLogFile, config.accessLogEvents
        )
        self.mount = (
            Mount(context, config.chat, config.chatPath.encode("utf-8"), self)
            if config.chat
            else None
        )
        self.started = self.clock.seconds()
        self.requests = 0
        self.stats = HTTPCounters()
        self.draining = False
        self.connections: set[Connection] = set()
        self._tick = LoopingCall(self.tick)
        self._tick.clock = self.clock
        self._refresh(self.clock.seconds())

    # Factory life.

    def startFactory(self) -> None:
        """
        At bind time (as root, before privileges are dropped): raise the
        file limit, open the access log, render the bundled page.
        """
        raised = raiseFileLimit()
        if raised is not None:
            self._log.info(
                "{service}: raised the open-file limit from {old} to {new}",
                service=self.name,
                old=raised[0],
                new=raised[1],
            )
        self.draining = False
        self.accessLog.open()
        if self.builtin:
            self.renderBundledPage()

    def stopFactory(self) -> None:
        """
        The listeners are closed: flush the log; open connections finish
        their current response and close (idle ones close now).
        """
        self.draining = True
        self.accessLog.flush()
        for connection in list(self.connections):
            connection.drain()
        if not self.connections:
            self.accessLog.close()

    def renderBundledPage(self) -> None:
        """
        Render netd's page (what netd is, the services running) into
        L{pages}.
        """
        from netd.http.site import renderPage

        entry = renderPage(self.context, self.extra, self.clock.seconds())
        self.pages[b"/"] = entry
        self.pages[b"/index.html"] = entry

    # Connections and the clock.

    def connectionOpened(self, connection: Connection) -> None:
        """
        Track a connection's deadlines; start the clock if it is stopped.

        @param connection: The new connection.
        """
        if not self.connections:
            self._refresh(self.clock.seconds())
            if self.builtin and not self.pages:
                self.renderBundledPage()
            self._tick.start(1.0, now=False)
        self.connections.add(connection)

    def connectionClosed(self, connection: Connection) -> None:
        """
        Stop tracking a connection; stop the clock if it was the last one.

        @param connection: The connection.
        """
        self.connections.discard(connection)
        if not self.connections and self._tick.running:
            self._tick.stop()
            self.accessLog.flush()
            if self.draining:
                self.accessLog.close()

    def _refresh(self, now: float) -> None:
        """
        Update the time and the C{Date} line.

        @param now: The current time.
        """
        self.now = now
        self.dateValue = httpDate(now).encode("ascii")
        self.dateLine = b"Date: " + self.dateValue + b"\r\n"

    def tick(self) -> None:
        """
        Once a second: refresh the time, expire deadlines, flush the log.
        """
        now = self.clock.seconds()
        self._refresh(now)
        for connection in list(self.connections):
            deadline = connection.deadline
            if deadline and deadline <= now:
                connection.deadlineExpired()
        self.accessLog.flush()

    def record(self, peer: str, req: Request, status: int, sent: int) -> None:
        """
        Send one access record.

        @param peer: The client's address, described.
        @param req: The request.
        @param status: The status sent.
        @param sent: Body bytes sent.
        """
        now = self.clock.seconds()
        started = req.started or now
        self.accessLog.record(
            peer,
            req.method or b"-",
            req.url or b"-",
            req.version,
            status,
            sent,
            max(0.0, now - started),
            req.referer,
            req.userAgent,
            started,
        )

    # The status endpoint.

    def statusAllowed(self, address: Any) -> bool:
        """
        @param address: The client's address.
        @return: Whether it may read the status endpoint.
        """
        host = getattr(address, "host", None)
        if host is None:
            return True  # a UNIX socket: local by definition
        return self._statusFilter.check(host) is None

    def statusBody(self) -> bytes:
        """
        The status endpoint's JSON: netd's version, uptime, and each
        service's counters.

        @return: The body.
        """
        now = self.clock.seconds()
        services = {}
        for name, context in sorted(self.context.instances.items()):
            counters = context.counters.snapshot()
            services[name] = {
                "type": context.config.type,
                "listeners": [
                    listener.description for listener in context.config.listeners
                ],
                "activeSessions": context.policy.active,
                "counters": counters,
            }
        services.setdefault(self.name, {})["requests"] = self.requests
        status = {
            "netd": __version__,
            "service": self.name,
            "uptime": round(now - self.started, 3),
            "time": httpDate(now),
            "services": services,
        }
        return json.dumps(status, indent=2, sort_keys=True).encode("utf-8") + b"\n"
