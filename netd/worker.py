# -*- test-case-name: tests.test_worker -*-
"""
A worker process of a netd with C{workers} (see L{netd.workers}).

Started by the main process as C{python -P -m netd.worker INDEX}, already
unprivileged, with its pipes and sockets in place (L{netd.workers} lists
them). It reads its configuration (the TOML text the main process
validated) from its control pipe, builds the services it serves
(L{WorkerService}: a L{NetdService} whose listeners adopt the sockets the
main process bound instead of binding), reports ready, and serves until:

    - C{SIGTERM} (forwarded by the main process): stop listening at once,
      drain open sessions for up to C{drain_timeout}, exit 0; a second
      C{SIGTERM} closes the sessions at once;
    - its control pipe closes (the main process is gone), or the main
      process dies (C{PR_SET_PDEATHSIG}): the same drain.

A reload arrives on the control pipe with the new validated text and is
applied as a single netd applies one (unchanged services keep their
sessions). The worker writes no log file: its log events go to the main
process as JSON lines (L{EventPipe}), which logs them with a C{worker}
field.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from attrs import evolve
from twisted.internet import abstract, fdesc
from twisted.logger import ILogObserver, Logger, eventAsJSON, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.config import ConfigError, NetdConfig, ServiceConfig, parseConfig
from netd.services import serviceTypes
from netd.daemon import NetdService, ServiceInstance
from netd.listeners import listenerName
from netd.servicetype import ServiceContext

CONTROL_FD = 0
EVENTS_FD = 3
EX_CONFIG = 78
PR_SET_PDEATHSIG = 1


def setParentDeathSignal(signum: int = signal.SIGTERM) -> bool:
    """
    Ask the kernel to send this process a signal when its parent dies
    (Linux's C{PR_SET_PDEATHSIG}).

    @param signum: The signal.
    @return: Whether it was set.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def installReactor(name: str | None) -> None:
    """
    Install the same kind of reactor as the main process runs (its default,
    or what C{twistd --reactor} chose), falling back to Twisted's default.

    @param name: The fully qualified name of the main process's reactor
        class, if known.
    """
    from twisted.internet.main import installReactor as install
    from twisted.python.reflect import namedAny

    if "twisted.internet.reactor" in sys.modules:
        return
    if name:
        try:
            reactorClass = namedAny(name)
            install(reactorClass())
            return
        except Exception as e:
            # Standard error reaches the main process's log.
            sys.stderr.write(
                f"netd worker: cannot use the main process's reactor {name}: "
                f"{e}; using Twisted's default\n"
            )
    from twisted.internet import default

    default.install()


def servedConfig(config: NetdConfig, sockets: Mapping[str, int]) -> NetdConfig:
    """
    The part of a configuration a worker serves: the services whose every
    listener it was given a socket for.

    @param config: The whole configuration.
    @param sockets: Its sockets, by listener service name.
    @return: The configuration, with only those services.
    """
    return evolve(
        config,
        services=tuple(
            service
            for service in config.services
            if all(
                listenerName(service.name, listener) in sockets
                for listener in service.listeners
            )
        ),
    )


@implementer(ILogObserver)
class EventPipe:
    """
    A log observer writing each event as a JSON line (L{eventAsJSON}) to a
    pipe the main process reads; also carries L{send}'s messages.

    The writes block: a worker never loses its log, and the main process
    reads its pipes at once. If the main process is gone, events are
    dropped.

    @ivar fd: The pipe.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.broken = False

    def __call__(self, event: dict[str, Any]) -> None:
        """
        Write an event.

        @param event: A log event.
        """
        try:
            line = eventAsJSON(event)
        except Exception:
            return
        self._write(line.encode("utf-8") + b"\n")

    def send(self, message: dict[str, Any]) -> None:
        """
        Write a message for the main process.

        @param message: e.g. C{{"netdWorker": "ready"}}.
        """
        self._write(json.dumps(message).encode("utf-8") + b"\n")

    def _write(self, data: bytes) -> None:
        """
        Write all of C{data}, unless the pipe is broken.

        @param data: The bytes.
        """
        view = memoryview(data)
        while view and not self.broken:
            try:
                view = view[os.write(self.fd, view) :]
            except InterruptedError:
                continue
            except OSError:
                self.broken = True


class WorkerService(NetdService):
    """
    The root service of a worker process: serves the services whose sockets
    the main process passed, adopting them.

    @ivar index: The worker's index.
    @ivar sockets: The inherited descriptors, by listener service name.
    @ivar mainPorts: Every port netd listens on, including those of services
        this worker does not serve.
    """

    _log = Logger()

    def __init__(
        self,
        config: NetdConfig,
        reactor: Any = None,
        stderr: Any = None,
        *,
        index: int = 0,
        sockets: Mapping[str, int],
        ownPorts: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> None:
        self.index = index
        self.sockets = dict(sockets)
        self.mainPorts = set(ownPorts)
        self._signalled = False
        super().__init__(servedConfig(config, sockets), reactor, stderr, **kwargs)
        self.ownPorts.update(self.mainPorts)

    def _buildInstance(
        self,
        service: ServiceConfig,
        config: NetdConfig,
        instances: dict[str, ServiceContext],
    ) -> ServiceInstance:
        """
        @param service: One service's configuration.
        @param config: The whole configuration.
        @param instances: The registry the instance joins.
        @return: A new, unstarted L{ServiceInstance} whose listeners adopt
            the inherited sockets.
        """
        return ServiceInstance(
            service,
            self.ownPorts,
            config.statsInterval,
            self.reactor,
            instances,
            sockets=self.sockets,
            drainTimeout=config.drainTimeout,
        )

    def _openLogs(self) -> None:
        """
        Open nothing: the main process owns the log destinations.
        """

    def _reconfigureLogs(self, config: NetdConfig) -> None:
        """
        Nothing to do: the main process owns the log destinations.

        @param config: The new configuration.
        """

    def _recountPorts(self) -> None:
        """
        As L{NetdService._recountPorts}, keeping the main process's ports.
        """
        super()._recountPorts()
        self.ownPorts.update(self.mainPorts)

    def status(self) -> str:
        """
        @return: One line: what this worker serves.
        """
        return f"worker {self.index}: {super().status()}"

    def _onSIGHUP(self) -> None:
        """
        SIGHUP sent to a worker directly: ignored, reloads come from the
        main process (send SIGHUP to it).
        """
        self._log.info(
            "worker {worker} ignores SIGHUP: send it to the main process",
            worker=self.index,
        )

    def _onSIGTERM(self) -> None:
        """
        SIGTERM: stop and drain; a second SIGTERM closes the sessions at
        once. A stop that began because the main process is gone does not
        count as the first (its death also sends one, L{setParentDeathSignal}).
        """
        if self.drain is not None and not self._signalled:
            self._signalled = True
            return
        self._signalled = True
        super()._onSIGTERM()

    def mainGone(self) -> None:
        """
        The control pipe closed: the main process is gone. Stop and drain.
        """
        if not self.running or self.drain is not None:
            return
        self._log.warn(
            "worker {worker}: the main process is gone, stopping", worker=self.index
        )
        from twisted.internet.error import ReactorNotRunning

        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass

    def reloadFrom(self, message: Mapping[str, Any]) -> bool:
        """
        Apply a configuration the main process validated and sent.

        The C{[netd]} keys that apply only at start (C{user}, ...) are the
        main process's to report; the worker keeps its own.

        @param message: The reload command: C{text}, C{source}, C{sockets},
            C{ownPorts}.
        @return: Whether it is now running.
        """
        if not self.running or self.drain is not None:
            return False
        try:
            new = parseConfig(serviceTypes(), message["text"], message["source"])
        except ConfigError as e:
            self._log.error(
                "worker {worker} cannot reload: {problems}",
                worker=self.index,
                problems="; ".join(e.lines()),
            )
            return False
        sockets = {str(k): int(v) for k, v in message["sockets"].items()}
        self.sockets.update(sockets)
        self.mainPorts = set(message.get("ownPorts", ()))
        new = evolve(
            servedConfig(new, sockets),
            user=self.config.user,
            group=self.config.group,
            allowRoot=self.config.allowRoot,
            workers=self.config.workers,
        )
        return self.applyConfig(new)

    def stopService(self) -> Any:
        """
        Close the inherited descriptors (so that, once the adopted ports
        close too, new connections are refused), then stop as a single netd
        does: stop listening, drain.

        @return: A L{Deferred} firing once drained.
        """
        for fd in set(self.sockets.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self.sockets.clear()
        return super().stopService()


class ControlReader(abstract.FileDescriptor):
    """
    Reads the worker's control pipe: one JSON command per line; its end
    means the main process is gone.
    """

    _log = Logger()

    def __init__(self, fd: int, service: WorkerService, reactor: Any) -> None:
        super().__init__(reactor)
        self.fd = fd
        self.service = service
        self._buffer = b""
        fdesc.setNonBlocking(fd)
        self.connected = True

    def fileno(self) -> int:
        """
        @return: The pipe's descriptor.
        """
        return self.fd

    def doRead(self) -> Any:
        """
        Read what the main process wrote.
        """
        return fdesc.readFromFD(self.fd, self.dataReceived)

    def dataReceived(self, data: bytes) -> None:
        """
        Run each complete command.

        @param data: Bytes read.
        """
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            if line.strip():
                self.commandReceived(line)

    def commandReceived(self, line: bytes) -> None:
        """
        Run one command.

        @param line: A JSON object with a C{command}.
        """
        try:
            message = json.loads(line)
            command = message.get("command")
        except (ValueError, AttributeError):
            self._log.error("worker: unreadable command from the main process")
            return
        if command == "reload":
            self.service.reloadFrom(message)
        else:
            self._log.error(
                "worker: unknown command {command!r} from the main process",
                command=command,
            )

    def connectionLost(self, reason: Failure) -> None:
        """
        The main process closed the pipe (it is gone).

        @param reason: Why.
        """
        abstract.FileDescriptor.connectionLost(self, reason)
        self.service.mainGone()


def readHeader(fd: int) -> tuple[dict[str, Any] | None, bytes]:
    """
    Read the first line of the control pipe (blocking): the worker's
    configuration.

    @param fd: The pipe.
    @return: The decoded line (L{None} if the pipe closed first), and the
        bytes read after it.
    """
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return None, b""
        data += chunk
    line, rest = data.split(b"\n", 1)
    return json.loads(line), rest


def main() -> None:
    """
    Run a worker (C{python -P -m netd.worker}).
    """
    setParentDeathSignal(signal.SIGTERM)
    header, rest = readHeader(CONTROL_FD)
    if header is None or os.getppid() != header.get("mainPid"):
        # The main process is already gone.
        raise SystemExit(0)
    events = EventPipe(EVENTS_FD)
    globalLogBeginner.beginLoggingTo([events], redirectStandardIO=False)
    installReactor(header.get("reactor"))

    from twisted.internet import reactor

    try:
        config = parseConfig(serviceTypes(), header["text"], header["source"])
    except ConfigError as e:
        # Valid in the main process, not here: files it names (TLS keys and
        # certificates) that the unprivileged worker cannot read.
        for line in e.lines():
            sys.stderr.write(f"netd worker: {line}\n")
        sys.stderr.flush()
        raise SystemExit(EX_CONFIG)
    service = WorkerService(
        config,
        reactor,
        sys.stderr,
        index=int(header["index"]),
        sockets={str(k): int(v) for k, v in header["sockets"].items()},
        ownPorts=tuple(header.get("ownPorts", ())),
        handleSignals=True,
    )
    service.startService()
    control = ControlReader(CONTROL_FD, service, reactor)
    control.startReading()
    if rest:
        control.dataReceived(rest)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.callWhenRunning(
        events.send,
        {"netdWorker": "ready", "index": service.index, "pid": os.getpid()},
    )
    reactor.run()


if __name__ == "__main__":
    # Run as netd.worker, not __main__: log namespaces and classes are the
    # module's own.
    from netd.worker import main as workerMain

    workerMain()
