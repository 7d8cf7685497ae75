# -*- test-case-name: tests.test_listeners,tests.test_transport -*-
"""
Socket-level pieces of netd's listeners: socket options and bound addresses.

TCP: Twisted 26.10 takes a L{Binding} from L{makeBinding} in C{listenTCP},
which sets C{SO_REUSEADDR} and, on request, C{SO_REUSEPORT}; L{TCPEndpoint}
uses it. UDP: C{listenUDP} has no such hook (and no endpoint string), so
L{UDPPort} sets both options itself before binding.

Sockets bound elsewhere (passed by systemd, or by netd's main process to its
workers) are adopted by L{adoptStreamPort} and L{adoptDatagramPort}, the
counterparts of the reactor's methods of the same names that build netd's
own port classes, so an adopted TCP socket gets L{WriteThroughServer}
connections and an adopted UDP socket L{UDPPort}'s cheaper writes too.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, tcp, udp, unix
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.tcp import makeBinding
from zope.interface import implementer

from netd.transport import WriteThroughServer


@implementer(IStreamServerEndpoint)
class TCPEndpoint:
    """
    A TCP server endpoint with C{SO_REUSEADDR} always and C{SO_REUSEPORT} on
    request.

    Not Twisted's C{TCP4ServerEndpoint}: it cannot ask for C{SO_REUSEPORT} and
    builds a plain C{tcp.Port}, not L{TCPPort} (write-through connections).

    @ivar reactor: An L{IReactorTCP} provider.
    @ivar port: The port (0 for any).
    @ivar interface: The local address.
    @ivar backlog: The listen backlog.
    @ivar reusePort: Whether to set C{SO_REUSEPORT}.
    """

    def __init__(
        self, reactor: Any, port: int, interface: str, backlog: int, reusePort: bool
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog
        self.reusePort = reusePort

    def listen(self, protocolFactory: Any) -> defer.Deferred[Any]:
        """
        Bind and listen.

        @param protocolFactory: The factory for accepted connections.
        @return: A L{Deferred} firing with the L{IListeningPort}.
        """
        binding = makeBinding(
            self.interface, self.port, reuseAddress=True, reusePort=self.reusePort
        )
        # The interface is passed again: Twisted 26.10 picks the address
        # family from this argument, not from the binding, so without it an
        # IPv6 address is bound on an IPv4 socket and fails.
        # Twisted 26.10's Port accepts a Binding (its annotation says int).
        port = TCPPort(
            binding,  # type: ignore[arg-type]
            protocolFactory,
            self.backlog,
            self.interface,
            self.reactor,
        )
        try:
            port.startListening()
        except BaseException:
            return defer.fail()
        return defer.succeed(port)


def _ipv6Only(skt: socket.socket) -> None:
    """
    Make an IPv6 socket IPv6 only, so that C{tcp6:7} and C{tcp:7} (or
    C{udp6:7} and C{udp:7}) can both be bound, as each one says.

    @param skt: A socket, not yet bound.
    """
    if skt.family == socket.AF_INET6:
        skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


class TCPPort(tcp.Port):
    """
    A TCP port whose IPv6 sockets accept IPv6 only (C{IPV6_V6ONLY}) and
    whose connections write through to the socket when nothing is queued
    (L{WriteThroughServer}).

    The options of the L{Binding<twisted.internet.tcp.makeBinding>} it is
    given (C{SO_REUSEADDR}, C{SO_REUSEPORT}) are set by Twisted.
    """

    # Private Twisted API: see tests/test_twisted_canary.py.
    transport = WriteThroughServer

    def createInternetSocket(self) -> socket.socket:
        """
        Create the socket and set its options before it is bound.

        @return: The socket.
        """
        skt = super().createInternetSocket()
        _ipv6Only(skt)
        return skt


class SharedTCPPort(TCPPort):
    """
    A L{TCPPort} on a listening socket that several worker processes accept
    on (see L{netd.workers}): it accepts one connection per readiness event,
    as nginx does without C{multi_accept}.

    Every worker is woken for a new connection; Twisted's port would take
    every connection pending (up to its adaptive C{numberAccepts}, 100 and
    growing), so one worker would take a whole burst: measured with 100
    connections opened at once on two workers, 72% went to one of them.
    Taking one at a time lets each worker's next turn of the reactor take
    the next, so an idle worker takes more than a busy one.
    """

    # Private Twisted API: see tests/test_twisted_canary.py.
    @property
    def numberAccepts(self) -> int:
        """
        Connections accepted per readiness event: always 1.
        """
        return 1

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:
        """
        Ignore Twisted's adaptation of the batch size.

        @param value: The size Twisted would use.
        """


class AdoptedUNIXPort(unix.Port):
    """
    A UNIX stream port on a socket bound by another process (systemd, or
    netd's main process): closing it does not remove the socket's path.

    Twisted's L{unix.Port} removes the path when it closes even if it
    adopted the socket, so a worker that stopped (a retired generation, a
    stop) would take the path away from the workers still serving it, and
    from its owner, which removes it when it closes the socket itself.
    """

    def connectionLost(self, reason: Any) -> None:
        """
        Close the socket, leaving its path alone.

        @param reason: Why.
        """
        if self.lockFile is not None:
            self.lockFile.unlock()
        tcp.Port.connectionLost(self, reason)


_CHECKED_HOSTS_MAX = 4096


class UDPPort(udp.Port):
    """
    A UDP port with C{SO_REUSEADDR} always, C{SO_REUSEPORT} on request, and
    a cheaper L{write} for addresses it has already checked.
    """

    _checkedHosts: set[str]

    def __init__(
        self,
        port: int,
        proto: Any,
        interface: str,
        maxPacketSize: int,
        reactor: Any,
        reusePort: bool = False,
    ) -> None:
        super().__init__(port, proto, interface, maxPacketSize, reactor)
        self.reusePort = reusePort
        self._checkedHosts = set()

    def write(self, datagram: bytes, addr: Any = None) -> None:
        """
        Send a datagram, as L{udp.Port.write} does.

        Twisted checks that the destination is an address literal of the
        socket's family before every send (three parses, a microsecond per
        datagram: a tenth of an echo). A host that passed those checks once
        passes them again, so it is remembered and later datagrams to it go
        straight to C{sendto}; any error takes Twisted's path, which handles
        it.

        @param datagram: The payload.
        @param addr: The destination C{(host, port, ...)}.
        """
        if addr is not None and addr[0] in self._checkedHosts:
            try:
                self.socket.sendto(datagram, addr)
                return
            except OSError:
                pass
        super().write(datagram, addr)
        # Private Twisted API: see tests/test_twisted_canary.py.
        if addr is not None and not self._connectedAddr:
            if len(self._checkedHosts) >= _CHECKED_HOSTS_MAX:
                self._checkedHosts.clear()
            self._checkedHosts.add(addr[0])

    def createInternetSocket(self) -> socket.socket:
        """
        Create the socket and set its options before it is bound.

        @return: The socket.
        """
        skt = super().createInternetSocket()
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _ipv6Only(skt)
        if self.reusePort:
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return skt


def adoptStreamPort(
    reactor: Any, fd: int, family: int, factory: Any, shared: bool = False
) -> Any:
    """
    Listen on a bound, listening stream socket, as
    L{IReactorSocket.adoptStreamPort
    <twisted.internet.interfaces.IReactorSocket.adoptStreamPort>} does, but
    with a L{TCPPort} for TCP sockets and an L{AdoptedUNIXPort} for UNIX
    sockets.

    @param reactor: The reactor.
    @param fd: The descriptor, non-blocking; it is duplicated, not consumed.
    @param family: Its address family.
    @param factory: The factory for accepted connections.
    @param shared: Whether other processes accept on the socket too (a
        L{SharedTCPPort} then).
    @return: The L{IListeningPort}.
    """
    if family == socket.AF_UNIX:
        # Private Twisted API: see tests/test_twisted_canary.py.
        unixPort = AdoptedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
        unixPort.startListening()
        return unixPort
    if family not in (socket.AF_INET, socket.AF_INET6):
        return reactor.adoptStreamPort(fd, family, factory)
    portClass = SharedTCPPort if shared else TCPPort
    # Private Twisted API: see tests/test_twisted_canary.py.
    port = portClass._fromListeningDescriptor(reactor, fd, family, factory)
    port.startListening()
    return port


def adoptDatagramPort(
    reactor: Any, fd: int, family: int, protocol: Any, maxPacketSize: int
) -> UDPPort:
    """
    Serve a bound datagram socket, as L{IReactorSocket.adoptDatagramPort
    <twisted.internet.interfaces.IReactorSocket.adoptDatagramPort>} does, but
    with a L{UDPPort}.

    @param reactor: The reactor.
    @param fd: The descriptor, non-blocking; it is duplicated, not consumed.
    @param family: Its address family (C{AF_INET} or C{AF_INET6}).
    @param protocol: The datagram protocol.
    @param maxPacketSize: The largest datagram read.
    @return: The port.
    """
    # Private Twisted API: see tests/test_twisted_canary.py.
    port = UDPPort._fromListeningDescriptor(
        reactor, fd, family, protocol, maxPacketSize
    )
    port.startListening()
    return port


def describeAddress(kind: str, address: Any) -> str:
    """
    Format a bound address for the "listening on" line.

    @param kind: C{"tcp"}, C{"ssl"}, C{"udp"}, C{"unix"}, ...
    @param address: The port's L{getHost()<IListeningPort.getHost>}.
    @return: e.g. C{tcp:127.0.0.1:10007}, C{udp:[::1]:10007}.
    """
    host = getattr(address, "host", None)
    if host is None:
        name = getattr(address, "name", "")
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"{kind}:{name}"
    kind = kind.rstrip("6")
    if ":" in host:
        host = f"[{host}]"
    return f"{kind}:{host}:{address.port}"
