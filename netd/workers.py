# -*- test-case-name: tests.test_workers -*-
"""
Worker processes: the supervisor in the main process.

With C{workers = N} (N > 1, or C{"auto"}) in C{[netd]}, the main process
binds every listener exactly as a single netd does (as root if needed, or
adopting the sockets systemd passed), but does not serve them: it stops
reading them and keeps them open. twistd then drops privileges, and the
main process starts N worker processes (L{netd.worker}) that inherit the
sockets, so they start unprivileged (and with C{PR_SET_NO_NEW_PRIVS}); each
serves the configuration the main process validated (its TOML text is sent
on a pipe) on the sockets it was given.

Pipes between the main process and worker I{i}::

    worker fd 0  <- main   control: one JSON line with the configuration,
                           then commands (reload); EOF: the main process is
                           gone, drain and exit
    worker fd 1  -> main   standard output, logged by the main process
    worker fd 2  -> main   standard error (a crash's traceback), logged
    worker fd 3  -> main   log events as JSON lines (L{eventAsJSON}) and
                           C{{"netdWorker": "ready"}} once its ports are
                           adopted
    worker fd 4+           the listening sockets

L{Supervisor} runs the processes: it restarts one that exits unexpectedly
(with an exponential back-off), relays their log events into the main
process's log publisher with a C{worker} field (so the log destinations,
rotation included, stay in one process), aggregates readiness, forwards
stop signals, and replaces a whole generation of workers when a reload
changes the sockets. L{SupervisorService} is the main process's root
service: a L{NetdService} that holds sockets instead of services.

Services whose state lives in the process (a chat service's rooms, and an
http service that mounts one) run in worker 0 only (L{perProcessServices}):
only worker 0 is given their sockets.

Workers share each listening socket, except a UDP listener with
C{reuse_port}: each worker gets its own C{SO_REUSEPORT} socket on the same
address (L{socketPerWorker}).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from attrs import define, field, frozen
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure

from netd.config import EMBEDDED_DEFAULT, NetdConfig, resolveWorkers
from netd.daemon import NetdService
from netd.descriptions import DatagramListener, Listener
from netd.listeners import (
    HeldSocketOwner,
    ListenError,
    buildHeldListenerService,
    listenerName,
    socketKey,
)
from netd.reload import planReload

CONTROL_FD = 0
EVENTS_FD = 3
FIRST_SOCKET_FD = 4

# Service types whose state is per process (until a shared hub exists).
# The environment of systemd's protocols is the main process's alone: it
# notifies and pings; the sockets systemd passed are handed on by netd.
_MAIN_ONLY_VARIABLES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)

_READY_PREFIX = b'{"netdWorker"'
_MAX_LINE = 16 * 1024 * 1024


def perProcessServices(config: NetdConfig) -> frozenset[str]:
    """
    The services that must run in one process: those of a type whose state
    is per process (chat rooms), and http services that mount one.

    @param config: A configuration.
    @return: Their names.
    """
    pinned = {s.name for s in config.services if s.serviceType.isPerProcess(s.settings)}
    for service in config.services:
        uses = service.serviceType.uses
        if uses is not None and pinned.intersection(uses(service.settings)):
            pinned.add(service.name)
    return frozenset(pinned)


def socketIdentity(service: str, listener: Listener) -> tuple[object, ...]:
    """
    What identifies the socket a listener needs, across configurations
    (L{socketKey}); a listener on an ephemeral port is identified by its
    service and description.

    @param service: Its service's name.
    @param listener: The listener.
    @return: A hashable key.
    """
    key = socketKey(listener)
    if key is None:
        return ("ephemeral", listenerName(service, listener))
    return key


def socketPerWorker(listener: Listener) -> bool:
    """
    Whether each worker gets a socket of its own for a listener, rather than
    all of them sharing the main process's one.

    A UDP listener with C{reuse_port} does: the main process binds one
    C{SO_REUSEPORT} socket per worker on the same address, and the kernel
    spreads datagrams across them by source address and port. Workers that
    share one UDP socket all wake for each datagram and take turns, which
    does not scale. TCP has no such need (each worker accepts one
    connection per wake-up from the shared socket), a socket from systemd
    cannot be copied, and an ephemeral port would differ per copy.

    @param listener: A listener.
    @return: C{True} for a UDP listener on a fixed port with C{reuse_port}.
    """
    return (
        isinstance(listener, DatagramListener)
        and listener.kind == "udp"
        and listener.port != 0
        and listener.reusePort
    )


def workerSockets(config: NetdConfig, count: int) -> list[list[tuple[str, Any, int]]]:
    """
    Which listeners each worker serves, and on which copy of their socket:
    worker 0 serves all of them, the others all but those of
    L{perProcessServices}. A listener's socket is shared (copy 0) unless
    L{socketPerWorker} says otherwise, in which case worker I{i} gets copy
    I{i}.

    @param config: The configuration.
    @param count: The number of workers.
    @return: For each worker, C{(service name, listener, copy)} triples.
    """
    pinned = perProcessServices(config)
    return [
        [
            (
                service.name,
                listener,
                index if count > 1 and socketPerWorker(listener) else 0,
            )
            for service in config.services
            if index == 0 or service.name not in pinned
            for listener in service.listeners
        ]
        for index in range(count)
    ]


def heldIdentity(service: str, listener: Listener, copy: int) -> tuple[object, ...]:
    """
    What identifies one held socket: its listener's L{socketIdentity}, and
    which copy it is when each worker has its own (copy 0 is the one a
    shared socket keeps, so a reload between the two keeps it).

    @param service: The service's name.
    @param listener: The listener.
    @param copy: The copy (L{workerSockets}).
    @return: A hashable key.
    """
    identity = socketIdentity(service, listener)
    return identity if copy == 0 else (*identity, "worker", copy)


def heldSockets(
    config: NetdConfig, count: int
) -> dict[tuple[object, ...], tuple[str, Any, int]]:
    """
    Every socket the main process holds for a generation of workers.

    @param config: The configuration.
    @param count: The number of workers.
    @return: C{(service name, listener, copy)} by L{heldIdentity}, in the
        configuration's order.
    """
    return {
        heldIdentity(name, listener, copy): (name, listener, copy)
        for listeners in workerSockets(config, count)
        for name, listener, copy in listeners
    }


def reactorName(reactor: Any) -> str:
    """
    @param reactor: A reactor.
    @return: The fully qualified name of its class, for a worker to run the
        same kind of reactor as the main process (L{netd.worker.installReactor}).
    """
    kind = type(reactor)
    return f"{kind.__module__}.{kind.__qualname__}"


def workerCommand() -> list[str]:
    """
    The command that starts a worker: this Python, running L{netd.worker}
    (C{-P}: with no working directory on the module search path; see
    L{workerEnvironment}). The worker's index is appended, for C{ps}.

    @return: The argument vector.
    """
    return [sys.executable, "-P", "-m", "netd.worker"]


def workerEnvironment(
    environ: Mapping[str, str] | None = None, path: list[str] | None = None
) -> dict[str, str]:
    """
    The environment of a worker: the main process's, without systemd's
    notification and socket variables, and with C{PYTHONPATH} set to the
    main process's module search path, so that a worker imports exactly the
    code the main process runs.

    @param environ: The environment (L{os.environ} if L{None}).
    @param path: The module search path (L{sys.path} if L{None}).
    @return: The worker's environment.
    """
    env = dict(os.environ if environ is None else environ)
    for name in _MAIN_ONLY_VARIABLES:
        env.pop(name, None)
    entries = [os.path.abspath(p) for p in (sys.path if path is None else path)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(entries))
    return env


@frozen
class WorkerPlan:
    """
    What one generation of workers runs.

    @ivar config: The validated configuration (its C{text} is what the
        workers are given).
    @ivar sockets: For each worker, its listeners' sockets in the main
        process: listener service name to descriptor.
    @ivar ownPorts: Every port netd listens on (for the UDP loop guards of
        workers that do not serve all of them).
    """

    config: NetdConfig
    sockets: tuple[Mapping[str, int], ...]
    ownPorts: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        """
        The number of workers.
        """
        return len(self.sockets)

    def childSockets(self, index: int) -> tuple[dict[int, int], dict[str, int]]:
        """
        How worker C{index} inherits its sockets. The numbering depends only
        on the main process's descriptors, so it stays the same across a
        reload that keeps the sockets.

        @param index: The worker.
        @return: The child descriptor to main descriptor map (for
            C{childFDs}), and the listener name to child descriptor map
            (for the worker).
        """
        sockets = self.sockets[index]
        numbers = {
            fd: FIRST_SOCKET_FD + position
            for position, fd in enumerate(sorted(set(sockets.values())))
        }
        return (
            {child: fd for fd, child in numbers.items()},
            {name: numbers[fd] for name, fd in sockets.items()},
        )

    def message(self, worker: int, **extra: Any) -> bytes:
        """
        The line that gives worker C{worker} this plan.

        @param worker: The worker's index.
        @param extra: More fields.
        @return: One JSON line.
        """
        record = {
            "source": self.config.source,
            "text": self.config.text,
            "sockets": self.childSockets(worker)[1],
            "ownPorts": list(self.ownPorts),
            **extra,
        }
        return json.dumps(record).encode("utf-8") + b"\n"


class WorkerStartError(Exception):
    """
    A new generation of workers did not start.
    """


@define(eq=False)
class WorkerSlot:
    """
    One worker position of a generation, across restarts.

    @ivar generation: Its generation.
    @ivar index: Its index (0 serves the per-process services).
    @ivar process: The running process's protocol, if any.
    @ivar delay: Seconds before the next restart.
    @ivar startedAt: When the current process started.
    @ivar ready: Whether the current process has adopted its sockets.
    @ivar everReady: Whether any process of this slot has.
    @ivar restartCall: The pending restart, if any.
    """

    generation: Generation
    index: int
    process: WorkerProtocol | None = None
    delay: float = 0.0
    startedAt: float = 0.0
    ready: bool = False
    everReady: bool = False
    restartCall: Any = None


@define(eq=False)
class Generation:
    """
    A set of workers started together, with one set of sockets.

    @ivar number: 0 at start, then one more per generation change.
    @ivar plan: What its workers run (replaced by a reload that keeps the
        sockets).
    @ivar slots: Its workers.
    @ivar ready: Fires once every worker is ready, or fails with
        L{WorkerStartError}.
    @ivar retiring: Whether it is being stopped (its exits are expected).
    @ivar ended: Fires once every process has exited after L{retiring}.
    """

    number: int
    plan: WorkerPlan
    slots: list[WorkerSlot] = field(factory=list)
    ready: Deferred[None] = field(factory=Deferred)
    retiring: bool = False
    ended: Deferred[None] = field(factory=Deferred)
    killCall: Any = None

    def live(self) -> list[WorkerProtocol]:
        """
        @return: Its running processes.
        """
        return [slot.process for slot in self.slots if slot.process is not None]


class WorkerProtocol(ProcessProtocol):
    """
    The main process's end of one worker process.

    @ivar slot: Its position.
    @ivar pid: Its process id.
    """

    _log = Logger()

    def __init__(self, supervisor: Supervisor, slot: WorkerSlot, header: bytes):
        self.supervisor = supervisor
        self.slot = slot
        self.header = header
        self.pid: int | None = None
        self._buffers: dict[int, bytes] = {}

    def connectionMade(self) -> None:
        """
        Give the worker its configuration and sockets.
        """
        self.pid = getattr(self.transport, "pid", None)
        self.transport.write(self.header)

    def send(self, line: bytes) -> None:
        """
        Write a line to the worker's control pipe.

        @param line: One JSON line.
        """
        if self.transport is not None:
            self.transport.write(line)

    def signal(self, signum: int) -> None:
        """
        Send the worker a signal, if it still runs.

        @param signum: The signal.
        """
        try:
            self.transport.signalProcess(signum)
        except (ProcessExitedAlready, OSError):
            pass

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Split a pipe's output into lines and hand them on.

        @param childFD: The worker's descriptor (1, 2 or L{EVENTS_FD}).
        @param data: What it wrote.
        """
        buffered = self._buffers.get(childFD, b"") + data
        *lines, rest = buffered.split(b"\n")
        if len(rest) > _MAX_LINE:
            lines.append(rest)
            rest = b""
        self._buffers[childFD] = rest
        for line in lines:
            self._line(childFD, line)

    def childConnectionLost(self, childFD: int) -> None:
        """
        Hand on an unterminated last line.

        @param childFD: The descriptor closed.
        """
        rest = self._buffers.pop(childFD, b"")
        if rest:
            self._line(childFD, rest)

    def _line(self, childFD: int, line: bytes) -> None:
        """
        @param childFD: The worker's descriptor.
        @param line: One line, without its newline.
        """
        if childFD == EVENTS_FD:
            self.supervisor.eventReceived(self, line)
        elif line.strip():
            self.supervisor.outputReceived(self, childFD, line)

    def processEnded(self, reason: Failure) -> None:
        """
        The worker is gone.

        @param reason: How it ended.
        """
        for childFD in list(self._buffers):
            self.childConnectionLost(childFD)
        self.supervisor.workerEnded(self, reason)


_NATIVE = (str, int, float, bool, type(None))


def unflatten(event: dict[str, Any]) -> None:
    """
    Let an event that came through JSON be formatted from its fields again.

    L{eventAsJSON} keeps a flattened copy of each field of the format
    (C{log_flattened}), for fields that JSON cannot hold; but
    L{formatEvent} then ignores format specifications (C{{duration:.3f}}
    comes out with every digit). When every field the format names is a
    plain JSON value, the copy is dropped, so that the event formats as it
    did in the worker.

    @param event: An event from L{eventFromJSON}, changed in place.
    """
    flattened = event.get("log_flattened")
    if not isinstance(flattened, dict):
        return
    for key in flattened:
        name = key.split("!", 1)[0]
        if not name.isidentifier() or not isinstance(event.get(name, ...), _NATIVE):
            return
    del event["log_flattened"]


def describeExit(reason: Failure) -> str:
    """
    @param reason: How a process ended.
    @return: e.g. C{"exited with status 1"}, C{"killed by SIGKILL"}.
    """
    value = reason.value
    number = getattr(value, "signal", None)
    if number:
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exited with status {getattr(value, 'exitCode', None)}"


class Supervisor:
    """
    Runs, watches and restarts the worker processes.

    Not C{twisted.runner.procmon.ProcessMonitor}: it cannot pass a child the
    listening sockets and pipes (C{childFDs}), relay its log events, or
    replace a whole generation of workers on reload.

    @ivar reactor: An L{IReactorProcess} and L{IReactorTime} provider.
    @ivar command: The argument vector of a worker (L{workerCommand}).
    @ivar environ: Its environment (L{workerEnvironment}).
    @ivar publisher: Where relayed log events go.
    @ivar current: The generation serving now.
    @ivar pending: A generation being started by a reload, if any.
    @ivar retiring: Generations told to stop, until their workers exit.
    @ivar stopping: Whether the whole supervisor is stopping.
    """

    _log = Logger()

    minDelay = 0.5
    maxDelay = 30.0
    # A worker that stayed up this long restarts after minDelay again.
    stableAfter = 10.0
    # Seconds past drain_timeout before workers that have not exited are
    # killed.
    killGrace = 5.0

    def __init__(
        self,
        reactor: Any,
        command: list[str] | None = None,
        environ: Mapping[str, str] | None = None,
        publisher: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.command = command if command is not None else workerCommand()
        self.environ = dict(environ) if environ is not None else workerEnvironment()
        self.publisher = publisher if publisher is not None else globalLogPublisher
        self.current: Generation | None = None
        self.pending: Generation | None = None
        self.retiring: list[Generation] = []
        self.stopping = False
        self._stopped: Deferred[None] | None = None
        self._generations = 0

    def generations(self) -> list[Generation]:
        """
        @return: Every generation with processes that may still run.
        """
        found = [self.current, self.pending] + self.retiring
        return [generation for generation in found if generation is not None]

    def processes(self) -> list[WorkerProtocol]:
        """
        @return: Every running worker.
        """
        return [p for generation in self.generations() for p in generation.live()]

    def start(self, plan: WorkerPlan) -> Deferred[None]:
        """
        Start the first generation.

        @param plan: What it runs.
        @return: A L{Deferred} firing once every worker is ready.
        """
        self.current = self._launch(plan)
        return self.current.ready

    def replace(self, plan: WorkerPlan) -> Deferred[None]:
        """
        Start a new generation; once all of it is ready, stop the current one
        (its workers drain). If one of the new workers exits before it is
        ready, the new generation is stopped and the current one stays.

        @param plan: What the new generation runs.
        @return: A L{Deferred} firing once the new generation serves, or
            failing with L{WorkerStartError}.
        """
        assert self.pending is None, "a generation is already starting"
        generation = self.pending = self._launch(plan)

        def ready(result: None) -> None:
            self.pending = None
            previous, self.current = self.current, generation
            if previous is not None:
                self._retire(previous, "replaced by a new generation")

        def failed(reason: Failure) -> Failure:
            if self.pending is generation:
                self.pending = None
            self._retire(generation, "its start failed")
            return reason

        return generation.ready.addCallbacks(ready, failed)

    def reloadInPlace(self, plan: WorkerPlan) -> int:
        """
        Give the current workers a new configuration that keeps their
        sockets; a worker restarted later gets it too.

        @param plan: The new plan (same sockets as the current one).
        @return: How many running workers were told.
        """
        assert self.current is not None
        self.current.plan = plan
        told = 0
        for slot in self.current.slots:
            if slot.process is not None:
                slot.process.send(plan.message(slot.index, command="reload"))
                told += 1
        return told

    def signalAll(self, signum: int) -> None:
        """
        Send a signal to every running worker.

        @param signum: The signal.
        """
        for process in self.processes():
            process.signal(signum)

    def stop(self, timeout: float) -> Deferred[None]:
        """
        Stop every worker: C{SIGTERM} (they drain), then C{SIGKILL} for those
        still running after C{timeout} seconds.

        @param timeout: Seconds to wait before killing.
        @return: A L{Deferred} firing once every worker has exited.
        """
        if self._stopped is None:
            self._stopped = Deferred()
            self.stopping = True
            for generation in self.generations():
                self._cancelRestarts(generation)
                if not generation.ready.called:
                    generation.ready.errback(WorkerStartError("netd is stopping"))
                    generation.ready.addErrback(lambda f: None)
            self.signalAll(signal.SIGTERM)
            killCall = self.reactor.callLater(timeout, self._killAll)
            self._stopped.addBoth(self._cancel, killCall)
            self._checkStopped()
        return self._stopped

    def _cancel(self, result: Any, call: Any) -> Any:
        """
        Cancel a delayed call if it is still pending.
        """
        if call.active():
            call.cancel()
        return result

    def _killAll(self) -> None:
        """
        Kill the workers that did not exit in time.
        """
        for process in self.processes():
            self._log.warn(
                "worker {worker} (pid {pid}) still runs: killing it",
                worker=process.slot.index,
                pid=process.pid,
            )
            process.signal(signal.SIGKILL)

    def _checkStopped(self) -> None:
        """
        Fire L{stop}'s result once nothing runs any more.
        """
        if self._stopped is not None and not self._stopped.called:
            if not self.processes():
                self._stopped.callback(None)

    def _launch(self, plan: WorkerPlan) -> Generation:
        """
        Start a generation's workers.

        @param plan: What they run.
        @return: The generation.
        """
        generation = Generation(self._generations, plan)
        self._generations += 1
        generation.slots = [
            WorkerSlot(generation, index, delay=self.minDelay)
            for index in range(plan.count)
        ]
        for slot in generation.slots:
            self._spawn(slot)
        return generation

    def _spawn(self, slot: WorkerSlot) -> None:
        """
        Start (or restart) the process of a slot.

        @param slot: The slot.
        """
        slot.restartCall = None
        generation = slot.generation
        plan = generation.plan
        childSockets, _ = plan.childSockets(slot.index)
        header = plan.message(
            slot.index,
            index=slot.index,
            generation=generation.number,
            workers=plan.count,
            mainPid=os.getpid(),
            reactor=reactorName(self.reactor),
        )
        process = WorkerProtocol(self, slot, header)
        childFDs: dict[int, Any] = {CONTROL_FD: "w", 1: "r", 2: "r", EVENTS_FD: "r"}
        childFDs.update(childSockets)
        slot.ready = False
        slot.startedAt = self.reactor.seconds()
        try:
            self.reactor.spawnProcess(
                process,
                self.command[0],
                self.command + [str(slot.index)],
                env=self.environ,
                childFDs=childFDs,
            )
        except OSError as e:
            delay = slot.delay
            slot.delay = min(self.maxDelay, delay * 2)
            self._log.error(
                "cannot start worker {worker} ({command}: {error}; the interpreter "
                "must be executable by the user netd runs as); retrying in {delay:g}s",
                worker=slot.index,
                command=self.command[0],
                error=e.strerror or str(e),
                delay=delay,
            )
            slot.restartCall = self.reactor.callLater(delay, self._spawn, slot)
            return
        slot.process = process
        self._log.info(
            "worker {worker} started (pid {pid})",
            worker=slot.index,
            pid=process.pid,
            generation=generation.number,
        )

    def eventReceived(self, process: WorkerProtocol, line: bytes) -> None:
        """
        A line on a worker's event pipe: a readiness message, or a log event
        to publish with a C{worker} field.

        @param process: The worker.
        @param line: The line.
        """
        if line.startswith(_READY_PREFIX):
            self._workerReady(process)
            return
        try:
            event = eventFromJSON(line.decode("utf-8"))
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            self.outputReceived(process, EVENTS_FD, line)
            return
        index = process.slot.index
        event["worker"] = index
        event["workerPid"] = process.pid
        system = event.get("log_system")
        if system is None:
            level = getattr(event.get("log_level"), "name", "-")
            system = f"{event.get('log_namespace', '-')}#{level}"
        event["log_system"] = f"worker {index} {system}"
        unflatten(event)
        self.publisher(event)

    def outputReceived(
        self, process: WorkerProtocol, childFD: int, line: bytes
    ) -> None:
        """
        A line a worker wrote to its standard output or error.

        @param process: The worker.
        @param childFD: 1 or 2 (or L{EVENTS_FD} for a line that is not JSON).
        @param line: The line.
        """
        text = line.decode("utf-8", "replace").rstrip()
        log = self._log.warn if childFD == 2 else self._log.info
        log(
            "worker {worker}: {output}",
            worker=process.slot.index,
            workerPid=process.pid,
            output=text,
        )

    def _workerReady(self, process: WorkerProtocol) -> None:
        """
        A worker has adopted its sockets.

        @param process: The worker.
        """
        slot = process.slot
        if slot.process is not process:
            return
        slot.ready = True
        slot.everReady = True
        generation = slot.generation
        self._log.info(
            "worker {worker} ready (pid {pid})",
            worker=slot.index,
            pid=process.pid,
            generation=generation.number,
        )
        if not generation.ready.called and all(s.ready for s in generation.slots):
            generation.ready.callback(None)

    def workerEnded(self, process: WorkerProtocol, reason: Failure) -> None:
        """
        A worker exited: expected when stopping or retiring its generation;
        otherwise it is restarted with the same sockets, after a delay that
        doubles at each quick exit (from L{minDelay} up to L{maxDelay}) and
        resets once a worker stayed up L{stableAfter} seconds.

        @param process: The worker.
        @param reason: How it ended.
        """
        slot = process.slot
        generation = slot.generation
        if slot.process is process:
            slot.process = None
            slot.ready = False
        how = describeExit(reason)
        if self.stopping or generation.retiring:
            log = self._log.info if reason.check(ProcessDone) else self._log.warn
            log(
                "worker {worker} (pid {pid}) {how}",
                worker=slot.index,
                pid=process.pid,
                how=how,
                generation=generation.number,
            )
            self._checkEnded(generation)
            self._checkStopped()
            return
        if generation is self.pending and not slot.everReady:
            self._log.error(
                "new worker {worker} (pid {pid}) {how} before it was ready",
                worker=slot.index,
                pid=process.pid,
                how=how,
                generation=generation.number,
            )
            generation.ready.errback(
                WorkerStartError(f"worker {slot.index} {how} before it was ready")
            )
            return
        uptime = self.reactor.seconds() - slot.startedAt
        if uptime >= self.stableAfter:
            slot.delay = self.minDelay
        delay = slot.delay
        slot.delay = min(self.maxDelay, delay * 2)
        self._log.error(
            "worker {worker} (pid {pid}) {how} after {uptime:.1f}s; "
            "restarting it in {delay:g}s",
            worker=slot.index,
            pid=process.pid,
            how=how,
            uptime=uptime,
            delay=delay,
            generation=generation.number,
        )
        slot.restartCall = self.reactor.callLater(delay, self._spawn, slot)

    def _retire(self, generation: Generation, why: str) -> None:
        """
        Stop a generation's workers (they drain); kill them after their
        drain deadline and L{killGrace}.

        @param generation: The generation.
        @param why: For the log.
        """
        generation.retiring = True
        self._cancelRestarts(generation)
        self.retiring.append(generation)
        live = generation.live()
        self._log.info(
            "stopping {count} workers of generation {generation}: {why}",
            count=len(live),
            generation=generation.number,
            why=why,
        )
        for process in live:
            process.signal(signal.SIGTERM)
        generation.killCall = self.reactor.callLater(
            generation.plan.config.drainTimeout + self.killGrace,
            self._killGeneration,
            generation,
        )
        self._checkEnded(generation)

    def _killGeneration(self, generation: Generation) -> None:
        """
        Kill a retiring generation's workers that are still running.

        @param generation: The generation.
        """
        for process in generation.live():
            process.signal(signal.SIGKILL)

    def _checkEnded(self, generation: Generation) -> None:
        """
        Forget a retiring generation once its workers have all exited.

        @param generation: The generation.
        """
        if not generation.retiring or generation.live():
            return
        if generation in self.retiring:
            self.retiring.remove(generation)
        if generation.killCall is not None and generation.killCall.active():
            generation.killCall.cancel()
        if not generation.ended.called:
            generation.ended.callback(None)

    def _cancelRestarts(self, generation: Generation) -> None:
        """
        Cancel a generation's pending restarts.

        @param generation: The generation.
        """
        for slot in generation.slots:
            if slot.restartCall is not None and slot.restartCall.active():
                slot.restartCall.cancel()
            slot.restartCall = None


class SupervisorService(NetdService):
    """
    The root service of the main process of a netd with workers.

    It runs the process's life cycle as L{NetdService} does (binding as
    root, dropping privileges, systemd, signals), but its children are the
    listeners' sockets only (L{buildHeldListenerService}): no service is
    built here. Once privileges are dropped it starts the workers
    (L{Supervisor}), and tells systemd it is ready once they all are.

    @ivar workerCount: The number of workers of the current generation.
    @ivar held: The sockets held, by L{heldIdentity}.
    @ivar supervisor: The L{Supervisor}.
    """

    _log = Logger()

    def __init__(
        self,
        config: NetdConfig,
        reactor: Any = None,
        stderr: Any = None,
        *,
        workers: int,
        supervisor: Supervisor | None = None,
        **kwargs: Any,
    ) -> None:
        self.workerCount = workers
        self.held: dict[tuple[object, ...], Any] = {}
        self._stopping = False
        super().__init__(config, reactor, stderr, **kwargs)
        self.supervisor = (
            supervisor if supervisor is not None else Supervisor(self.reactor)
        )

    def _buildServices(self, config: NetdConfig) -> None:
        """
        Build a held socket per listener (per worker, for those of
        L{socketPerWorker}).

        @param config: The configuration.
        """
        for identity, spec in heldSockets(config, self.workerCount).items():
            held = self._newHeld(*spec)
            self.held[identity] = held
            held.setServiceParent(self)

    def _newHeld(self, service: str, listener: Listener, copy: int) -> Any:
        """
        Build (not bind) one held socket.

        @param service: Its service's name.
        @param listener: Its listener.
        @param copy: Which copy of the listener's socket (L{workerSockets}).
        @return: The held listener service, named after its listener (and
            its copy, when each worker has one).
        """
        held = buildHeldListenerService(
            HeldSocketOwner(service, self.reactor, self.ownPorts), listener
        )
        if copy:
            held.setName(f"{held.name} (worker {copy})")
        return held

    def _prepare(self) -> None:
        """
        As L{NetdService._prepare}; also create the http access log files
        as root, so that they are handed to the account with the other files
        and the unprivileged workers can open them.
        """
        if not self._prepared and self.account is not None:
            for path in accessLogFiles(self.config):
                try:
                    os.close(
                        os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                    )
                except OSError:
                    continue
                self.ownedFiles.append(path)
        super()._prepare()

    def plan(self, config: NetdConfig, count: int) -> WorkerPlan:
        """
        What the workers of a configuration are given.

        @param config: The configuration (its sockets are held).
        @param count: The number of workers.
        @return: The plan.
        """
        return WorkerPlan(
            config,
            tuple(
                {
                    listenerName(name, listener): self.held[
                        heldIdentity(name, listener, copy)
                    ].fileno()
                    for name, listener, copy in listeners
                }
                for listeners in workerSockets(config, count)
            ),
            tuple(sorted(self.ownPorts)),
        )

    def _identities(self, config: NetdConfig, count: int) -> tuple[Any, ...]:
        """
        @param config: A configuration.
        @param count: A number of workers.
        @return: The sockets of each worker, by L{heldIdentity}.
        """
        return tuple(
            frozenset(
                heldIdentity(name, listener, copy) for name, listener, copy in listeners
            )
            for listeners in workerSockets(config, count)
        )

    def _ready(self) -> None:
        """
        The reactor runs and privileges are dropped: start the workers.
        """
        if not self.running or self.supervisor.current is not None:
            return
        self.supervisor.start(self.plan(self.config, self.workerCount)).addCallbacks(
            self._workersReady, lambda reason: None
        )

    def _workersReady(self, result: None) -> None:
        """
        Every worker serves: tell systemd.
        """
        self._log.info("netd ready with {workers} workers", workers=self.workerCount)
        self.notifier.ready(self.status())

    def status(self) -> str:
        """
        @return: One line for systemd's status.
        """
        listeners = sum(len(s.listeners) for s in self.config.services)
        return (
            f"serving {len(self.config.services)} services on {listeners} "
            f"listeners with {self.workerCount} workers"
        )

    def _onSIGTERM(self) -> None:
        """
        SIGTERM: stop (the workers drain); a second one makes the workers
        close their sessions at once.
        """
        if self._stopping:
            self._log.info(
                "received SIGTERM again: the workers close their sessions now"
            )
            self.supervisor.signalAll(signal.SIGTERM)
            return
        super()._onSIGTERM()

    def stopService(self) -> defer.Deferred[None]:
        """
        Tell every worker to stop (they stop listening at once and drain),
        close the main process's copies of the sockets, and wait for the
        workers to exit (killing them C{drain_timeout} plus a few seconds
        later).

        @return: A L{Deferred} firing once every worker has exited and every
            socket is closed.
        """
        self._stopping = True
        self.notifier.stopping("stopping: the workers are draining their sessions")
        workersDone = self.supervisor.stop(
            self.config.drainTimeout + self.supervisor.killGrace
        )
        socketsClosed = defer.maybeDeferred(MultiService.stopService, self)
        return defer.gatherResults(
            [socketsClosed, workersDone], consumeErrors=True
        ).addBoth(self._stopped)

    def _recountPorts(self) -> None:
        """
        Make L{ownPorts} exactly the ports held now.
        """
        ports = {
            number for held in self.held.values() if (number := held.boundPortNumber())
        }
        self.ownPorts.clear()
        self.ownPorts.update(ports)

    def reload(self) -> Any:
        """
        Re-read and validate the configuration (SIGHUP); an invalid one is
        rejected with one error and everyone keeps serving.

        If every worker keeps the same sockets (and their number is the
        same), the validated text is passed on to the workers, which reload
        in place as a single netd does. Otherwise the new sockets are bound
        (a failure keeps the running configuration), a new generation of
        workers is started on the new set and, once it is ready, the old
        generation is told to stop (it drains) and the sockets nobody uses
        any more are closed.

        @return: Whether the reload was applied (in place), or a
            L{Deferred} firing with that once a new generation serves.
        """
        if self.supervisor.pending is not None:
            self._log.warn(
                "received SIGHUP while a new generation of workers starts: ignored"
            )
            return False
        self.notifier.reloading()
        new = self._readConfig()
        if new is None:
            return False
        source = self.configPath or EMBEDDED_DEFAULT
        count = resolveWorkers(new.workers)
        reloadPlan = planReload(self.config, new)
        summary = reloadPlan.describe()
        restartOnly = [key for key in reloadPlan.restartOnly if key != "workers"]
        if count == self.workerCount and self._identities(
            new, count
        ) == self._identities(self.config, self.workerCount):
            self.config = new
            self.supervisor.reloadInPlace(self.plan(new, count))
            return self._reloaded(
                source, summary, restartOnly, f"passed on to the {count} workers"
            )

        wanted = heldSockets(new, count)
        bound: list[tuple[Any, Any]] = []
        try:
            for identity, spec in wanted.items():
                if identity not in self.held:
                    held = self._newHeld(*spec)
                    held.bind()
                    bound.append((identity, held))
        except ListenError as e:
            for identity, held in bound:
                held.stopService()
            self._recountPorts()
            return self._reloadFailed(e, source)
        for identity, held in bound:
            self.held[identity] = held
            held.setServiceParent(self)
        self._log.info(
            "reload: starting a new generation of {workers} workers for the new "
            "sockets",
            workers=count,
        )

        def replaced(result: None) -> bool:
            for identity in [key for key in self.held if key not in wanted]:
                self.held.pop(identity).disownServiceParent()
            self.config = new
            self.workerCount = count
            self._recountPorts()
            return self._reloaded(
                source, summary, restartOnly, f"{count} new workers serve it"
            )

        def failed(reason: Failure) -> bool:
            for identity, held in bound:
                if self.held.get(identity) is held:
                    del self.held[identity]
                    held.disownServiceParent()
            self._recountPorts()
            self._log.error(
                "reload failed, still running the previous configuration: {error}",
                error=str(reason.value),
                path=source,
            )
            self.notifier.ready(f"{self.status()}; reload failed: {reason.value}")
            return False

        return self.supervisor.replace(self.plan(new, count)).addCallbacks(
            replaced, failed
        )

    def _reloaded(
        self, source: str, summary: str, restartOnly: list[str], how: str
    ) -> bool:
        """
        Finish a reload that applied (C{self.config} is the new
        configuration): reconfigure the logs, say so, warn about keys that
        wait for the next start, and tell systemd.

        @param source: The configuration's path (or the embedded default).
        @param summary: What changed.
        @param restartOnly: C{[netd]} keys that changed but apply at the
            next start.
        @param how: How the workers took it.
        @return: C{True}.
        """
        self._reconfigureLogs(self.config)
        self._log.info(
            "reloaded {path}: {summary}; {how}",
            path=source,
            summary=summary,
            how=how,
            workers=self.workerCount,
        )
        self._warnRestartOnly(restartOnly)
        self.notifier.ready(self.status())
        return True

    def _warnRestartOnly(self, keys: list[str]) -> None:
        """
        Warn about C{[netd]} keys that changed but apply at the next start.

        @param keys: Their names.
        """
        if keys:
            self._log.warn(
                "reload: {keys} changed but only apply at the next start",
                keys=", ".join(keys),
            )


def accessLogFiles(config: NetdConfig) -> list[str]:
    """
    @param config: A configuration.
    @return: The files its services write (access logs), each service's
        type saying which (L{ServiceType.ownedFiles}).
    """
    return [
        path
        for service in config.services
        if (owned := service.serviceType.ownedFiles) is not None
        for path in owned(service.settings)
    ]
