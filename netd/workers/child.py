# -*- test-case-name: tests.test_worker -*-
"""
A worker process of a netd with C{workers} (see L{netd.workers}): this
module runs on the worker's side of the fork.

Started by the main process as C{python -P -m netd.workers.child INDEX},
already unprivileged, with its pipes and sockets in place
(L{netd.workers.control} lists them), including the descriptors of what
the main process holds for its services (an exec service's spawner door;
its services find them through
L{ServiceContext.heldDescriptor<netd.servicetype.ServiceContext.heldDescriptor>}).
It reads its configuration (the TOML text the main process validated) from
its control pipe, builds the services it serves (a L{NetdService} whose
L{InProcessServices} adopt the sockets the main process bound instead of
binding), reports ready, and serves until:

    - C{SIGTERM} (forwarded by the main process): stop listening at once,
      drain open sessions for up to C{drain_timeout}, exit 0; a second
      C{SIGTERM} closes the sessions at once;
    - its control pipe closes (the main process is gone), or the main
      process dies (C{PR_SET_PDEATHSIG}): the same drain.

A reload arrives on the control pipe with the new validated text, is
applied as a single netd applies one (unchanged services keep their
sessions), and answered. The worker writes no log file: its log events go
to the main process as JSON lines (L{EventPipe}), which logs them with a
C{worker} field.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from attrs import evolve
from twisted.internet import abstract, fdesc
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ReactorNotRunning
from twisted.logger import ILogObserver, Logger, eventAsJSON, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.config import ConfigError, NetdConfig, parseConfig
from netd.daemon import NetdService
from netd.instances import InProcessServices
from netd.listeners import listenerName
from netd.metrics import MetricsReporter
from netd.served import ReloadResult
from netd.services import serviceTypes
from netd.servicetype import setHeldDescriptors
from netd.workers.control import (
    CONTROL_FD,
    EVENTS_FD,
    encodeMessage,
    readHeader,
    readyMessage,
    reloadedMessage,
)

EX_SOFTWARE = 70
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


class ReactorUnavailable(Exception):
    """
    A worker cannot run the kind of reactor the main process runs.
    """


def installReactor(name: str | None) -> Any:
    """
    Install the same kind of reactor as the main process runs: netd's
    through Twisted's reactor plugins, or the class C{twistd --reactor}
    chose. A worker never falls back to another reactor: it would behave
    differently from the main process without saying so.

    @param name: The fully qualified name of the main process's reactor
        class (L{netd.workers.supervisor.reactorName}); L{None}: netd's.
    @return: The installed reactor.
    @raise ReactorUnavailable: If it cannot be installed, or another one
        already is.
    """
    from twisted.internet.main import installReactor as install
    from twisted.python.reflect import namedAny

    from netd import reactor as netdReactor

    netdClass = netdReactor.NetdEPollReactor
    wanted = name or f"{netdClass.__module__}.{netdClass.__qualname__}"
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        kind = type(reactor)
        if f"{kind.__module__}.{kind.__qualname__}" != wanted:
            raise ReactorUnavailable(
                f"the {kind.__module__}.{kind.__qualname__} reactor is installed, "
                f"not {wanted}"
            )
        return reactor
    try:
        if wanted == f"{netdClass.__module__}.{netdClass.__qualname__}":
            from twisted.application.reactors import installReactor as byName

            return byName(netdReactor.PLUGIN_NAME)
        reactor = namedAny(wanted)()
        install(reactor)
        return reactor
    except Exception as e:
        raise ReactorUnavailable(f"cannot install the {wanted} reactor: {e}") from e


def servedConfig(config: NetdConfig, sockets: Mapping[str, int]) -> NetdConfig:
    """
    The part of a configuration a worker serves: the services whose every
    listener it was given a socket for.

    @param config: The whole configuration.
    @param sockets: Its sockets, by listener service name.
    @return: The configuration, with only those services, and no metrics
        endpoint (the main process serves it; L{MetricsReporter} sends it
        this worker's series).
    """
    return evolve(
        config,
        metrics=None,
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

    def send(self, message: Mapping[str, Any]) -> None:
        """
        Write a message for the main process.

        @param message: e.g. L{readyMessage}.
        """
        self._write(encodeMessage(message))

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


def keepHeld(names: Mapping[str, Any], elsewhere: Iterable[str] = ()) -> None:
    """
    On a reload: of the held descriptors this worker inherited
    (L{netd.servicetype.setHeldDescriptors}), keep those the main process
    still names (the descriptors themselves cannot change: only a process
    that is still root makes them), and close the others, before the
    reloaded services are built.

    @param names: The reload command's C{held}: service names (their
        numbers, those of a fresh worker, are not looked at).
    @param elsewhere: Its C{heldNames}: every service the main process
        still holds something for.
    """
    inherited = setHeldDescriptors({})
    kept = {name: fd for name, fd in inherited.items() if name in names}
    for name, fd in inherited.items():
        if name not in kept:
            with contextlib.suppress(OSError):
                os.close(fd)
    setHeldDescriptors(kept, elsewhere)


def workerService(
    config: NetdConfig,
    reactor: Any,
    stderr: TextIO | None,
    *,
    index: int,
    sockets: Mapping[str, int],
    ownPorts: tuple[int, ...] = (),
    handleSignals: bool = False,
) -> NetdService:
    """
    The root service of a worker process: the services whose sockets the
    main process passed, adopting them; no log destinations, no systemd
    (both are the main process's), SIGHUP ignored (reloads come from the
    main process).

    @param config: The whole validated configuration.
    @param reactor: The reactor.
    @param stderr: Where a start-up failure is reported.
    @param index: The worker's index.
    @param sockets: The inherited descriptors, by listener service name.
    @param ownPorts: Every port netd listens on, including those of services
        this worker does not serve.
    @param handleSignals: Whether to install the signal handlers.
    @return: The root service.
    """
    served = servedConfig(config, sockets)
    return NetdService(
        served,
        reactor,
        stderr,
        served=InProcessServices(served, reactor, sockets=sockets, otherPorts=ownPorts),
        ownLogs=False,
        handleSignals=handleSignals,
        ignoreSIGHUP=(f"worker {index} ignores SIGHUP: send it to the main process"),
        parentDeathSignal=True,
    )


class Worker:
    """
    A worker's answers to its main process: reloads, and the main process's
    end.

    @ivar index: The worker's index.
    @ivar root: Its root service (L{workerService}).
    @ivar events: Where its answers go (L{None}: nowhere, in tests).
    """

    _log = Logger()

    def __init__(
        self, index: int, root: NetdService, events: EventPipe | None = None
    ) -> None:
        self.index = index
        self.root = root
        self.events = events

    def reloadFrom(self, message: Mapping[str, Any]) -> Deferred[ReloadResult]:
        """
        Apply a configuration the main process validated and sent, and
        answer.

        The C{[netd]} keys that apply only at start (C{user}, ...) are the
        main process's to report; the worker keeps its own.

        @param message: The reload command: C{text}, C{source}, C{sockets},
            C{ownPorts}.
        @return: A L{Deferred} firing with how it ended.
        """
        current = self.root.config
        if not self.root.running or self.root.stopping:
            return self._answer(ReloadResult(False, "it is stopping", current))
        keepHeld(message.get("held", {}), message.get("heldNames", ()))
        try:
            new = parseConfig(serviceTypes(), message["text"], message["source"])
        except ConfigError as e:
            self._log.error(
                "worker {worker} cannot reload: {problems}",
                worker=self.index,
                problems="; ".join(e.lines()),
            )
            return self._answer(ReloadResult(False, e.lines()[0], current))
        sockets = {str(k): int(v) for k, v in message["sockets"].items()}
        served = self.root.served
        assert isinstance(served, InProcessServices)
        served.adopt(sockets, message.get("ownPorts", ()))
        new = evolve(
            servedConfig(new, sockets),
            user=current.user,
            group=current.group,
            allowRoot=current.allowRoot,
            workers=current.workers,
        )
        return self.root.apply(new).addCallback(self._answer)

    def _answer(self, result: ReloadResult) -> Deferred[ReloadResult]:
        """
        Tell the main process how a reload ended.

        @param result: How it ended.
        @return: A L{Deferred} that has fired with C{result}.
        """
        if self.events is not None:
            self.events.send(reloadedMessage(result.applied, result.summary))
        return succeed(result)

    def mainGone(self) -> None:
        """
        The control pipe closed: the main process is gone. Stop and drain.
        """
        if not self.root.running or self.root.stopping:
            return
        self._log.warn(
            "worker {worker}: the main process is gone, stopping", worker=self.index
        )
        try:
            self.root.reactor.stop()
        except ReactorNotRunning:
            return


class ControlReader(abstract.FileDescriptor):
    """
    Reads the worker's control pipe: one JSON command per line; its end
    means the main process is gone.
    """

    _log = Logger()

    def __init__(self, fd: int, worker: Worker, reactor: Any) -> None:
        super().__init__(reactor)
        self.fd = fd
        self.worker = worker
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
            self.worker.reloadFrom(message)
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
        self.worker.mainGone()


def main() -> None:
    """
    Run a worker (C{python -P -m netd.workers.child}).
    """
    setParentDeathSignal(signal.SIGTERM)
    header, rest = readHeader(CONTROL_FD)
    if header is None or os.getppid() != header.get("mainPid"):
        # The main process is already gone.
        raise SystemExit(0)
    events = EventPipe(EVENTS_FD)
    globalLogBeginner.beginLoggingTo([events], redirectStandardIO=False)
    try:
        reactor = installReactor(header.get("reactor"))
    except ReactorUnavailable as e:
        # Standard error reaches the main process's log.
        sys.stderr.write(f"netd worker: {e}\n")
        sys.stderr.flush()
        raise SystemExit(EX_SOFTWARE)
    # Before the configuration is checked: an exec service whose spawner
    # door was passed may run programs as another user than this worker's.
    setHeldDescriptors(
        {str(k): int(v) for k, v in header.get("held", {}).items()},
        header.get("heldNames", ()),
    )
    try:
        config = parseConfig(serviceTypes(), header["text"], header["source"])
    except ConfigError as e:
        # Valid in the main process, not here: files it names (TLS keys and
        # certificates) that the unprivileged worker cannot read.
        for line in e.lines():
            sys.stderr.write(f"netd worker: {line}\n")
        sys.stderr.flush()
        raise SystemExit(EX_CONFIG)
    index = int(header["index"])
    root = workerService(
        config,
        reactor,
        sys.stderr,
        index=index,
        sockets={str(k): int(v) for k, v in header["sockets"].items()},
        ownPorts=tuple(header.get("ownPorts", ())),
        handleSignals=True,
    )
    if config.metrics is not None:
        MetricsReporter(
            root.served.metricsSeries, events.send, reactor, worker=index
        ).setServiceParent(root)
    root.startService()
    worker = Worker(index, root, events)
    control = ControlReader(CONTROL_FD, worker, reactor)
    control.startReading()
    if rest:
        control.dataReceived(rest)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.callWhenRunning(events.send, readyMessage(index, os.getpid()))
    reactor.run()


if __name__ == "__main__":
    # Run as netd.workers.child, not __main__: log namespaces and classes are
    # the module's own.
    from netd.workers.child import main as workerMain

    workerMain()
