# -*- test-case-name: tests.test_http_config -*-
"""
The http service: a fast, hardened static-file web server.

This module is the service type: its configuration keys, their checks (all
reported at once with the rest of the file), the cross-service check of
C{chat}, and the factory builder. The server itself is L{netd.http}.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

from attrs import evolve

from netd.counters import Series, series
from netd.descriptions import DatagramListener, StreamListener
from netd.http import h2frames
from netd.http.h3 import HTTP3Server
from netd.http.server import HTTPConfig, HTTPFactory
from netd.probe import ProbeFailed, ProbeTarget, streamOnly, why
from netd.servicetype import ServiceContext, ServiceType
from netd.settings import Problem, Setting, boolean, describe, integer, networks, number

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_MEDIA_TYPE = re.compile(
    r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
    r"(\s*;\s*[!#$%&'*+\-.^_`|~0-9A-Za-z]+=[!#$%&'*+\-.^_`|~0-9A-Za-z\"]+)*$"
)
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@-]+$")

# Header fields netd sets itself, or that would break framing.
RESERVED_HEADERS = frozenset(
    (
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "content-range",
        "date",
        "etag",
        "last-modified",
        "content-type",
        "location",
        "accept-ranges",
    )
)

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def directory(value: Any) -> str:
    """
    Accept an existing directory.

    @param value: The raw value.
    @return: The absolute path.
    @raise ValueError: If it is not a string naming a readable directory.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a directory path, got {describe(value)}")
    path = os.path.abspath(value)
    if not os.path.exists(path):
        raise ValueError(f"{value!r} does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"{value!r} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ValueError(f"{value!r} cannot be read")
    return path


def fileNames(value: Any) -> tuple[str, ...]:
    """
    Accept an array of plain file names (no C{/}).

    @param value: The raw value.
    @return: The names.
    @raise ValueError: Naming the first bad entry.
    """
    if not isinstance(value, list):
        raise ValueError(f"expected an array of file names, got {describe(value)}")
    for index, name in enumerate(value):
        if (
            not isinstance(name, str)
            or not name
            or "/" in name
            or "\0" in name
            or name in (".", "..")
        ):
            raise ValueError(f"entry {index}: expected a file name, got {name!r}")
    return tuple(value)


def mediaType(value: Any) -> str:
    """
    Accept a media type such as C{text/plain} or C{text/html; charset=utf-8}.

    @param value: The raw value.
    @return: The type.
    @raise ValueError: If it is not one.
    """
    if not isinstance(value, str) or not _MEDIA_TYPE.match(value):
        raise ValueError(f"expected a media type such as 'text/plain', got {value!r}")
    return value


def mediaTypes(value: Any) -> tuple[tuple[str, str], ...]:
    """
    Accept a table of file name extensions to media types.

    @param value: The raw value, e.g. C{{ "log" = "text/plain" }}.
    @return: C{(extension, type)} pairs, extensions with a leading dot.
    @raise ValueError: Naming the first bad entry.
    """
    if not isinstance(value, dict):
        raise ValueError(
            f'expected a table such as {{ log = "text/plain" }}, got {describe(value)}'
        )
    result = []
    for extension, media in value.items():
        bare = extension[1:] if extension.startswith(".") else extension
        if not bare or not _TOKEN.match(bare) or "." in bare:
            raise ValueError(f"{extension!r} is not a file name extension")
        try:
            result.append(("." + bare.lower(), mediaType(media)))
        except ValueError as e:
            raise ValueError(f"{extension}: {e}") from None
    return tuple(result)


def charset(value: Any) -> str:
    """
    Accept a charset name, or C{""} for none.

    @param value: The raw value.
    @return: The name.
    @raise ValueError: If it is not a token.
    """
    if not isinstance(value, str) or (value and not _TOKEN.match(value)):
        raise ValueError(f"expected a charset name such as 'utf-8', got {value!r}")
    return value


def headerFields(value: Any) -> tuple[tuple[str, str], ...]:
    """
    Accept a table of extra response header fields.

    @param value: The raw value, e.g. C{{ "X-Frame-Options" = "DENY" }}.
    @return: C{(name, value)} pairs.
    @raise ValueError: Naming the first bad field.
    """
    if not isinstance(value, dict):
        raise ValueError(
            f'expected a table such as {{ "X-Frame-Options" = "DENY" }}, '
            f"got {describe(value)}"
        )
    result = []
    for name, field in value.items():
        if not _TOKEN.match(name):
            raise ValueError(f"{name!r} is not a header field name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"{name!r} is set by netd itself")
        if not isinstance(field, str):
            raise ValueError(f"{name}: expected a string, got {describe(field)}")
        try:
            field.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{name}: the value must be Latin-1 text") from None
        if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in field):
            raise ValueError(f"{name}: the value has a control character")
        result.append((name, field.strip()))
    return tuple(result)


def filePath(value: Any) -> str | None:
    """
    Accept a file to write (its directory must exist), or C{""} for none.

    @param value: The raw value.
    @return: The absolute path, or L{None}.
    @raise ValueError: If the directory does not exist.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a file path, got {describe(value)}")
    if not value:
        return None
    path = os.path.abspath(value)
    if os.path.isdir(path):
        raise ValueError(f"{value!r} is a directory")
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"the directory of {value!r} does not exist")
    return path


def urlPath(empty: bool) -> Any:
    """
    A converter accepting an absolute URL path.

    @param empty: Whether C{""} is accepted (as L{None}: off).
    @return: The converter.
    """

    def convert(value: Any) -> str | None:
        if not isinstance(value, str):
            raise ValueError(
                f"expected a path such as '/.netd/status', got {describe(value)}"
            )
        if not value and empty:
            return None
        segments = value.split("/")
        if (
            not value.startswith("/")
            or value == "/"
            or any(s in (".", "..") for s in segments)
            or not all(_PATH_SEGMENT.match(s) for s in segments[1:-1])
            or (segments[-1] and not _PATH_SEGMENT.match(segments[-1]))
        ):
            raise ValueError(f"expected a path such as '/.netd/status', got {value!r}")
        return value

    return convert


def mountPath(value: Any) -> str:
    """
    Accept a mount path: absolute, ending with C{/}, not C{/} itself.

    @param value: The raw value.
    @return: The path.
    @raise ValueError: If it is not one.
    """
    path = urlPath(False)(value)
    assert path is not None
    if not path.endswith("/") or "//" in path:
        raise ValueError(
            f"expected a path ending with '/', such as '/chat/', got {value!r}"
        )
    return path


def serviceName(value: Any) -> str | None:
    """
    Accept the name of another service, or C{""} for none.

    @param value: The raw value.
    @return: The name, or L{None}.
    @raise ValueError: If it is not a string.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a service name, got {describe(value)}")
    return value or None


SETTINGS = (
    Setting(
        "root",
        None,
        directory,
        "the document root (without it: netd's own page, listing the services)",
    ),
    Setting(
        "index",
        ("index.html",),
        fileNames,
        "files served for a URL ending with /, tried in order",
    ),
    Setting("listing", False, boolean, "list directories that have no index file"),
    Setting(
        "follow_symlinks",
        False,
        boolean,
        "serve symbolic links that lead out of the root",
    ),
    Setting("dotfiles", False, boolean, "serve names starting with '.'"),
    Setting("mime_types", (), mediaTypes, "extension to media type, over the defaults"),
    Setting(
        "default_type",
        "application/octet-stream",
        mediaType,
        "the type of unknown extensions",
    ),
    Setting("charset", "utf-8", charset, "charset of textual types ('' for none)"),
    Setting("headers", (), headerFields, "extra header fields on every response"),
    Setting(
        "max_request_line",
        8192,
        integer(64, 1 << 20),
        "longest request target in bytes (414 beyond)",
    ),
    Setting(
        "max_header_size",
        16384,
        integer(256, 1 << 20),
        "most bytes of request header fields (431 beyond)",
    ),
    Setting(
        "max_headers",
        100,
        integer(1, 10_000),
        "most request header fields (431 beyond)",
    ),
    Setting(
        "max_body_size",
        1048576,
        integer(0, 1 << 40),
        "largest request body read (413 beyond)",
    ),
    Setting(
        "header_timeout",
        10.0,
        number(1, 3600),
        "seconds a request has to arrive once begun (408 beyond)",
    ),
    Setting(
        "keepalive_timeout",
        15.0,
        number(0, 3600),
        "seconds an idle keep-alive connection is kept (0: no keep-alive)",
    ),
    Setting(
        "send_timeout",
        30.0,
        number(1, 3600),
        "seconds a client may stop reading before it is cut",
    ),
    Setting(
        "access_log_file",
        None,
        filePath,
        "a Combined Log Format file of every request, written once a second",
    ),
    Setting(
        "access_log_events",
        False,
        boolean,
        "one log event per request (off: only one event per connection)",
    ),
    Setting(
        "status_path",
        None,
        urlPath(True),
        "path of the JSON status endpoint ('' or absent: off)",
    ),
    Setting("status_allow", LOOPBACK, networks, "who may read the status endpoint"),
    Setting(
        "http2",
        True,
        boolean,
        "offer HTTP/2 (ALPN h2) on ssl: listeners; off while chat is mounted,"
        " whose WebSocket needs HTTP/1.1",
    ),
    Setting(
        "h2c",
        False,
        boolean,
        "accept HTTP/2 with prior knowledge (cleartext h2c) on tcp: listeners",
    ),
    Setting(
        "http2_max_streams",
        100,
        integer(1, 10_000),
        "HTTP/2 streams a client may have open at once"
        " (SETTINGS_MAX_CONCURRENT_STREAMS)",
    ),
    Setting(
        "http2_max_resets",
        200,
        integer(1, 1_000_000),
        "HTTP/2 streams a client may reset, or make netd reset (malformed"
        " requests), per second before it is cut (rapid reset, CVE-2023-44487)",
    ),
    Setting(
        "http2_max_control_frames",
        200,
        integer(1, 1_000_000),
        "HTTP/2 PING, SETTINGS and PRIORITY frames a client may send per second"
        " before it is cut",
    ),
    Setting(
        "alt_svc",
        True,
        boolean,
        "advertise HTTP/3 (Alt-Svc: h3) on responses when the service has a"
        " udp: listener",
    ),
    Setting(
        "http3_retry_threshold",
        64,
        integer(0, 1_000_000),
        "QUIC handshakes in progress from which new HTTP/3 clients must first"
        " echo a Retry token (address validation; 0: always)",
    ),
    Setting(
        "http3_max_streams",
        100,
        integer(1, 10_000),
        "HTTP/3 request streams a client may have open at once (QUIC"
        " initial_max_streams_bidi; one more as each ends)",
    ),
    Setting("chat", None, serviceName, "a service whose web front end is mounted"),
    Setting(
        "chat_path",
        "/chat/",
        mountPath,
        "the path where the chat page is mounted (its WebSocket: this path + ws)",
    ),
)

_FIELDS = {
    "root": "root",
    "index": "index",
    "listing": "listing",
    "follow_symlinks": "followSymlinks",
    "dotfiles": "dotfiles",
    "mime_types": "mimeTypes",
    "default_type": "defaultType",
    "charset": "charset",
    "headers": "headers",
    "max_request_line": "maxRequestLine",
    "max_header_size": "maxHeaderSize",
    "max_headers": "maxHeaders",
    "max_body_size": "maxBodySize",
    "header_timeout": "headerTimeout",
    "keepalive_timeout": "keepaliveTimeout",
    "send_timeout": "sendTimeout",
    "access_log_file": "accessLogFile",
    "access_log_events": "accessLogEvents",
    "status_path": "statusPath",
    "status_allow": "statusAllow",
    "http2": "http2",
    "h2c": "h2c",
    "http2_max_streams": "http2MaxStreams",
    "http2_max_resets": "http2MaxResets",
    "http2_max_control_frames": "http2MaxControlFrames",
    "chat": "chat",
    "chat_path": "chatPath",
}
# Settings that are not the HTTP framings' (read by the builders below).
_NOT_CONFIG = ("alt_svc", "http3_retry_threshold", "http3_max_streams")

# The one HTTPFactory of each service instance, shared by its stream and
# datagram listeners (one document root cache, one access log).
_FACTORIES: WeakKeyDictionary[ServiceContext, HTTPFactory] = WeakKeyDictionary()


def httpConfig(settings: Mapping[str, Any]) -> HTTPConfig:
    """
    Turn converted settings into an L{HTTPConfig}.

    @param settings: The service's settings (L{SETTINGS} keys).
    @return: The configuration.
    """
    return HTTPConfig(
        **{
            _FIELDS[key]: value
            for key, value in settings.items()
            if key not in _NOT_CONFIG
        }
    )


def alpnProtocols(settings: Mapping[str, Any]) -> tuple[bytes, ...]:
    """
    @param settings: An http service's settings.
    @return: C{h2} then C{http/1.1} when HTTP/2 is on and no chat page is
        mounted (browsers open a mounted chat's WebSocket with an HTTP/1.1
        Upgrade, which an HTTP/2 connection cannot carry, and the mounted
        page is served by C{twisted.web} over HTTP/1.1 only), else
        C{http/1.1} alone.
    """
    if settings.get("http2", True) and not settings.get("chat"):
        return (b"h2", b"http/1.1")
    return (b"http/1.1",)


def usedServices(settings: Mapping[str, Any]) -> list[str]:
    """
    @param settings: An http service's settings.
    @return: The chat service whose page it mounts, if any.
    """
    name = settings.get("chat")
    return [name] if name else []


def ownedFiles(settings: Mapping[str, Any]) -> list[str]:
    """
    @param settings: An http service's settings.
    @return: Its access log file, if it writes one.
    """
    path = settings.get("access_log_file")
    return [path] if path else []


def readPaths(settings: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """
    @param settings: An http service's settings.
    @return: Its document root, if it serves one (a directory netd's user
        must be able to list).
    """
    root = settings.get("root")
    return [("root", root, True)] if root else []


def checkConfig(service: Any, services: Mapping[str, Any]) -> list[Problem]:
    """
    The checks that need the other services: C{chat} must name an enabled
    service whose type has a web front end.

    @param service: This service's L{ServiceConfig<netd.config.ServiceConfig>}.
    @param services: Every enabled service, by name.
    @return: The problems found.
    """
    problems = []
    if any(
        isinstance(each, DatagramListener) for each in service.listeners
    ) and not any(
        isinstance(each, StreamListener) and each.kind == "ssl"
        for each in service.listeners
    ):
        problems.append(
            Problem(
                f"services.{service.name}.listen",
                "a udp: listener serves HTTP/3, which needs a certificate: add an"
                " ssl: listener (its privateKey and certKey are used for QUIC too)",
            )
        )
    name = service.settings.get("chat")
    if name is None:
        return problems
    return problems + _checkChat(service, services, name)


def _checkChat(service: Any, services: Mapping[str, Any], name: str) -> list[Problem]:
    """
    C{chat} must name an enabled service whose type has a web front end.

    @param service: This service's configuration.
    @param services: Every enabled service, by name.
    @param name: The service C{chat} names.
    @return: The problems found.
    """
    path = f"services.{service.name}.chat"
    other = services.get(name)
    if other is None:
        known = ", ".join(sorted(services)) or "none"
        return [Problem(path, f"no enabled service named {name!r} (services: {known})")]
    if other.serviceType.buildWebResource is None:
        # The registry is not imported here (it imports this module): the
        # hint names the types of the enabled services that have one.
        withWeb = sorted(
            {
                each.serviceType.name
                for each in services.values()
                if each.serviceType.buildWebResource is not None
            }
        )
        return [
            Problem(
                path,
                f"{name!r} is a {other.type} service, which has no web front end "
                f"(types that have one: {', '.join(withWeb) or 'none enabled'})",
            )
        ]
    return []


def altSvc(context: ServiceContext) -> str | None:
    """
    The C{Alt-Svc} value that points browsers at a service's HTTP/3.

    @param context: The service instance.
    @return: C{h3=":PORT"; ma=86400} for its first C{udp:} listener on a
        fixed port, or L{None} (no such listener, C{alt_svc = false}, or an
        C{Alt-Svc} of its own among C{headers}).
    """
    settings = context.settings
    if not settings.get("alt_svc", True):
        return None
    if any(name.lower() == "alt-svc" for name, _ in settings.get("headers", ())):
        return None
    for listener in context.config.listeners:
        if isinstance(listener, DatagramListener) and listener.port:
            return f'h3=":{listener.port}"; ma=86400'
    return None


def sharedFactory(context: ServiceContext) -> HTTPFactory:
    """
    The one L{HTTPFactory} of a service instance (built on first use).

    @param context: The service instance.
    @return: The factory its stream and datagram listeners share.
    """
    factory = _FACTORIES.get(context)
    if factory is None:
        config = httpConfig(context.settings)
        advertised = altSvc(context)
        if advertised is not None:
            config = evolve(config, headers=config.headers + (("Alt-Svc", advertised),))
        factory = _FACTORIES[context] = HTTPFactory(context, config)
    return factory


def buildStreamFactory(context: ServiceContext) -> HTTPFactory:
    """
    @param context: The service instance.
    @return: The factory of its connections.
    """
    return sharedFactory(context)


def buildDatagramProtocol(
    context: ServiceContext, listener: DatagramListener
) -> HTTP3Server:
    """
    HTTP/3 on a C{udp:} listener, with the certificate of the service's
    first C{ssl:} listener (L{checkConfig} makes sure there is one).

    @param context: The service instance.
    @param listener: The listener.
    @return: Its protocol.
    """
    certificate = next(
        each.description
        for each in context.config.listeners
        if isinstance(each, StreamListener) and each.kind == "ssl"
    )
    return HTTP3Server(
        context,
        sharedFactory(context),
        certificate,
        context.settings.get("http3_retry_threshold", 64),
        context.settings.get("http3_max_streams", 100),
    )


_STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")


def metrics(context: ServiceContext) -> list[Series]:
    """
    An http service's responses by status class and their latencies, for
    L{netd.metrics}.

    @param context: The service instance.
    @return: The series (none before its factory is built).
    """
    factory = _FACTORIES.get(context)
    if factory is None:
        return []
    stats = factory.stats
    name = context.name
    result = [
        series(
            "netd_http_responses_total",
            "counter",
            "HTTP responses sent, by status class",
            count,
            service=name,
            code=label,
        )
        for label, count in zip(_STATUS_CLASSES, stats.statusClasses)
    ]
    result.append(
        series(
            "netd_http_request_duration_seconds",
            "histogram",
            "Seconds from a request's first byte to its response being sent",
            stats.latencies,
            service=name,
        )
    )
    return result


def httpProbe(target: ProbeTarget) -> str:
    """
    HTTP: C{GET /} is answered with status 200.

    @param target: The listener.
    @return: The status line.
    @raise ProbeFailed: If the answer is not 200.
    """
    streamOnly(target)
    with target.connect() as skt:
        selected = getattr(skt, "selected_alpn_protocol", None)
        if selected is not None and selected() == "h2":
            return http2Probe(skt)
        try:
            skt.sendall(
                b"GET / HTTP/1.1\r\nHost: localhost\r\n"
                b"User-Agent: netd-probe\r\nConnection: close\r\n\r\n"
            )
            line = skt.makefile("rb").readline(1024)
        except OSError as e:
            raise ProbeFailed(f"exchange failed: {why(e)}") from None
    status = line.decode("latin-1").strip()
    parts = status.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or parts[1] != "200":
        raise ProbeFailed(f"GET / answered {status!r}, not 200")
    return f"GET / answered {status!r}"


def http2Probe(skt: Any) -> str:
    """
    HTTP/2 (ALPN chose C{h2}): C{GET /} on stream 1 is answered with
    status 200.

    @param skt: The connected TLS socket.
    @return: What was answered.
    @raise ProbeFailed: If the answer is not 200, or the exchange fails.
    """
    fields = (
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", b"/"),
        (b"user-agent", b"netd-probe"),
    )
    request = [h2frames.PREFACE, h2frames.settingsFrame({})]
    request += h2frames.headersFrames(
        1, h2frames.encodeHeaders(fields), True, h2frames.DEFAULT_FRAME_SIZE
    )
    decoder = h2frames.HeaderDecoder(65536)
    block: list[bytes] = []
    rest = b""
    try:
        skt.sendall(b"".join(request))
        for _ in range(64):
            data = skt.recv(65536)
            if not data:
                break
            found, rest = h2frames.splitFrames(rest + data)
            reply = []
            for kind, flags, streamId, payload in found:
                if kind == h2frames.SETTINGS and not flags & h2frames.ACK:
                    reply.append(h2frames.SETTINGS_ACK)
                elif (
                    kind in (h2frames.HEADERS, h2frames.CONTINUATION) and streamId == 1
                ):
                    block.append(h2frames.headerFragment(kind, flags, payload))
                    if flags & h2frames.END_HEADERS:
                        headers = dict(decoder.decode(b"".join(block)))
                        status = headers.get(b":status", b"").decode("latin-1")
                        if status != "200":
                            raise ProbeFailed(
                                f"GET / over HTTP/2 answered {status}, not 200"
                            )
                        return f"GET / over HTTP/2 answered {status}"
                elif kind == h2frames.GOAWAY or (
                    kind == h2frames.RST_STREAM and streamId == 1
                ):
                    raise ProbeFailed("GET / over HTTP/2 was refused")
            if reply:
                skt.sendall(b"".join(reply))
    except OSError as e:
        raise ProbeFailed(f"exchange failed: {why(e)}") from None
    except h2frames.ConnectionError as e:
        raise ProbeFailed(f"HTTP/2 protocol error: {e}") from None
    raise ProbeFailed("GET / over HTTP/2 got no answer")


http = ServiceType(
    name="http",
    description="a fast, hardened static-file web server (HTTP/1.1; HTTPS and"
    " HTTP/2 on ssl: listeners; HTTP/3 on udp: listeners)",
    settings=SETTINGS,
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=buildDatagramProtocol,
    checkConfig=checkConfig,
    datagramConnections="HTTP/3",
    alpnProtocols=(b"h2", b"http/1.1"),
    alpn=alpnProtocols,
    uses=usedServices,
    ownedFiles=ownedFiles,
    readPaths=readPaths,
    probe=httpProbe,
    metrics=metrics,
)
