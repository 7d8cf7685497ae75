# -*- test-case-name: tests.test_descriptions -*-
"""
Listener descriptions: what a C{listen = [...]} entry says, as value objects.

Stream listeners use Twisted's endpoint description syntax (C{tcp:}, C{tcp6:},
C{ssl:}, C{unix:}, C{systemd:}). Twisted has no datagram endpoint strings, so
netd reads its own C{udp:PORT[:interface=ADDR]} and C{udp6:PORT[:...]} in the
same colon-and-backslash syntax.

C{systemd:NAME[:type=datagram]} names a socket passed by systemd (socket
activation) by its C{FileDescriptorName=}, stream or datagram.

Parsing here only checks and records; nothing is bound. The runtime side is
L{netd.listeners}.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from attrs import frozen
from twisted.internet.endpoints import serverFromString

from netd.tls import sslContextFactory

STREAM_KINDS = ("tcp", "tcp6", "ssl", "unix", "systemd")
DATAGRAM_KINDS = ("udp", "udp6")
REUSE_PORT_KINDS = ("tcp", "tcp6", "ssl", "udp", "udp6")
SSL_KEYWORDS = (
    "privateKey",
    "certKey",
    "sslmethod",
    "interface",
    "backlog",
    "extraCertChain",
    "dhParameters",
)


@frozen
class StreamListener:
    """
    A stream (TCP, TLS, UNIX or systemd-passed) listener.

    @ivar description: The Twisted endpoint description, as written.
    @ivar kind: The endpoint type: one of L{STREAM_KINDS}.
    @ivar port: The TCP port (C{tcp}, C{tcp6}, C{ssl}), else L{None}.
    @ivar interface: The local address to bind (C{tcp}, C{tcp6}, C{ssl}).
    @ivar backlog: The listen backlog (C{tcp}, C{tcp6}, C{ssl}).
    @ivar reusePort: Whether to set C{SO_REUSEPORT}.
    @ivar fdName: C{systemd}: the C{FileDescriptorName=} of the passed
        socket, if it is named.
    @ivar fdIndex: C{systemd}: the position of the passed socket, if it is
        given by position instead.
    @ivar domain: C{systemd}: the address family the socket must have
        (C{"INET"}, C{"INET6"}, C{"UNIX"}), or L{None} for any.
    """

    description: str
    kind: str
    port: int | None = None
    interface: str = ""
    backlog: int = 50
    reusePort: bool = False
    fdName: str | None = None
    fdIndex: int | None = None
    domain: str | None = None

    @property
    def transport(self) -> str:
        """
        C{"stream"}, as opposed to L{DatagramListener.transport}.
        """
        return "stream"

    def conflictKey(self) -> tuple[object, ...] | None:
        """
        A key that two listeners which cannot both bind share.

        @return: A tuple, or L{None} for an ephemeral port (port 0).
        """
        if self.kind in ("tcp", "tcp6", "ssl"):
            if self.port == 0:
                return None
            return ("tcp", self.port, self.interface)
        if self.kind == "systemd":
            return systemdKey(self.fdName, self.fdIndex)
        return (self.kind, self.description)


@frozen
class DatagramListener:
    """
    A UDP listener.

    @ivar description: The C{udp:} or C{udp6:} description, as written (or
        a C{systemd:NAME:type=datagram} one).
    @ivar port: The UDP port (0 for a socket passed by systemd).
    @ivar interface: The local address to bind.
    @ivar maxPacketSize: The largest datagram read.
    @ivar reusePort: Whether to set C{SO_REUSEPORT}.
    @ivar kind: C{"udp"}, or C{"systemd"} for a socket passed by systemd.
    @ivar fdName: C{systemd}: see L{StreamListener.fdName}.
    @ivar fdIndex: C{systemd}: see L{StreamListener.fdIndex}.
    @ivar domain: C{systemd}: see L{StreamListener.domain}.
    """

    description: str
    port: int
    interface: str
    maxPacketSize: int = 65535
    reusePort: bool = False
    kind: str = "udp"
    fdName: str | None = None
    fdIndex: int | None = None
    domain: str | None = None

    @property
    def transport(self) -> str:
        """
        C{"datagram"}, as opposed to L{StreamListener.transport}.
        """
        return "datagram"

    @property
    def socketPerWorker(self) -> bool:
        """
        Whether, with C{workers = N}, each worker gets a socket of its own
        (the main process binds one C{SO_REUSEPORT} socket per worker on the
        same address, and the kernel spreads datagrams across them by source
        address and port) rather than all of them sharing one: on a fixed
        C{udp:} port with C{reuse_port}. A socket from systemd cannot be
        copied, and an ephemeral port would differ per copy.
        """
        return self.kind == "udp" and self.port != 0 and self.reusePort

    def conflictKey(self) -> tuple[object, ...] | None:
        """
        A key that two listeners which cannot both bind share.

        @return: A tuple, or L{None} for an ephemeral port (port 0).
        """
        if self.kind == "systemd":
            return systemdKey(self.fdName, self.fdIndex)
        if self.port == 0:
            return None
        return ("udp", self.port, self.interface)


Listener = StreamListener | DatagramListener

SYSTEMD_DOMAINS = ("INET", "INET6", "UNIX")


def systemdKey(name: str | None, index: int | None) -> tuple[object, ...]:
    """
    The conflict key of a socket passed by systemd: naming one socket twice
    is a configuration error, whatever the transport.

    @param name: Its C{FileDescriptorName=}, or L{None}.
    @param index: Its position, or L{None}.
    @return: The key.
    """
    return ("systemd", name) if name is not None else ("systemd#", index)


def _parseSystemd(
    description: str, args: list[str], kwargs: dict[str, str], reusePort: bool
) -> Listener:
    """
    Parse a C{systemd:} description: a socket passed by systemd (socket
    activation), named by its C{FileDescriptorName=}.

    The syntax is C{systemd:NAME} (or C{systemd:name=NAME}) with optional
    C{type=stream} (the default) or C{type=datagram}, C{domain=INET|INET6|UNIX}
    (checked against the passed socket) and, for datagram sockets,
    C{maxPacketSize=N}. Twisted's C{systemd:domain=INET:index=N} is accepted
    too. Nothing is looked up here: the sockets exist only in the process
    systemd starts, so C{--check} works anywhere.

    @param description: The description, as written.
    @param args: Its positional fields (C{args[0]} is C{"systemd"}).
    @param kwargs: Its keyword fields.
    @param reusePort: Whether C{SO_REUSEPORT} was asked for.
    @return: A L{StreamListener} or a L{DatagramListener} of kind C{systemd}.
    @raise ValueError: With a message saying what is wrong.
    """
    usage = "expected systemd:NAME[:type=stream|datagram][:domain=INET|INET6|UNIX]"
    _checkKeywords(kwargs, ("name", "index", "type", "domain", "maxPacketSize"))
    if reusePort:
        raise ValueError("reuse_port does not apply to systemd: listeners")
    if len(args) > 2 or (len(args) == 2 and "name" in kwargs):
        raise ValueError(usage)
    name = args[1] if len(args) == 2 else kwargs.get("name")
    index = kwargs.get("index")
    if (name is None) == (index is None):
        raise ValueError(f"{usage} (or index=N instead of a name, not both)")
    if name is not None and not (name.isascii() and name.isprintable() and name):
        raise ValueError(f"socket name {name!r} must be printable ASCII")
    if index is not None and not _isNumber(index):
        raise ValueError(f"index {index!r} is not a number")
    fdIndex = int(index) if index is not None else None
    domain = kwargs.get("domain")
    if domain is not None and domain not in SYSTEMD_DOMAINS:
        raise ValueError(
            f"domain {domain!r} must be one of: {', '.join(SYSTEMD_DOMAINS)}"
        )
    socketType = kwargs.get("type", "stream")
    if socketType == "datagram":
        if domain == "UNIX":
            raise ValueError("UNIX datagram sockets are not supported")
        maxPacketSize = 65535
        if "maxPacketSize" in kwargs:
            text = kwargs["maxPacketSize"]
            if not _isNumber(text) or not 512 <= int(text) <= 65535:
                raise ValueError(f"maxPacketSize {text!r} must be 512 to 65535")
            maxPacketSize = int(text)
        return DatagramListener(
            description,
            0,
            "",
            maxPacketSize,
            kind="systemd",
            fdName=name,
            fdIndex=fdIndex,
            domain=domain,
        )
    if socketType != "stream":
        raise ValueError(f"type {socketType!r} must be stream or datagram")
    if "maxPacketSize" in kwargs:
        raise ValueError("maxPacketSize applies to type=datagram only")
    return StreamListener(
        description, "systemd", fdName=name, fdIndex=fdIndex, domain=domain
    )


def splitDescription(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split an endpoint description into positional and keyword arguments.

    This is the syntax of L{twisted.internet.endpoints.serverFromString}:
    fields separated by C{:}, C{key=value} fields are keywords, a backslash
    escapes the next character (so C{\\:\\:1} is C{::1}).

    @param description: e.g. C{"udp:7:interface=127.0.0.1"}.
    @return: C{(["udp", "7"], {"interface": "127.0.0.1"})}.
    """
    fields: list[tuple[str, int | None]] = []
    current: list[str] = []
    equals: int | None = None
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append(("".join(current), equals))
            current, equals = [], None
        else:
            if char == "=" and equals is None:
                equals = len(current)
            current.append(char)
    fields.append(("".join(current), equals))
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for text, split in fields:
        if split is None:
            args.append(text)
        else:
            kwargs[text[:split]] = text[split + 1 :]
    return args, kwargs


def _isNumber(text: str) -> bool:
    """
    Whether a field is a plain decimal number.

    @param text: The field.
    @return: C{True} for ASCII digits only: L{str.isdigit} also accepts
        superscript digits, which L{int} refuses.
    """
    return text.isascii() and text.isdigit()


def _port(text: str) -> int:
    """
    Parse a port number.

    @param text: The field.
    @return: The port.
    @raise ValueError: If it is not an integer from 0 to 65535.
    """
    if not _isNumber(text):
        raise ValueError(f"port {text!r} is not a number")
    port = int(text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0 to 65535)")
    return port


def _interface(text: str, ipv6: bool) -> str:
    """
    Check a local address.

    @param text: The address, e.g. C{127.0.0.1} or C{::1}.
    @param ipv6: Whether the listener type is an IPv6 one.
    @return: The address, normalised.
    @raise ValueError: If it is not an IP address of the right family.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(
            f"interface {text!r} is not an IP address (host names are not resolved)"
        ) from None
    if ipv6 and address.version != 6:
        raise ValueError(f"interface {text!r} is not an IPv6 address")
    return str(address)


def _checkKeywords(kwargs: dict[str, str], allowed: tuple[str, ...]) -> None:
    """
    Refuse keyword arguments a listener type does not take.

    @param kwargs: The keywords given.
    @param allowed: The keywords the type takes.
    @raise ValueError: Naming the first unknown keyword.
    """
    for key in kwargs:
        if key not in allowed:
            raise ValueError(
                f"unknown option {key!r} (this listener takes: {', '.join(allowed)})"
            )


def parseListener(description: str, reusePort: bool = False) -> Listener:
    """
    Parse and check one listener description.

    @param description: A Twisted stream endpoint description or a netd
        C{udp:}/C{udp6:} description.
    @param reusePort: Whether C{SO_REUSEPORT} was asked for.
    @return: The listener.
    @raise ValueError: With a message saying what is wrong.
    """
    args, kwargs = splitDescription(description)
    kind = args[0]
    if kind in DATAGRAM_KINDS:
        if len(args) != 2:
            raise ValueError(f"expected {kind}:PORT[:interface=ADDRESS]")
        _checkKeywords(kwargs, ("interface", "maxPacketSize"))
        ipv6 = kind == "udp6"
        interface = _interface(
            kwargs.get("interface", "::" if ipv6 else "0.0.0.0"), ipv6
        )
        maxPacketSize = 65535
        if "maxPacketSize" in kwargs:
            text = kwargs["maxPacketSize"]
            if not _isNumber(text) or not 512 <= int(text) <= 65535:
                raise ValueError(f"maxPacketSize {text!r} must be 512 to 65535")
            maxPacketSize = int(text)
        return DatagramListener(
            description, _port(args[1]), interface, maxPacketSize, reusePort
        )
    if kind in ("tcp", "tcp6"):
        if len(args) != 2:
            raise ValueError(f"expected {kind}:PORT[:interface=ADDRESS][:backlog=N]")
        _checkKeywords(kwargs, ("interface", "backlog"))
        ipv6 = kind == "tcp6"
        interface = _interface(
            kwargs.get("interface", "::" if ipv6 else "0.0.0.0"), ipv6
        )
        backlog = kwargs.get("backlog", "50")
        if not _isNumber(backlog) or not 1 <= int(backlog) <= 65535:
            raise ValueError(f"backlog {backlog!r} must be 1 to 65535")
        return StreamListener(
            description, kind, _port(args[1]), interface, int(backlog), reusePort
        )
    if kind == "ssl":
        if len(args) < 2:
            raise ValueError(
                "expected ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem[:interface=...]"
            )
        _checkKeywords(kwargs, SSL_KEYWORDS)
        port = _port(args[1])
        interface = _interface(kwargs.get("interface", "0.0.0.0"), False)
        backlog = kwargs.get("backlog", "50")
        if not _isNumber(backlog) or not 1 <= int(backlog) <= 65535:
            raise ValueError(f"backlog {backlog!r} must be 1 to 65535")
        sslContextFactory(description)
        return StreamListener(
            description, kind, port, interface, int(backlog), reusePort
        )
    if kind == "systemd":
        return _parseSystemd(description, args, kwargs, reusePort)
    if kind in STREAM_KINDS:
        if reusePort:
            raise ValueError(f"reuse_port does not apply to {kind}: listeners")
        try:
            serverFromString(None, description)
        except Exception as e:
            raise ValueError(f"invalid {kind}: description ({e})") from None
        return StreamListener(description, kind)
    raise ValueError(
        f"unknown listener type {kind!r} "
        f"(expected one of: {', '.join(STREAM_KINDS + DATAGRAM_KINDS)})"
    )
