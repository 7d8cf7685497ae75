# -*- test-case-name: tests.test_control -*-
"""
netd's control socket: how C{netd status}, C{netd reload} and C{netd stop}
reach the running daemon.

A UNIX stream socket (mode 0600: only netd's own user and root can use it)
speaking JSON lines: one request object per line, C{{"command": "status"}},
one response object per line. JSON lines rather than AMP because its only
client is a short command-line program that needs no reactor (a socket and
C{json} in a few lines, L{request}) and because an operator can talk to it
by hand (C{echo '{"command":"status"}' | nc -NU /run/netd/control.sock}).

L{ControlService} is a child of the root service (L{netd.tap.makeService}
adds it when C{--control PATH} is given, as C{netd run} does); it binds in
C{privilegedStartService}, before privileges are dropped, and calls the
root service's C{status()} and C{reload()} (a L{Deferred} of its
L{ReloadResult<netd.served.ReloadResult>}), reads what it serves
(L{InProcessServices}, or L{HeldSockets} with workers), and stops the
reactor for C{stop}, which then drains sessions as SIGTERM does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import tempfile
import time
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)
from twisted.protocols.basic import LineOnlyReceiver

from netd import __version__
from netd.instances import InProcessServices
from netd.listeners import ListenError, explainBindError
from netd.served import ReloadResult
from netd.workers.supervisor import HeldSockets

DEFAULT_SYSTEM_PATH = "/run/netd/control.sock"


def defaultControlPath(euid: int | None = None, environ: Any = None) -> str:
    """
    Where C{netd run} puts its control socket, and where C{netd status}
    looks for it, when not told.

    @param euid: The effective uid (the current one if L{None}).
    @param environ: The environment (L{os.environ} if L{None}).
    @return: C{/run/netd/control.sock} for root (the systemd unit's
        C{RuntimeDirectory=netd}), else C{netd-UID.sock} in
        C{$XDG_RUNTIME_DIR} or the temporary directory.
    """
    euid = os.geteuid() if euid is None else euid
    environ = os.environ if environ is None else environ
    if euid == 0:
        return DEFAULT_SYSTEM_PATH
    directory = environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(directory, f"netd-{euid}.sock")


class ControlError(Exception):
    """
    No netd answers on the control socket (for its client, L{request}).
    """


class ControlProtocol(LineOnlyReceiver):
    """
    One control connection: a JSON request per line, a JSON response per
    line.
    """

    delimiter = b"\n"
    MAX_LENGTH = 65536
    factory: ControlFactory

    def lineReceived(self, line: bytes) -> None:
        """
        Answer one request.

        @param line: A JSON object with a C{command}.
        """
        try:
            request = json.loads(line)
            command = request["command"]
        except (ValueError, TypeError, KeyError):
            self.respond({"ok": False, "error": 'expected {"command": NAME}'})
            return
        handler = getattr(self.factory.control, f"command_{command}", None)
        if handler is None:
            self.respond({"ok": False, "error": f"unknown command {command!r}"})
            return
        d = defer.maybeDeferred(handler)
        d.addCallback(self.respond)
        d.addErrback(self._failed, command)

    def _failed(self, failure: Any, command: str) -> None:
        """
        A command raised: log it, tell the client.

        @param failure: The failure.
        @param command: The command.
        """
        self.factory.control._log.failure(
            "control command {command} failed", failure, command=command
        )
        self.respond({"ok": False, "error": failure.getErrorMessage()})

    def respond(self, response: dict[str, Any]) -> None:
        """
        @param response: The response object.
        """
        if self.transport is not None:
            self.sendLine(json.dumps(response).encode("utf-8"))

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A request too long: drop the connection.

        @param line: The start of it.
        """
        if self.transport is not None:
            self.transport.loseConnection()


class ControlFactory(Factory[ControlProtocol]):
    """
    Builds L{ControlProtocol}s for a L{ControlService}.
    """

    noisy = False

    def __init__(self, control: ControlService) -> None:
        self.control = control

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        """
        @param addr: The client's address.
        @return: A L{ControlProtocol}.
        """
        protocol = ControlProtocol()
        protocol.factory = self
        return protocol


class ControlService(Service):
    """
    The control socket, as a child of netd's root service.

    @ivar path: The socket's path.
    @ivar root: The root service (L{netd.daemon.NetdService} or a subclass).
    @ivar port: The listening port, once bound.
    """

    _log = Logger()

    def __init__(self, path: str, root: Any, reactor: Any = None) -> None:
        self.path = path
        self.root = root
        self._reactor = reactor
        self.port: Any = None
        self.started = time.time()
        self.setName("control")

    @property
    def reactor(self) -> Any:
        """
        The reactor (the global one unless given).
        """
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def privilegedStartService(self) -> None:
        """
        Bind the socket (as root, under twistd).

        @raise ListenError: If it cannot be bound.
        """
        super().privilegedStartService()
        self.bind()

    def startService(self) -> None:
        """
        Bind the socket if L{privilegedStartService} did not.

        @raise ListenError: If it cannot be bound.
        """
        super().startService()
        self.bind()

    def bind(self) -> None:
        """
        Listen on L{path} (mode 0600), replacing a stale socket file that no
        process answers on.

        @raise ListenError: If another process answers there, or binding
            fails (netd's start-up reports it as one line, exit 71).
        """
        if self.port is not None:
            return
        directory = os.path.dirname(self.path)
        try:
            if directory and not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            if os.path.exists(self.path):
                if answers(self.path):
                    raise ListenError(
                        "the control socket",
                        self.path,
                        "another netd answers there (netd stop, or give "
                        "--control another path)",
                    )
                os.unlink(self.path)
            self.port = self.reactor.listenUNIX(
                self.path, ControlFactory(self), mode=0o600
            )
        except OSError as e:
            raise ListenError(
                "the control socket", self.path, explainBindError(e, None)
            ) from None
        except CannotListenError as e:
            raise ListenError(
                "the control socket", self.path, explainBindError(e, None)
            ) from None
        self._log.info("control socket on {path}", path=self.path)

    def stopService(self) -> Any:
        """
        Stop listening and remove the socket file.

        @return: A L{Deferred} that fires once closed.
        """
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        d = defer.maybeDeferred(port.stopListening)

        def removed(result: Any) -> Any:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            return result

        return d.addBoth(removed)

    # Commands: each returns a response object, or a Deferred of one.

    def command_status(self) -> dict[str, Any]:
        """
        @return: What the daemon is serving: every service with its
            listeners (the bound ports), open sessions and counters, and the
            number of worker processes.
        """
        root = self.root
        served = root.served
        services = []
        instances = (
            served.serviceInstances() if isinstance(served, InProcessServices) else []
        )
        for instance in instances:
            listeners = []
            for listener in instance.listenerServices():
                listeners.append(
                    {
                        "listener": listener.listener.description,
                        "port": listener.boundPortNumber(),
                    }
                )
            sessions = sum(
                len(getattr(factory, "protocols", ()))
                for factory in instance.sessionFactories()
            )
            services.append(
                {
                    "name": instance.name,
                    "type": instance.context.config.type,
                    "listeners": listeners,
                    "sessions": sessions,
                    "counters": instance.context.counters.snapshot(),
                }
            )
        processes = []
        if isinstance(served, HeldSockets):
            generation = served.supervisor.current
            slots = generation.slots if generation is not None else []
            for slot in slots:
                processes.append(
                    {
                        "index": slot.index,
                        "pid": slot.process.pid if slot.process else None,
                        "ready": slot.ready,
                        "generation": slot.generation.number,
                    }
                )
            for service in served.config.services:
                services.append(
                    {
                        "name": service.name,
                        "type": service.type,
                        "listeners": [
                            {"listener": listener.description}
                            for listener in service.listeners
                        ],
                    }
                )
        return {
            "ok": True,
            "status": root.status(),
            "pid": os.getpid(),
            "version": __version__,
            "config": root.configPath or root.config.source,
            "uptime": round(time.time() - self.started, 3),
            "workers": (served.workerCount if isinstance(served, HeldSockets) else 1),
            "workerProcesses": processes,
            "sessions": (
                len(served.openSessions())
                if isinstance(served, InProcessServices)
                else None
            ),
            "services": services,
        }

    def command_reload(self) -> defer.Deferred[dict[str, Any]]:
        """
        Reload the configuration, as SIGHUP does.

        @return: A L{Deferred} of C{{"ok": bool}} with the errors logged
            while reloading.
        """
        errors: list[str] = []

        def collect(event: dict[str, Any]) -> None:
            level = event.get("log_level")
            if level in (LogLevel.error, LogLevel.critical):
                errors.append(formatEvent(event))

        observer = cast(ILogObserver, collect)

        globalLogPublisher.addObserver(observer)
        d = self.root.reload()

        def done(result: ReloadResult) -> dict[str, Any]:
            globalLogPublisher.removeObserver(observer)
            response: dict[str, Any] = {
                "ok": result.applied,
                "status": self.root.status(),
                "summary": result.summary,
            }
            if not result.applied:
                response["error"] = "; ".join(errors) or result.summary
            return response

        def failed(failure: Any) -> Any:
            globalLogPublisher.removeObserver(observer)
            return failure

        return d.addCallbacks(done, failed)

    def command_stop(self) -> dict[str, Any]:
        """
        Stop, as SIGTERM does (listeners close at once, sessions drain).

        @return: C{{"ok": true}}, sent before the reactor stops.
        """
        self._log.info("stop requested on the control socket")
        self.reactor.callLater(0, _stopReactor, self.reactor)
        return {
            "ok": True,
            "pid": os.getpid(),
            "drainTimeout": self.root.config.drainTimeout,
        }


def _stopReactor(reactor: Any) -> None:
    """
    Stop the reactor unless it already is stopping.

    @param reactor: The reactor.
    """
    from twisted.internet.error import ReactorNotRunning

    with contextlib.suppress(ReactorNotRunning):
        reactor.stop()


def answers(path: str) -> bool:
    """
    @param path: A UNIX socket path.
    @return: Whether a process accepts connections on it.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def request(
    path: str, command: str, timeout: float = 30.0, waitForClose: float = 0.0
) -> dict[str, Any]:
    """
    Send one command to a running netd and read its answer (blocking: for
    the C{netd} command, which has no reactor).

    @param path: The control socket.
    @param command: C{status}, C{reload} or C{stop}.
    @param timeout: Seconds to wait for the answer.
    @param waitForClose: After the answer, wait up to this many seconds for
        the daemon to close the connection (it does as it exits: C{stop}).
    @return: The response object; with C{waitForClose}, C{"closed"} says
        whether it closed in time.
    @raise ControlError: If no netd answers there.
    """
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(timeout)
        try:
            client.connect(path)
        except OSError as e:
            why = {
                errno.ENOENT: "no such socket (is netd running, with --control?)",
                errno.ECONNREFUSED: "nothing answers (a stale socket: netd is not "
                "running)",
                errno.EACCES: "permission denied (run as netd's user or root)",
            }.get(e.errno or 0, e.strerror or str(e))
            raise ControlError(f"control socket {path}: {why}") from None
        client.sendall(json.dumps({"command": command}).encode("utf-8") + b"\n")
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = client.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(
                f"control socket {path}: no answer in {timeout:g}s"
            ) from None
        if not data.endswith(b"\n"):
            raise ControlError(f"control socket {path}: netd closed the connection")
        response: dict[str, Any] = json.loads(data)
        if waitForClose:
            client.settimeout(waitForClose)
            try:
                response["closed"] = client.recv(1) == b""
            except (TimeoutError, OSError):
                response["closed"] = False
        return response
    finally:
        client.close()
