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
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from netd.descriptions import (
    DatagramListener,
    Listener,
    StreamListener,
    sslContextFactory,
)
from netd.servicetype import ServiceContext, ServiceType
from netd.sessions import SessionFactory
from netd.sockets import TCPEndpoint, UDPPort, describeAddress

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


class StreamListenerService(StreamServerEndpointService):
    """
    One stream listener of a service instance.

    @ivar listener: What to listen on.
    @ivar port: The listening port, once bound.
    """

    _log = Logger()
    _raiseSynchronously = True
    port: Any = None

    def __init__(
        self,
        context: ServiceContext,
        listener: StreamListener,
        endpoint: Any,
        factory: SessionFactory,
    ) -> None:
        super().__init__(endpoint, factory)
        self.context = context
        self.listener = listener
        self.setName(f"{context.name}/{listener.description}")

    def privilegedStartService(self) -> None:
        """
        Bind, or raise L{ListenError}.
        """
        self._raiseSynchronously = True
        try:
            super().privilegedStartService()
        except Exception as e:
            self._waitingForPort = None
            raise ListenError(
                self.context.name,
                self.listener.description,
                explainBindError(e, self.listener.port),
            ) from e
        self._waitingForPort.addCallback(self._listening)

    def startService(self) -> None:
        """
        Bind now unless L{privilegedStartService} did.
        """
        Service.startService(self)
        if self._waitingForPort is None:
            self.privilegedStartService()

    def _listening(self, port: Any) -> Any:
        """
        Record and announce a bound port.

        @param port: The L{IListeningPort}.
        @return: C{port}.
        """
        self.port = port
        address = port.getHost()
        if getattr(address, "port", None):
            self.context.ownPorts.add(address.port)
        self._log.info(
            "{service} listening on {address}",
            service=self.context.name,
            address=describeAddress(self.listener.kind, address),
            listener=self.listener.description,
        )
        return port

    def stopService(self) -> defer.Deferred[None] | None:
        """
        Stop listening (open sessions are not touched).

        @return: A L{Deferred} that fires when the port is closed.
        """
        self.port = None
        if self._waitingForPort is None:
            Service.stopService(self)
            return None
        d = super().stopService()
        self._waitingForPort = None
        return d


class DatagramListenerService(Service):
    """
    One UDP listener of a service instance.

    Twisted has no datagram endpoints, and C{internet.UDPServer} cannot set
    socket options before binding, so this binds a L{UDPPort} itself.

    @ivar listener: What to listen on.
    @ivar protocol: The service's datagram protocol for this listener.
    @ivar port: The L{UDPPort}, once bound.
    """

    _log = Logger()
    port: UDPPort | None = None

    def __init__(
        self, context: ServiceContext, listener: DatagramListener, protocol: Any
    ) -> None:
        self.context = context
        self.listener = listener
        self.protocol = protocol
        self.setName(f"{context.name}/{listener.description}")

    def privilegedStartService(self) -> None:
        """
        Bind, or raise L{ListenError}.
        """
        Service.privilegedStartService(self)
        self._bind()

    def startService(self) -> None:
        """
        Bind now unless L{privilegedStartService} did.
        """
        Service.startService(self)
        if self.port is None:
            self._bind()

    def _bind(self) -> None:
        """
        Create, configure and bind the socket.
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
        try:
            port.startListening()
        except CannotListenError as e:
            raise ListenError(
                self.context.name,
                listener.description,
                explainBindError(e, listener.port),
            ) from e
        self.port = port
        address = port.getHost()
        self.context.ownPorts.add(address.port)
        self._log.info(
            "{service} listening on {address}",
            service=self.context.name,
            address=describeAddress("udp", address),
            listener=listener.description,
        )

    def stopService(self) -> defer.Deferred[None] | None:
        """
        Stop listening.

        @return: A L{Deferred} that fires when the port is closed.
        """
        Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return None
        return defer.maybeDeferred(port.stopListening)


def streamEndpoint(context: ServiceContext, listener: StreamListener) -> Any:
    """
    The endpoint a stream listener binds through.

    @param context: The service instance.
    @param listener: The listener.
    @return: An L{IStreamServerEndpoint} provider.
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
    return serverFromString(context.reactor, listener.description)


def buildListenerService(
    context: ServiceContext,
    serviceType: ServiceType,
    listener: Listener,
    streamFactory: Any = None,
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
    factory = streamFactory
    if listener.kind == "ssl":
        factory = TLSMemoryBIOFactory(
            sslContextFactory(listener.description), False, factory
        )
        factory.noisy = False
    sessions = SessionFactory(factory, context, listener.description)
    return StreamListenerService(
        context, listener, streamEndpoint(context, listener), sessions
    )
