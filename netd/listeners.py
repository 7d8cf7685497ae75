# -*- test-case-name: tests.test_listeners -*-
"""
Listeners: the one place where netd turns configured addresses into bound
ports.

For each listener of a service instance, L{buildListenerService} makes a
child service that binds in C{privilegedStartService} (so ports below 1024
can be bound as root before twistd drops privileges), logs one
C{"<service> listening on <address>"} line, and turns a bind failure into a
L{ListenError} that names the service, the listener and the cause.

Every stream listener is wrapped by L{netd.sessions.SessionFactory}
(admission, limits, session events) outside any TLS layer, so that a
refused client costs no TLS handshake.

A C{systemd:NAME} listener serves a socket passed by systemd instead of
binding one (L{netd.sockets.adoptStreamPort},
L{netd.sockets.adoptDatagramPort}), after checking its type
(L{netd.systemd.checkSocket}). On reload, a new listener whose socket is
the same as an old one's (L{socketKey}) takes the bound socket over
(L{ListenerService.takeOver}) instead of binding again.

With worker processes (C{workers} in C{[netd]}, see L{netd.workers}) the
main process binds every listener the same way but does not serve it: its
listener services are made by L{buildHeldListenerService}, and stop reading
their sockets as soon as they are bound. A worker's listener services are
given the inherited descriptor (L{ListenerService.passedFd}) and adopt it,
as they would a socket passed by systemd; they never bind.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Protocol as TypingProtocol
from typing import cast

from attrs import define
from twisted.application.service import Service
from twisted.internet import defer, udp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorFDSet,
    IReactorSocket,
    IReactorUNIX,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from netd.descriptions import (
    DatagramListener,
    Listener,
    StreamListener,
)
from netd.servicetype import ServiceContext, ServiceType
from netd.sessions import SessionFactory
from netd.tls import TLSFactory, sslContextFactory
from netd.sockets import (
    TCPEndpoint,
    UDPPort,
    adoptDatagramPort,
    adoptStreamPort,
    describeAddress,
)
from netd.systemd import InheritedSockets, SocketActivationError, checkSocket

PRIVILEGED_PORT_FIXES = (
    'ports below 1024 need privileges: start netd as root with user = "NAME" '
    "in [netd] (it binds, then drops root), pass the socket from systemd "
    "(socket activation), or grant CAP_NET_BIND_SERVICE "
    "(AmbientCapabilities= in the unit, or setcap on the Python binary)"
)


class ListenError(Exception):
    """
    A listener could not be bound.

    @ivar service: The service instance name.
    @ivar listener: The listener's description.
    @ivar cause: What went wrong, in words.
    """

    def __init__(self, service: str, listener: str, cause: str) -> None:
        super().__init__(service, listener, cause)
        self.service = service
        self.listener = listener
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.service} cannot listen on {self.listener}: {self.cause}"


def explainBindError(error: BaseException, port: int | None) -> str:
    """
    Say why a bind failed and, where there is one, what fixes it.

    @param error: The exception from the bind.
    @param port: The port that was being bound, if any.
    @return: One line.
    """
    socketError = getattr(error, "socketError", error)
    code = getattr(socketError, "errno", None)
    if code in (errno.EACCES, errno.EPERM):
        if port is not None and 0 < port < 1024:
            return f"permission denied; {PRIVILEGED_PORT_FIXES}"
        return "permission denied"
    if code == errno.EADDRINUSE:
        return (
            "address already in use (another process holds it: stop it, "
            "choose another port, or set reuse_port = true in both)"
        )
    if code == errno.EADDRNOTAVAIL:
        return "address not available (no local interface has this address)"
    strerror = getattr(socketError, "strerror", None)
    if strerror:
        return strerror[0].lower() + strerror[1:]
    return str(socketError) or type(socketError).__name__


def setReusePort(skt: socket.socket, reusePort: bool) -> None:
    """
    Set or clear C{SO_REUSEPORT} on a socket kept across a reload.

    @param skt: The socket.
    @param reusePort: The listener's C{reuse_port}.
    """
    if skt.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != int(reusePort):
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reusePort))


def inheritedSockets() -> InheritedSockets:
    """
    The sockets systemd passed to this process, read once.

    @return: Them.
    """
    global _inherited
    if _inherited is None:
        _inherited = InheritedSockets.fromEnvironment()
    return _inherited


_inherited: InheritedSockets | None = None


def socketKey(listener: Listener) -> tuple[object, ...] | None:
    """
    What identifies a listener's socket, for handing a bound socket from an
    old listener to a new one on reload.

    Options that can be changed on a bound socket (backlog, datagram size,
    C{SO_REUSEPORT}, TLS certificates) are not part of it: a listener that
    differs only in those keeps its socket.

    @param listener: A listener.
    @return: The key, or L{None} when the socket cannot be reused (an
        ephemeral port).
    """
    if listener.kind == "systemd":
        return (listener.transport, "systemd", listener.fdName, listener.fdIndex)
    if isinstance(listener, DatagramListener):
        if listener.port == 0:
            return None
        return ("datagram", listener.interface, listener.port)
    if listener.kind in ("tcp", "tcp6", "ssl"):
        if listener.port == 0:
            return None
        return ("stream", listener.interface, listener.port)
    return ("stream", listener.kind, listener.description)


def listenerName(service: str, listener: Listener) -> str:
    """
    The name of a listener's service, unique in a configuration: how a
    worker process finds the socket the main process passed for it.

    @param service: The service instance's name.
    @param listener: The listener.
    @return: e.g. C{"echo/tcp:7:interface=127.0.0.1"}.
    """
    return f"{service}/{listener.description}"


class IListenerReactor(IReactorCore, IReactorFDSet, IReactorSocket, IReactorUNIX):
    """
    The reactor a listener binds with: netd's ports register with it as
    descriptors (L{IReactorFDSet}), sockets passed by systemd of other
    families are adopted through it (L{IReactorSocket}), and C{unix:}
    listeners are built by L{serverFromString} with it (L{IReactorUNIX}).

    For type checking only, like Twisted's own C{_MakeTypesHappy} in
    L{twisted.protocols.portforward}: no reactor declares it, so never ask
    C{providedBy} about it.
    """


class ListenerOwner(TypingProtocol):
    """
    What a listener service needs of the service instance it listens for: a
    L{ServiceContext}, or in the main process of a netd with workers a
    L{HeldSocketOwner}.
    """

    @property
    def name(self) -> str:
        """
        The instance name.
        """

    @property
    def reactor(self) -> IListenerReactor:
        """
        The reactor its listeners bind with.
        """

    @property
    def ownPorts(self) -> set[int]:
        """
        The ports netd listens on, which each bound listener adds to.
        """


class ListenerService(Service):
    """
    One listener of a service instance: binds in C{privilegedStartService}
    (or C{startService}, if that did not run), stops listening in
    C{stopService}, and can hand its bound socket to a successor on reload
    (L{takeOver}).

    Not C{strports.service}: a listener must also adopt sockets from systemd
    or the main process, hand its socket over on reload and fail naming the
    service (L{ListenError}); it binds in C{privilegedStartService} the same.

    @ivar context: The service instance.
    @ivar listener: What to listen on.
    @ivar port: The L{IListeningPort}, once bound.
    @ivar passedFd: In a worker process, the descriptor of the socket the
        main process bound for this listener: it is adopted, never bound.
    """

    _log = Logger()
    port: IListeningPort | None = None
    listener: Listener
    passedFd: int | None = None

    def __init__(self, context: ListenerOwner, listener: Listener) -> None:
        self.context = context
        self.listener = listener
        self.setName(listenerName(context.name, listener))

    def privilegedStartService(self) -> None:
        """
        Bind, or raise L{ListenError}.
        """
        Service.privilegedStartService(self)
        self.bind()

    def startService(self) -> None:
        """
        Bind now unless L{privilegedStartService} did.
        """
        Service.startService(self)
        self.bind()

    def bind(self) -> None:
        """
        Bind unless already bound.

        @raise ListenError: If the listener cannot be bound.
        """
        if self.port is not None:
            return
        listener = self.listener
        note = ""
        try:
            if self.passedFd is not None:
                family = checkSocket(self.passedFd, listener.transport, None)
                port = self._adopt(self.passedFd, family)
                note = " (socket from the main process)"
            elif listener.kind == "systemd":
                fd = inheritedSockets().find(listener.fdName, listener.fdIndex)
                family = checkSocket(fd, listener.transport, listener.domain)
                # Twisted's ports need non-blocking sockets; systemd passes
                # them blocking unless the unit says otherwise.
                os.set_blocking(fd, False)
                port = self._adopt(fd, family)
            else:
                port = self._listen()
        except ListenError:
            raise
        except SocketActivationError as e:
            raise ListenError(self.context.name, listener.description, str(e)) from e
        except Exception as e:
            raise ListenError(
                self.context.name,
                listener.description,
                explainBindError(e, listener.port or None),
            ) from e
        self.port = port
        self._listening(port, note)

    def _listen(self) -> IListeningPort:
        """
        Bind an address (not a passed socket).

        @return: The L{IListeningPort}.
        """
        raise NotImplementedError()

    def _adopt(self, fd: int, family: int) -> IListeningPort:
        """
        Serve a socket passed by systemd (or by the main process).

        @param fd: Its descriptor (not consumed: it is duplicated).
        @param family: Its address family.
        @return: The L{IListeningPort}.
        """
        raise NotImplementedError()

    def _listening(self, port: IListeningPort, note: str) -> None:
        """
        Record and announce the bound port.

        @param port: The port, now this listener's.
        @param note: Appended to the log line (e.g. that the socket was kept).
        """
        address = port.getHost()
        number = getattr(address, "port", None)
        if number:
            self.context.ownPorts.add(number)
        kind = self.listener.kind
        if kind == "systemd":
            kind = self.listener.transport == "datagram" and "udp" or "tcp"
            if getattr(address, "host", None) is None:
                kind = "unix"
            name = self.listener.fdName or f"#{self.listener.fdIndex}"
            note = f" (systemd socket {name}){note}"
        elif isinstance(self.listener, DatagramListener):
            kind = "udp"
        self._log.info(
            "{service} listening on {address}{note}",
            service=self.context.name,
            address=describeAddress(kind, address),
            listener=self.listener.description,
            note=note,
        )

    def boundPortNumber(self) -> int | None:
        """
        @return: The bound port number, if bound to an IP address.
        """
        if self.port is None:
            return None
        return getattr(self.port.getHost(), "port", None)

    def takeOver(self, previous: ListenerService) -> None:
        """
        Serve the socket an old listener (of the configuration being
        replaced) is bound to, instead of binding a new one: reload keeps
        unchanged addresses open, with no gap and no need for privileges.

        @param previous: The old listener; it no longer owns the socket.
        @raise RuntimeError: If it has no socket to hand over.
        """
        port = previous.port
        if port is None:
            raise RuntimeError(f"{previous.name} has no socket to hand over")
        previous.port = None
        self.port = port
        self._switchTo(port)
        self._listening(port, " (socket kept)")

    def _switchTo(self, port: IListeningPort) -> None:
        """
        Make an adopted port deliver to this listener.

        @param port: The port.
        """
        raise NotImplementedError()

    def stopService(self) -> defer.Deferred[None] | None:
        """
        Stop listening (open sessions are not touched).

        @return: A L{Deferred} that fires when the port is closed.
        """
        Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return None
        # None of maybeDeferred's overloads takes a Deferred-or-None result.
        return defer.maybeDeferred(port.stopListening)  # type: ignore[call-overload]


class _FactoryPort(TypingProtocol):
    """
    What L{_StreamPortService._switchTo} changes on a port: every stream port
    netd binds or adopts is a C{tcp.Port} (a UNIX one too), which takes an
    L{IProtocolFactory} and keeps it in this attribute (L{IListeningPort}
    does not declare it; C{tcp.Port}'s annotation says C{Factory | None}).

    @ivar factory: The factory of the port's new connections.
    """

    factory: IProtocolFactory


class _StreamPortService(ListenerService):
    """
    One stream listener's socket, bound through an endpoint (or adopted)
    with a protocol factory: what L{StreamListenerService} serves sessions
    on, and L{HeldStreamListenerService} holds for the workers.

    @ivar endpoint: What binds it (L{None} for a socket passed by systemd).
    @ivar factory: The factory of its connections.
    """

    listener: StreamListener
    factory: IProtocolFactory

    def __init__(
        self,
        context: ListenerOwner,
        listener: StreamListener,
        endpoint: IStreamServerEndpoint | None,
        factory: IProtocolFactory,
    ) -> None:
        super().__init__(context, listener)
        self.endpoint = endpoint
        self.factory = factory

    def _listen(self) -> IListeningPort:
        """
        Listen through the endpoint, which binds synchronously.

        @return: The L{IListeningPort}.
        """
        endpoint = self.endpoint
        assert endpoint is not None, "a systemd listener adopts, never binds"
        result: list[IListeningPort | Failure] = []
        endpoint.listen(self.factory).addBoth(result.append)
        if not result:
            raise RuntimeError("the endpoint did not bind at once")
        port = result[0]
        if isinstance(port, Failure):
            port.raiseException()
        return port

    def _adopt(self, fd: int, family: int) -> IListeningPort:
        """
        Listen on a stream socket passed by systemd (or by the main process).

        @param fd: The descriptor.
        @param family: Its address family.
        @return: The L{IListeningPort} (a L{netd.sockets.TCPPort} for TCP).
        """
        return adoptStreamPort(
            self.context.reactor,
            fd,
            family,
            self.factory,
            shared=fd == self.passedFd,
        )

    def _switchTo(self, port: IListeningPort) -> None:
        """
        Give new connections on an adopted port to this listener's factory;
        apply the new backlog.

        @param port: The port.
        """
        streamPort = cast(_FactoryPort, port)
        old = streamPort.factory
        self.factory.doStart()
        streamPort.factory = self.factory
        old.doStop()
        skt = getattr(port, "socket", None)
        if skt is not None and self.listener.kind in ("tcp", "tcp6", "ssl"):
            skt.listen(self.listener.backlog)
            setReusePort(skt, self.listener.reusePort)


class StreamListenerService(_StreamPortService):
    """
    One stream listener of a service instance.

    @ivar factory: The L{SessionFactory} of its sessions: C{factory.protocols}
        holds every open session.
    @ivar alpnProtocols: The ALPN protocol names its service speaks (for an
        C{ssl:} listener's certificate reload).
    """

    factory: SessionFactory

    def __init__(
        self,
        context: ListenerOwner,
        listener: StreamListener,
        endpoint: IStreamServerEndpoint | None,
        factory: SessionFactory,
        alpnProtocols: tuple[bytes, ...] = (),
    ) -> None:
        super().__init__(context, listener, endpoint, factory)
        self.alpnProtocols = alpnProtocols

    def reloadCertificate(self) -> bool:
        """
        Re-read an C{ssl:} listener's certificate and key: new sessions get
        them, open ones keep theirs.

        @return: Whether there was a certificate to reload.
        @raise ValueError: If it cannot be loaded (the old one stays).
        """
        if self.listener.kind != "ssl":
            return False
        old = self.factory.wrappedFactory
        new = TLSFactory(
            sslContextFactory(self.listener.description, self.alpnProtocols),
            False,
            old.wrappedFactory,
        )
        new.noisy = False
        if self.port is not None:
            new.doStart()
        self.factory.wrappedFactory = new
        if self.port is not None:
            old.doStop()
        return True


class DatagramListenerService(ListenerService):
    """
    One UDP listener of a service instance.

    Twisted has no datagram endpoints, and C{internet.UDPServer} cannot set
    socket options before binding, so this binds a L{UDPPort} itself.

    @ivar protocol: The service's datagram protocol for this listener.
    """

    listener: DatagramListener

    def __init__(
        self,
        context: ListenerOwner,
        listener: DatagramListener,
        protocol: DatagramProtocol,
    ) -> None:
        super().__init__(context, listener)
        self.protocol = protocol

    def _listen(self) -> UDPPort:
        """
        Create, configure and bind the socket.

        @return: The L{UDPPort}.
        """
        listener = self.listener
        port = UDPPort(
            listener.port,
            self.protocol,
            listener.interface,
            listener.maxPacketSize,
            self.context.reactor,
            listener.reusePort,
        )
        port.startListening()
        return port

    def _adopt(self, fd: int, family: int) -> UDPPort:
        """
        Serve a datagram socket passed by systemd (or by the main process).

        @param fd: The descriptor.
        @param family: Its address family.
        @return: The L{UDPPort}.
        """
        return adoptDatagramPort(
            self.context.reactor, fd, family, self.protocol, self.listener.maxPacketSize
        )

    def reloadCertificate(self) -> bool:
        """
        Re-read the certificate of a protocol that has one (HTTP/3): new
        connections get it, open ones keep theirs.

        @return: Whether there was a certificate to reload.
        @raise ValueError: If it cannot be loaded (the old one stays).
        """
        reload = getattr(self.protocol, "reloadCertificate", None)
        return bool(reload()) if reload is not None else False

    def _switchTo(self, port: IListeningPort) -> None:
        """
        Deliver datagrams on an adopted port to this listener's protocol.

        @param port: The port.
        """
        # Every datagram port netd binds or adopts is a UDPPort; its protocol
        # and packet size are udp.Port's attributes, not the interface's.
        datagramPort = cast(udp.Port, port)
        datagramPort.protocol.doStop()
        datagramPort.protocol = self.protocol
        datagramPort.maxPacketSize = self.listener.maxPacketSize
        self.protocol.makeConnection(datagramPort)
        skt = getattr(port, "socket", None)
        if skt is not None and self.listener.kind == "udp":
            setReusePort(skt, self.listener.reusePort)


def streamEndpoint(
    context: ListenerOwner, listener: StreamListener
) -> IStreamServerEndpoint | None:
    """
    The endpoint a stream listener binds through.

    @param context: The service instance (only its reactor is used).
    @param listener: The listener.
    @return: An L{IStreamServerEndpoint} provider, or L{None} for a
        socket passed by systemd.
    """
    if listener.kind in ("tcp", "tcp6", "ssl"):
        assert listener.port is not None
        return TCPEndpoint(
            context.reactor,
            listener.port,
            listener.interface,
            listener.backlog,
            listener.reusePort,
        )
    if listener.kind == "systemd":
        return None
    return serverFromString(context.reactor, listener.description)


def buildListenerService(
    context: ServiceContext,
    serviceType: ServiceType,
    listener: Listener,
    streamFactory: IProtocolFactory | None = None,
) -> Service:
    """
    Build the service that binds one listener.

    @param context: The service instance.
    @param serviceType: Its type.
    @param listener: The listener.
    @param streamFactory: The service's stream protocol factory, shared by
        its stream listeners (built by the caller, once).
    @return: A L{StreamListenerService} or a L{DatagramListenerService}.
    """
    if isinstance(listener, DatagramListener):
        assert serviceType.buildDatagramProtocol is not None
        protocol = serviceType.buildDatagramProtocol(context, listener)
        return DatagramListenerService(context, listener, protocol)
    assert streamFactory is not None, "a stream listener needs the stream factory"
    factory = streamFactory
    alpn = serviceType.alpnFor(context.config.settings)
    if listener.kind == "ssl":
        tls = TLSFactory(
            sslContextFactory(listener.description, alpn),
            False,
            factory,
        )
        tls.noisy = False
        factory = tls
    sessions = SessionFactory(factory, context, listener.description)
    return StreamListenerService(
        context,
        listener,
        streamEndpoint(context, listener),
        sessions,
        alpn,
    )


@define(eq=False)
class HeldSocketOwner:
    """
    What a held listener (L{buildHeldListenerService}) needs of a service
    instance: the main process of a netd with workers builds no service, only
    its sockets.

    @ivar name: The service's name.
    @ivar reactor: The reactor.
    @ivar ownPorts: The ports netd listens on (filled as they are bound).
    """

    name: str
    reactor: IListenerReactor
    ownPorts: set[int]


class _HeldListener(ListenerService):
    """
    Mixed into a listener service of the main process of a netd with
    workers: it binds (or adopts a socket from systemd) exactly as the
    listener service it extends, then stops reading the socket, which is
    kept open for the workers to inherit.
    """

    def bind(self) -> None:
        """
        Bind unless already bound, and do not serve.

        @raise ListenError: If the listener cannot be bound.
        """
        if self.port is not None:
            return
        super().bind()
        self._descriptor().stopReading()

    def _descriptor(self) -> FileDescriptor:
        """
        @return: The bound port (netd's and Twisted's socket ports are all
            file descriptors).
        @raise RuntimeError: If there is none.
        """
        port = self.port
        if not isinstance(port, FileDescriptor):
            raise RuntimeError(f"{self.name} holds no socket")
        return port

    def fileno(self) -> int:
        """
        @return: The bound socket's descriptor.
        """
        return int(self._descriptor().fileno())


class HeldStreamListenerService(_HeldListener, _StreamPortService):
    """
    A stream socket bound by the main process for its workers.
    """


class HeldDatagramListenerService(_HeldListener, DatagramListenerService):
    """
    A datagram socket bound by the main process for its workers.
    """


def buildHeldListenerService(
    owner: HeldSocketOwner, listener: Listener
) -> HeldStreamListenerService | HeldDatagramListenerService:
    """
    Build the service that binds one listener's socket in the main process
    of a netd with workers, the same way as L{buildListenerService} does,
    with placeholders that are never called instead of the service's
    protocols (the socket is not read).

    @param owner: The service the listener belongs to.
    @param listener: The listener.
    @return: A L{HeldStreamListenerService} or L{HeldDatagramListenerService}.
    """
    if isinstance(listener, DatagramListener):
        protocol = DatagramProtocol()
        protocol.noisy = False
        return HeldDatagramListenerService(owner, listener, protocol)
    factory = Factory.forProtocol(Protocol)
    factory.noisy = False
    return HeldStreamListenerService(
        owner, listener, streamEndpoint(owner, listener), factory
    )
