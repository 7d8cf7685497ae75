# -*- test-case-name: tests.test_workers -*-
"""
Worker processes: the main process's side (see L{netd.workers}).

L{Supervisor} runs the processes: it restarts one that exits unexpectedly
(with an exponential back-off), relays their log events into the main
process's log publisher with a C{worker} field (so the log destinations,
rotation included, stay in one process), aggregates readiness, forwards
stop signals, passes reloads on and collects the answers, and replaces a
whole generation of workers when a reload changes the sockets.
L{HeldSockets} is what the main process serves: the sockets, what the
service types need held beside them (an exec service's spawner door keeper,
forked as root), and the supervisor.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import define, field
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.config import NetdConfig, resolveWorkers
from netd.descriptions import Listener
from netd.counters import Series
from netd.metrics import WorkerMetrics
from netd.listeners import (
    HeldSocketOwner,
    ListenError,
    buildHeldListenerService,
    listenerName,
)
from netd.reload import planReload
from netd.served import IServedSet, ReloadResult
from netd.servicetype import buildHeldServices, unfitHeld
from netd.words import plural
from netd.workers.control import CONTROL_FD, EVENTS_FD, MAX_LINE, workerMessage
from netd.workers.plan import (
    WorkerPlan,
    heldIdentity,
    heldSockets,
    ownedFiles,
    workerSockets,
)

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


def reactorName(reactor: Any) -> str:
    """
    @param reactor: A reactor.
    @return: The fully qualified name of its class, for a worker to run the
        same kind of reactor as the main process (L{netd.workers.child.installReactor}).
    """
    kind = type(reactor)
    return f"{kind.__module__}.{kind.__qualname__}"


def workerCommand() -> list[str]:
    """
    The command that starts a worker: this Python, running L{netd.workers.child}
    (C{-P}: with no working directory on the module search path; see
    L{workerEnvironment}). The worker's index is appended, for C{ps}.

    @return: The argument vector.
    """
    return [sys.executable, "-P", "-m", "netd.workers.child"]


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
    # Set by spawnProcess before any other method runs.
    transport: IProcessTransport

    def __init__(self, supervisor: Supervisor, slot: WorkerSlot, header: bytes):
        self.supervisor = supervisor
        self.slot = slot
        self.header = header
        self.pid: int | None = None
        self.reloads: list[Deferred[tuple[bool, str]]] = []
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

    def reload(self, line: bytes) -> Deferred[tuple[bool, str]]:
        """
        Send a reload command.

        @param line: The command (L{WorkerPlan.message}).
        @return: A L{Deferred} firing with the worker's answer: whether it
            applied the configuration, and what changed or why not.
        """
        answer: Deferred[tuple[bool, str]] = Deferred()
        self.reloads.append(answer)
        self.send(line)
        return answer

    def reloaded(self, applied: bool, summary: str) -> None:
        """
        The worker answered the oldest reload command.

        @param applied: Whether it applied it.
        @param summary: What changed, or why not.
        """
        if self.reloads:
            self.reloads.pop(0).callback((applied, summary))

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
        if len(rest) > MAX_LINE:
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
        while self.reloads:
            self.reloaded(False, f"it {describeExit(reason)} first")
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


def _fromWorker(answer: tuple[bool, str], index: int) -> tuple[int, bool, str]:
    """
    @param answer: A worker's answer to a reload.
    @param index: The worker.
    @return: The answer, with the worker's index first.
    """
    return (index, *answer)


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
    @ivar metrics: What the workers' metrics reports add up to.
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
        self.metrics = WorkerMetrics()
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

    def reloadInPlace(self, plan: WorkerPlan) -> Deferred[list[tuple[int, bool, str]]]:
        """
        Give the current workers a new configuration that keeps their
        sockets; a worker restarted later gets it too.

        @param plan: The new plan (same sockets as the current one).
        @return: A L{Deferred} firing once every running worker answered
            (or exited), with C{(index, applied, summary)} for each.
        """
        assert self.current is not None
        self.current.plan = plan
        answers = []
        for slot in self.current.slots:
            if slot.process is not None:
                answer = slot.process.reload(plan.message(slot.index, command="reload"))
                answers.append(answer.addCallback(_fromWorker, slot.index))
        return defer.gatherResults(answers)

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
        message = workerMessage(line)
        if message is not None:
            if message["netdWorker"] == "ready":
                self._workerReady(process)
            elif message["netdWorker"] == "metrics":
                self.metrics.received(process, line)
            elif message["netdWorker"] == "reloaded":
                process.reloaded(
                    bool(message.get("applied")), str(message.get("summary", ""))
                )
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
        self.metrics.ended(process)
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


@implementer(IServedSet)
class HeldSockets(MultiService):
    """
    What the main process of a netd with workers serves: the listeners'
    sockets, and the workers that serve them.

    It binds every listener exactly as a single netd does (as root if
    needed, or adopting the sockets systemd passed), but does not serve
    them: it stops reading them and keeps them open (its children are
    L{buildHeldListenerService}s; no service is built here). Once privileges
    are dropped it starts the workers (L{Supervisor}) with the sockets, and
    serves once they all are ready.

    @ivar config: The configuration the workers serve.
    @ivar reactor: The reactor.
    @ivar workerCount: The number of workers of the current generation.
    @ivar held: The sockets held, by L{heldIdentity}.
    @ivar ownPorts: Every port held.
    @ivar heldServices: What the services' types need held beside their
        sockets (L{ServiceType.buildHeldService<netd.servicetype.ServiceType.buildHeldService>}:
        an exec service's spawner door keeper), by service name; made at
        start only.
    @ivar supervisor: The L{Supervisor}.
    """

    _log = Logger()
    stoppingStatus = "stopping: the workers are draining their sessions"

    def __init__(
        self,
        config: NetdConfig,
        reactor: Any = None,
        *,
        workers: int,
        supervisor: Supervisor | None = None,
    ) -> None:
        """
        @param config: The configuration.
        @param reactor: An L{IReactorProcess} and L{IReactorTime} provider
            (the global reactor if L{None}).
        @param workers: How many workers to run.
        @param supervisor: What runs them (for tests).
        """
        super().__init__()
        self.setName("held sockets")
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.workerCount = workers
        self.ownPorts: set[int] = set()
        self.held: dict[tuple[object, ...], Any] = {}
        self.supervisor = supervisor if supervisor is not None else Supervisor(reactor)
        for identity, spec in heldSockets(config, workers).items():
            held = self._newHeld(*spec)
            self.held[identity] = held
            held.setServiceParent(self)
        # What the services' types need the main process to hold for them
        # beside their sockets: started as root with the sockets (before
        # the drop), so made at start only, never by a reload.
        self.heldServices = buildHeldServices(config.services, reactor)
        for heldService in self.heldServices.values():
            heldService.setServiceParent(self)

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

    def ownedFiles(self) -> Sequence[str]:
        """
        @return: The files the services write (http access logs): created
            as root and handed over, so that the unprivileged workers can
            open them.
        """
        return ownedFiles(self.config)

    def plan(self, config: NetdConfig, count: int) -> WorkerPlan:
        """
        What the workers of a configuration are given.

        @param config: The configuration (its sockets are held).
        @param count: The number of workers.
        @return: The plan.
        """
        placement = workerSockets(config, count)
        return WorkerPlan(
            config,
            tuple(
                {
                    listenerName(name, listener): self.held[
                        heldIdentity(name, listener, copy)
                    ].fileno()
                    for name, listener, copy in listeners
                }
                for listeners in placement
            ),
            tuple(sorted(self.ownPorts)),
            tuple(
                self._heldFor(config, {name for name, _, _ in listeners})
                for listeners in placement
            ),
        )

    def _heldFor(self, config: NetdConfig, names: set[str]) -> dict[str, int]:
        """
        @param config: A configuration.
        @param names: The services one worker serves.
        @return: The descriptors of the held services that still fit their
            service in C{config}, by service name.
        """
        byName = {service.name: service for service in config.services}
        return {
            name: heldService.fileno()
            for name, heldService in self.heldServices.items()
            if name in names and name in byName and heldService.fits(byName[name])
        }

    def _dropHeld(self, config: NetdConfig) -> None:
        """
        Stop the held services that no longer fit their service in a
        configuration now served (removed, or its programs changed, which
        after the drop is accepted only for programs that run as netd's own
        user): nothing can replace them once root is dropped, so the
        workers do without (an exec service forks its own spawner).

        @param config: The configuration.
        """
        for name, gone in unfitHeld(self.heldServices, config.services):
            self._log.info(
                "{service}: its spawner, forked before root was dropped, is "
                "stopped: the service is {why}",
                service=name,
                why="gone" if gone else "changed",
            )
            self.heldServices.pop(name).disownServiceParent()

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

    def serving(self) -> Deferred[bool]:
        """
        The reactor runs and privileges are dropped: start the workers.

        @return: A L{Deferred} firing with C{True} once every worker serves,
            or C{False} if netd stops first.
        """
        if not self.running or self.supervisor.current is not None:
            return defer.succeed(False)

        def ready(result: None) -> bool:
            self._log.info(
                "netd ready with {workers} workers", workers=self.workerCount
            )
            return True

        return self.supervisor.start(
            self.plan(self.config, self.workerCount)
        ).addCallbacks(ready, lambda reason: False)

    def metricsSeries(self) -> list[Series]:
        """
        @return: What the metrics endpoint reports: the sum over the
            workers (L{WorkerMetrics}).
        """
        return self.supervisor.metrics.series()

    def status(self) -> str:
        """
        @return: One line for systemd's status.
        """
        listeners = sum(len(s.listeners) for s in self.config.services)
        return (
            f"serving {plural(len(self.config.services), 'service')} on "
            f"{plural(listeners, 'listener')} with {self.workerCount} workers"
        )

    def abortNow(self) -> None:
        """
        A second SIGTERM: the workers close their sessions at once.
        """
        self._log.info("the workers close their sessions now")
        self.supervisor.signalAll(signal.SIGTERM)

    def stopService(self) -> Deferred[None]:
        """
        Tell every worker to stop (they stop listening at once and drain),
        close the main process's copies of the sockets, and wait for the
        workers to exit (killing them C{drain_timeout} plus a few seconds
        later).

        @return: A L{Deferred} firing once every worker has exited and every
            socket is closed.
        """
        workersDone = self.supervisor.stop(
            self.config.drainTimeout + self.supervisor.killGrace
        )
        socketsClosed = defer.maybeDeferred(super().stopService)
        stopped: Deferred[Any] = defer.gatherResults(
            [socketsClosed, workersDone], consumeErrors=True
        )
        return stopped.addCallback(lambda _: None)

    def recountPorts(self) -> None:
        """
        Make L{ownPorts} exactly the ports held now.
        """
        ports = {
            number for held in self.held.values() if (number := held.boundPortNumber())
        }
        self.ownPorts.clear()
        self.ownPorts.update(ports)

    def reload(self, new: NetdConfig) -> Deferred[ReloadResult]:
        """
        Serve a new, valid configuration.

        If every worker keeps the same sockets (and their number is the
        same), the configuration is passed on to the workers, which reload
        in place as a single netd does, and answer. Otherwise the new
        sockets are bound (a failure keeps the running configuration), a
        new generation of workers is started on the new set and, once it is
        ready, the old generation is told to stop (it drains) and the
        sockets nobody uses any more are closed.

        @param new: The configuration.
        @return: A L{Deferred} firing with how it ended.
        """
        if self.supervisor.pending is not None:
            return defer.succeed(
                ReloadResult(
                    False, "a new generation of workers is still starting", self.config
                )
            )
        count = resolveWorkers(new.workers)
        reloadPlan = planReload(self.config, new)
        summary = reloadPlan.describe()
        restartOnly = tuple(key for key in reloadPlan.restartOnly if key != "workers")
        if count == self.workerCount and self._identities(
            new, count
        ) == self._identities(self.config, count):
            return self._reloadInPlace(new, count, summary, restartOnly)

        wanted = heldSockets(new, count)
        bound: list[tuple[tuple[object, ...], Any]] = []
        try:
            for identity, spec in wanted.items():
                if identity not in self.held:
                    held = self._newHeld(*spec)
                    held.bind()
                    bound.append((identity, held))
        except ListenError as e:
            for identity, held in bound:
                held.stopService()
            self.recountPorts()
            return defer.succeed(ReloadResult.bindFailed(e, self.config))
        for identity, held in bound:
            self.held[identity] = held
            held.setServiceParent(self)
        self._log.info(
            "reload: starting a new generation of {workers} workers for the new "
            "sockets",
            workers=count,
        )

        def replaced(result: None) -> ReloadResult:
            for identity in [key for key in self.held if key not in wanted]:
                self.held.pop(identity).disownServiceParent()
            self._dropHeld(new)
            self.config = new
            self.workerCount = count
            self.recountPorts()
            return ReloadResult(
                True,
                f"{summary}; {count} new workers serve it",
                new,
                restartOnly=restartOnly,
            )

        def failed(reason: Failure) -> ReloadResult:
            for identity, held in bound:
                if identity in self.held and self.held[identity] is held:
                    self.held.pop(identity).disownServiceParent()
            self.recountPorts()
            return ReloadResult(False, str(reason.value), self.config)

        return self.supervisor.replace(self.plan(new, count)).addCallbacks(
            replaced, failed
        )

    def _reloadInPlace(
        self, new: NetdConfig, count: int, summary: str, restartOnly: tuple[str, ...]
    ) -> Deferred[ReloadResult]:
        """
        Pass a configuration that keeps every socket on to the workers.

        @param new: The configuration.
        @param count: The number of workers (unchanged).
        @param summary: What changed.
        @param restartOnly: Keys that apply at the next start.
        @return: A L{Deferred} firing once every worker answered: applied if
            all of them applied it.
        """
        self.config = new
        self._dropHeld(new)

        def answered(answers: list[tuple[int, bool, str]]) -> ReloadResult:
            refused = [
                f"worker {index}: {why}"
                for index, applied, why in answers
                if not applied
            ]
            if refused:
                return ReloadResult(
                    False,
                    f"{len(refused)} of {len(answers)} workers kept the previous "
                    f"configuration ({'; '.join(refused)})",
                    new,
                )
            return ReloadResult(
                True,
                f"{summary}; applied by the {len(answers)} workers",
                new,
                restartOnly=restartOnly,
            )

        return self.supervisor.reloadInPlace(self.plan(new, count)).addCallback(
            answered
        )
