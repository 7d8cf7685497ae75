# -*- test-case-name: tests.test_workers -*-
"""
Tests for worker processes: the C{workers} key, the supervisor
(L{netd.workers.supervisor.Supervisor}) on a fake process reactor and a L{Clock}, and
the main process's root service (L{netd.workers.supervisor.HeldSockets}) holding
real sockets on loopback.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import Logger, eventAsJSON, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.config import ConfigError, parseConfig, resolveWorkers
from netd.services import serviceTypes
from netd.daemon import NetdService
from netd.instances import InProcessServices
from netd.services.exec import HeldSpawner
from netd.tap import Options, makeService
from netd.workers.control import FIRST_SOCKET_FD, encodeMessage, reloadedMessage
from netd.workers.plan import (
    WorkerPlan,
    heldSockets,
    perProcessServices,
    workerSockets,
)
from netd.workers.supervisor import (
    HeldSockets,
    Supervisor,
    WorkerStartError,
    workerEnvironment,
)
from tests.test_listeners import LOOPBACK, freePort


def problems(text: str) -> list[str]:
    """
    @param text: TOML text.
    @return: The lines of the L{ConfigError} it raises.
    """
    try:
        parseConfig(serviceTypes(), text, "netd.toml")
    except ConfigError as e:
        return e.lines()
    raise AssertionError("no ConfigError")


ECHO = '[services.echo]\ntype = "echo"\nlisten = ["tcp:7:interface=127.0.0.1"]\n'


class WorkersConfigTests(SynchronousTestCase):
    """
    The C{workers} key of C{[netd]}.
    """

    def test_default(self) -> None:
        """
        Without the key, one process: today's behaviour.
        """
        self.assertEqual(parseConfig(serviceTypes(), ECHO, "x").workers, 1)

    def test_integer(self) -> None:
        """
        An integer from 1 to 256 is taken as is.
        """
        for value in (1, 2, 256):
            config = parseConfig(
                serviceTypes(), f"[netd]\nworkers = {value}\n" + ECHO, "x"
            )
            self.assertEqual(config.workers, value)
            self.assertEqual(resolveWorkers(config.workers), value)

    def test_auto(self) -> None:
        """
        C{"auto"} is one worker per CPU this process may run on.
        """
        config = parseConfig(serviceTypes(), '[netd]\nworkers = "auto"\n' + ECHO, "x")
        self.assertEqual(config.workers, "auto")
        self.assertEqual(resolveWorkers("auto", cpus=3), 3)
        self.assertEqual(resolveWorkers("auto"), len(os.sched_getaffinity(0)))

    def test_outOfRange(self) -> None:
        """
        0 and 257 are out of range, in the usual C{FILE: key: message} form.
        """
        for value in (0, 257, -1):
            self.assertEqual(
                problems(f"[netd]\nworkers = {value}\n" + ECHO),
                [
                    f"netd.toml: netd.workers: {value} is out of range "
                    '(1 to 256, or "auto")'
                ],
            )

    def test_wrongType(self) -> None:
        """
        Anything but an integer or C{"auto"} says what is expected.
        """
        for value, got in (("1.5", "a number"), ("true", "a boolean")):
            self.assertEqual(
                problems(f"[netd]\nworkers = {value}\n" + ECHO),
                [
                    "netd.toml: netd.workers: expected an integer (1 to 256) "
                    f'or "auto", got {got}'
                ],
            )

    def test_misspeltAuto(self) -> None:
        """
        A string close to C{"auto"} gets a did-you-mean.
        """
        self.assertEqual(
            problems('[netd]\nworkers = "atuo"\n' + ECHO),
            [
                "netd.toml: netd.workers: expected an integer (1 to 256) or "
                '"auto", got \'atuo\' (did you mean "auto"?)'
            ],
        )
        self.assertTrue(
            problems('[netd]\nworkers = "many"\n' + ECHO)[0].endswith("got 'many'")
        )

    def test_quotedNumber(self) -> None:
        """
        A number in quotes is refused with the fix.
        """
        self.assertEqual(
            problems('[netd]\nworkers = "4"\n' + ECHO),
            [
                "netd.toml: netd.workers: expected an integer (1 to 256) or "
                "\"auto\", got the string '4' (write workers = 4, without quotes)"
            ],
        )

    def test_misspeltKey(self) -> None:
        """
        C{worker} gets a did-you-mean C{workers}.
        """
        self.assertEqual(
            problems("[netd]\nworker = 2\n" + ECHO),
            ["netd.toml: netd.worker: unknown key (did you mean 'workers'?)"],
        )

    def test_checkSummary(self) -> None:
        """
        C{--check} names the number of workers when there are any.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[netd]\nworkers = 3\n" + ECHO)
        options = Options()
        options.stdout = io.StringIO()
        with self.assertRaises(SystemExit) as raised:
            options.parseOptions(["--check", "--allow-root", "--config", path])
        self.assertEqual(raised.exception.code, 0)
        self.assertIn(
            "configuration is valid (1 service, 1 listener, 3 workers)",
            options.stdout.getvalue(),
        )

    def test_makeService(self) -> None:
        """
        With more than one worker, C{makeService} returns the supervisor's
        root service, which builds no service instance; with one, the usual
        L{NetdService}.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[netd]\nworkers = 2\n" + ECHO)
        options = Options()
        options.parseOptions(["--config", path])
        root = makeService(options)
        self.assertIsInstance(root, NetdService)
        self.assertIsInstance(root.served, HeldSockets)
        self.assertEqual(root.served.workerCount, 2)
        self.assertEqual(list(root.served), list(root.served.held.values()))
        single = Options()
        single.parseOptions([])
        root = makeService(single)
        self.assertIsInstance(root.served, InProcessServices)


class PerProcessTests(SynchronousTestCase):
    """
    Which services run in worker 0 only.
    """

    CONFIG = (
        '[services.echo]\ntype = "echo"\nlisten = ["tcp:7:interface=127.0.0.1"]\n'
        '[services.chat]\ntype = "chat"\nlisten = ["tcp:23:interface=127.0.0.1"]\n'
        '[services.web]\ntype = "http"\nlisten = ["tcp:80:interface=127.0.0.1"]\n'
        'chat = "chat"\n'
        '[services.files]\ntype = "http"\nlisten = ["tcp:81:interface=127.0.0.1"]\n'
    )

    def test_pinned(self) -> None:
        """
        Chat services and http services mounting one are per process.
        """
        config = parseConfig(serviceTypes(), self.CONFIG, "x")
        self.assertEqual(perProcessServices(config), {"chat", "web"})

    def test_sockets(self) -> None:
        """
        Worker 0 gets every listener; the others all but the per-process
        services'.
        """
        config = parseConfig(serviceTypes(), self.CONFIG, "x")
        sockets = workerSockets(config, 3)
        self.assertEqual(
            [name for name, listener, copy in sockets[0]],
            ["echo", "chat", "web", "files"],
        )
        for other in sockets[1:]:
            self.assertEqual(
                [name for name, listener, copy in other], ["echo", "files"]
            )
        self.assertEqual({copy for worker in sockets for _, _, copy in worker}, {0})

    def test_udpReusePortSocketPerWorker(self) -> None:
        """
        A UDP listener with C{reuse_port} on a fixed port gets one socket per
        worker; without C{reuse_port}, on an ephemeral port, from systemd,
        or with one worker, the socket is shared.
        """
        config = parseConfig(
            serviceTypes(),
            '[services.echo]\ntype = "echo"\nlisten = [\n'
            '  { address = "udp:7:interface=127.0.0.1", reuse_port = true },\n'
            '  { address = "udp:0:interface=127.0.0.1", reuse_port = true },\n'
            '  { address = "tcp:7:interface=127.0.0.1", reuse_port = true },\n'
            '  "udp:8:interface=127.0.0.1",\n]\n',
            "x",
        )
        copies = [
            [copy for _, _, copy in worker] for worker in workerSockets(config, 3)
        ]
        self.assertEqual(copies, [[0, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0]])
        self.assertEqual(
            [copy for _, _, copy in workerSockets(config, 1)[0]], [0, 0, 0, 0]
        )
        self.assertEqual(len(heldSockets(config, 3)), 6)

    def test_environment(self) -> None:
        """
        A worker's environment has none of systemd's variables (the main
        process notifies and hands the sockets on), and the main process's
        module search path.
        """
        env = workerEnvironment(
            {"NOTIFY_SOCKET": "/run/x", "LISTEN_FDS": "2", "HOME": "/"},
            ["/a", "b"],
        )
        self.assertEqual(
            env, {"HOME": "/", "PYTHONPATH": f"/a{os.pathsep}{os.path.abspath('b')}"}
        )


class FakeProcess:
    """
    The transport of a process spawned by L{ProcessReactor}.

    @ivar pid: Its process id.
    @ivar written: What was written to its control pipe.
    @ivar signals: The signals sent to it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written = b""
        self.signals: list[int] = []
        self.ended = False

    def write(self, data: bytes) -> None:
        self.written += data

    def signalProcess(self, number: int) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(number)

    def lines(self) -> list[dict[str, Any]]:
        """
        @return: The JSON lines written to its control pipe.
        """
        return [json.loads(line) for line in self.written.splitlines()]


class Spawned:
    """
    One call to L{ProcessReactor.spawnProcess}.
    """

    def __init__(self, protocol: Any, args: list[str], childFDs: Any, pid: int):
        self.protocol = protocol
        self.args = args
        self.childFDs = childFDs
        self.transport = FakeProcess(pid)

    def ready(self) -> None:
        """
        The worker says it is ready.
        """
        self.protocol.childDataReceived(3, b'{"netdWorker": "ready"}\n')

    def reloaded(self, applied: bool = True, summary: str = "changed: echo") -> None:
        """
        The worker answers a reload command.

        @param applied: Whether it applied the configuration.
        @param summary: What changed, or why not.
        """
        self.protocol.childDataReceived(
            3, encodeMessage(reloadedMessage(applied, summary))
        )

    def end(self, code: int | None = 0, number: int | None = None) -> None:
        """
        The process exits.

        @param code: Its exit status.
        @param number: The signal that killed it, if any.
        """
        self.transport.ended = True
        if code == 0 and number is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(code, number))
        self.protocol.processEnded(reason)


class ProcessReactor(Clock):
    """
    A L{Clock} that records spawned processes instead of running them.

    @ivar spawned: Every process spawned, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[Spawned] = []

    def spawnProcess(
        self,
        protocol: Any,
        executable: str,
        args: list[str],
        env: Any = None,
        path: Any = None,
        uid: Any = None,
        gid: Any = None,
        usePTY: bool = False,
        childFDs: Any = None,
    ) -> FakeProcess:
        spawned = Spawned(protocol, args, childFDs, 1000 + len(self.spawned))
        self.spawned.append(spawned)
        protocol.makeConnection(spawned.transport)
        return spawned.transport


def makePlan(count: int = 2, text: str = ECHO, fds: dict[str, int] | None = None):
    """
    @param count: Workers.
    @param text: The configuration.
    @param fds: Each worker's sockets.
    @return: A L{WorkerPlan}.
    """
    config = parseConfig(serviceTypes(), text, "netd.toml")
    if fds is None:
        fds = {"echo/tcp:7:interface=127.0.0.1": 17}
    return WorkerPlan(config, tuple(dict(fds) for _ in range(count)), (7,))


class HeldPlanTests(SynchronousTestCase):
    """
    L{WorkerPlan.held}: what the main process holds for the services a
    worker serves (an exec service's spawner door) is inherited after its
    sockets and named in its start message.
    """

    def plan(self) -> WorkerPlan:
        """
        @return: A plan in which worker 0 serves C{x} and has its door.
        """
        config = parseConfig(serviceTypes(), ECHO, "netd.toml")
        return WorkerPlan(
            config,
            ({"echo/tcp:7": 17, "echo/udp:7": 12, "x/tcp:79": 9}, {"echo/tcp:7": 17}),
            (7,),
            ({"x": 30, "a": 31}, {}),
        )

    def test_childFDs(self) -> None:
        """
        Worker 0 inherits the held descriptors after its sockets, in service
        name order; worker 1 none.
        """
        plan = self.plan()
        self.assertEqual(plan.childSockets(0)[0], {4: 9, 5: 12, 6: 17, 7: 31, 8: 30})
        self.assertEqual(plan.childHeld(0), {"a": 7, "x": 8})
        self.assertEqual(plan.childSockets(1)[0], {4: 17})
        self.assertEqual(plan.childHeld(1), {})

    def test_message(self) -> None:
        """
        The start message names each worker's held descriptors, and every
        held service (another worker's too: the configuration is valid for
        them all).
        """
        plan = self.plan()
        first = json.loads(plan.message(0))
        second = json.loads(plan.message(1))
        self.assertEqual(first["held"], {"a": 7, "x": 8})
        self.assertEqual(second["held"], {})
        self.assertEqual(first["heldNames"], ["a", "x"])
        self.assertEqual(second["heldNames"], ["a", "x"])

    def test_noneHeld(self) -> None:
        """
        A plan without held descriptors passes only the sockets.
        """
        plan = makePlan(2)
        self.assertEqual(plan.childSockets(0)[0], {4: 17})
        self.assertEqual(json.loads(plan.message(0))["held"], {})


class SupervisorTests(SynchronousTestCase):
    """
    L{Supervisor} with processes that are not real.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.events: list[dict[str, Any]] = []
        self.supervisor = Supervisor(
            self.reactor, ["python", "-m", "netd.workers.child"], {}, self.events.append
        )
        self.supervisor._log = Logger(observer=self.events.append)

    def logged(self, fragment: str) -> list[str]:
        """
        @param fragment: Text to look for.
        @return: The formatted events that contain it.
        """
        texts = [formatEvent(event) for event in self.events]
        return [text for text in texts if fragment in text]

    def test_spawn(self) -> None:
        """
        Each worker is spawned with its control, output and event pipes and
        its sockets mapped from fd 4, and given its configuration as one
        JSON line.
        """
        plan = makePlan(
            2,
            fds={"echo/tcp:7:interface=127.0.0.1": 17, "echo/udp:7": 12},
        )
        self.supervisor.start(plan)
        self.assertEqual(len(self.reactor.spawned), 2)
        for index, spawned in enumerate(self.reactor.spawned):
            self.assertEqual(
                spawned.args, ["python", "-m", "netd.workers.child", str(index)]
            )
            self.assertEqual(
                spawned.childFDs,
                {0: "w", 1: "r", 2: "r", 3: "r", FIRST_SOCKET_FD: 12, 5: 17},
            )
            [header] = spawned.transport.lines()
            self.assertEqual(header["index"], index)
            self.assertEqual(header["text"], ECHO)
            self.assertEqual(header["source"], "netd.toml")
            self.assertEqual(header["mainPid"], os.getpid())
            self.assertEqual(header["ownPorts"], [7])
            self.assertEqual(
                header["sockets"],
                {"echo/tcp:7:interface=127.0.0.1": 5, "echo/udp:7": 4},
            )

    def test_readiness(self) -> None:
        """
        The generation is ready once every worker said so.
        """
        ready = self.supervisor.start(makePlan(2))
        fired: list[Any] = []
        ready.addCallback(fired.append)
        self.reactor.spawned[1].ready()
        self.assertEqual(fired, [])
        self.reactor.spawned[0].ready()
        self.assertEqual(fired, [None])
        self.assertEqual(len(self.logged("ready (pid")), 2)

    def test_restartAfterCrash(self) -> None:
        """
        A worker that exits unexpectedly is logged with its status and
        restarted after half a second, with the same sockets.
        """
        self.supervisor.start(makePlan(2))
        first = self.reactor.spawned[1]
        first.ready()
        first.end(3)
        self.assertEqual(len(self.reactor.spawned), 2)
        [line] = self.logged("worker 1 (pid 1001) exited with status 3")
        self.assertIn("restarting it in 0.5s", line)
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 3)
        again = self.reactor.spawned[2]
        self.assertEqual(again.childFDs, first.childFDs)
        self.assertEqual(again.transport.lines()[0]["index"], 1)
        self.reactor.spawned[1 + 1].end(None, signal.SIGKILL)
        self.assertTrue(self.logged("worker 1 (pid 1002) killed by SIGKILL"))

    def test_backoff(self) -> None:
        """
        Quick exits double the delay, up to 30 seconds; a worker that stayed
        up 10 seconds restarts after half a second again.
        """
        self.supervisor.start(makePlan(1))
        delays = []
        for _ in range(9):
            before = len(self.reactor.spawned)
            self.reactor.spawned[-1].end(1)
            waited = 0.0
            while len(self.reactor.spawned) == before:
                self.reactor.advance(0.25)
                waited += 0.25
            delays.append(waited)
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 16, 30, 30, 30])
        self.reactor.advance(10)
        self.reactor.spawned[-1].end(1)
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 11)

    def test_stop(self) -> None:
        """
        Stopping sends every worker SIGTERM, kills those still running after
        the timeout, does not restart them, and fires once all have exited.
        """
        self.supervisor.start(makePlan(2))
        stopped: list[Any] = []
        self.supervisor.stop(35).addCallback(stopped.append)
        first, second = self.reactor.spawned
        self.assertEqual(first.transport.signals, [signal.SIGTERM])
        self.assertEqual(second.transport.signals, [signal.SIGTERM])
        first.end(0)
        self.reactor.advance(34)
        self.assertEqual(second.transport.signals, [signal.SIGTERM])
        self.reactor.advance(1)
        self.assertEqual(second.transport.signals, [signal.SIGTERM, signal.SIGKILL])
        self.assertEqual(stopped, [])
        second.end(None, signal.SIGKILL)
        self.assertEqual(stopped, [None])
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_signalAll(self) -> None:
        """
        L{Supervisor.signalAll} forwards a signal to every running worker.
        """
        self.supervisor.start(makePlan(2))
        self.reactor.spawned[0].end(1)
        self.supervisor.signalAll(signal.SIGTERM)
        self.assertEqual(self.reactor.spawned[0].transport.signals, [])
        self.assertEqual(self.reactor.spawned[1].transport.signals, [signal.SIGTERM])

    def test_reloadInPlace(self) -> None:
        """
        A reload that keeps the sockets sends each worker the new text; a
        worker restarted later starts with it.
        """
        self.supervisor.start(makePlan(2))
        newText = ECHO + "[services.echo.limits]\nmax_sessions = 5\n"
        answers = self.supervisor.reloadInPlace(makePlan(2, newText))
        for spawned in self.reactor.spawned:
            command = spawned.transport.lines()[1]
            self.assertEqual(command["command"], "reload")
            self.assertEqual(command["text"], newText)
            self.assertEqual(command["sockets"], {"echo/tcp:7:interface=127.0.0.1": 4})
        self.assertNoResult(answers)
        self.reactor.spawned[1].reloaded(False, "cannot read key.pem")
        self.assertNoResult(answers)
        self.reactor.spawned[0].reloaded()
        self.assertEqual(
            self.successResultOf(answers),
            [(0, True, "changed: echo"), (1, False, "cannot read key.pem")],
        )
        self.reactor.spawned[0].end(1)
        self.reactor.advance(0.5)
        self.assertEqual(self.reactor.spawned[2].transport.lines()[0]["text"], newText)

    def test_reloadAnsweredByExit(self) -> None:
        """
        A worker that exits before it answers a reload counts as not having
        applied it, saying how it ended.
        """
        self.supervisor.start(makePlan(1))
        answers = self.supervisor.reloadInPlace(makePlan(1, ECHO))
        self.reactor.spawned[0].end(1)
        self.assertEqual(
            self.successResultOf(answers), [(0, False, "it exited with status 1 first")]
        )

    def test_generationSwap(self) -> None:
        """
        A new generation starts beside the old one; once all of it is ready
        the old one gets SIGTERM (and is not restarted when it exits).
        """
        self.supervisor.start(makePlan(2))
        old = list(self.reactor.spawned)
        for spawned in old:
            spawned.ready()
        result: list[Any] = []
        self.supervisor.replace(makePlan(3, fds={"x": 30})).addCallback(result.append)
        new = self.reactor.spawned[2:]
        self.assertEqual(len(new), 3)
        self.assertEqual(new[0].childFDs[4], 30)
        new[0].ready()
        new[1].ready()
        self.assertEqual([s.transport.signals for s in old], [[], []])
        new[2].ready()
        self.assertEqual(result, [None])
        self.assertEqual(
            [s.transport.signals for s in old], [[signal.SIGTERM], [signal.SIGTERM]]
        )
        self.assertEqual([s.transport.signals for s in new], [[], [], []])
        self.assertIs(self.supervisor.current.plan.count, 3)
        for spawned in old:
            spawned.end(0)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 5)
        self.assertEqual(self.supervisor.retiring, [])

    def test_generationFails(self) -> None:
        """
        A new worker that exits before it is ready fails the new generation:
        it is stopped and the old one keeps serving, untouched.
        """
        self.supervisor.start(makePlan(1))
        old = self.reactor.spawned[0]
        old.ready()
        result: list[Any] = []
        self.supervisor.replace(makePlan(2)).addErrback(result.append)
        first, second = self.reactor.spawned[1:]
        first.ready()
        second.end(71)
        [failure] = result
        failure.trap(WorkerStartError)
        self.assertIn("worker 1 exited with status 71", str(failure.value))
        self.assertEqual(first.transport.signals, [signal.SIGTERM])
        self.assertEqual(old.transport.signals, [])
        self.assertIsNone(self.supervisor.pending)
        self.assertEqual(
            self.supervisor.current.slots[0].process.pid, old.transport.pid
        )
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 3)

    def test_logRelay(self) -> None:
        """
        A JSON event line from a worker is published with a C{worker} field
        and formats as it did in the worker.
        """
        self.supervisor.start(makePlan(2))
        captured: list[dict[str, Any]] = []
        Logger(namespace="netd.sessions", observer=captured.append).info(
            "{service} session ended after {duration:.3f}s",
            service="echo",
            duration=1.23456,
        )
        line = eventAsJSON(captured[0]).encode("utf-8")
        spawned = self.reactor.spawned[1]
        spawned.protocol.childDataReceived(3, line[:10])
        self.assertEqual(self.events[2:], [])
        spawned.protocol.childDataReceived(3, line[10:] + b"\n")
        event = self.events[-1]
        self.assertEqual(event["worker"], 1)
        self.assertEqual(event["workerPid"], 1001)
        self.assertEqual(event["service"], "echo")
        self.assertEqual(event["log_namespace"], "netd.sessions")
        self.assertEqual(formatEvent(event), "echo session ended after 1.235s")
        self.assertEqual(event["log_system"], "worker 1 netd.sessions#info")

    def test_outputRelay(self) -> None:
        """
        What a worker writes to its standard error (a traceback) is logged,
        line by line, with its index.
        """
        self.supervisor.start(makePlan(1))
        protocol = self.reactor.spawned[0].protocol
        protocol.childDataReceived(2, b"Traceback (most recent call last):\n  Fi")
        protocol.childDataReceived(2, b'le "x"\n')
        protocol.childConnectionLost(2)
        self.assertEqual(
            self.logged("worker 0: "),
            ["worker 0: Traceback (most recent call last):", 'worker 0:   File "x"'],
        )


def supervisorService(
    config: Any, reactor: Any, workers: int, supervisor: Supervisor, **kwargs: Any
) -> NetdService:
    """
    The root service of a main process with workers.

    @param config: The configuration.
    @param reactor: The reactor its sockets are bound with.
    @param workers: How many workers.
    @param supervisor: What runs them.
    @param kwargs: More L{NetdService} arguments.
    @return: A L{NetdService} serving L{HeldSockets}.
    """
    return NetdService(
        config,
        reactor,
        served=HeldSockets(config, reactor, workers=workers, supervisor=supervisor),
        **kwargs,
    )


class SupervisorServiceTests(TestCase):
    """
    L{HeldSockets} under L{NetdService}: the main process's sockets on loopback, its
    workers on a fake process reactor.
    """

    def setUp(self) -> None:
        self.processes = ProcessReactor()
        self.events: list[dict[str, Any]] = []
        self.path = os.path.abspath(self.mktemp())

    def write(self, text: str, workers: int = 2) -> None:
        """
        @param text: The configuration file's new text (services).
        @param workers: Its C{workers}.
        """
        with open(self.path, "w") as f:
            f.write(f"[netd]\nworkers = {workers}\n" + text)

    def start(self, text: str, workers: int = 2) -> NetdService:
        """
        Start the root service of a main process with workers on a configuration.

        @param text: Its TOML.
        @param workers: The number of workers.
        @return: The started service.
        """
        self.write(text, workers)
        from netd.config import loadConfig

        supervisor = Supervisor(self.processes, ["python"], {}, self.events.append)
        service = supervisorService(
            loadConfig(serviceTypes(), self.path),
            reactor,
            workers=workers,
            supervisor=supervisor,
        )
        service._log = Logger(observer=self.events.append)
        service.served._log = Logger(observer=self.events.append)
        service.privilegedStartService()
        service.startService()
        # What the reactor calls once it runs:
        service._ready()
        self.addCleanup(self.stop, service)
        return service

    def stop(self, service: NetdService) -> Any:
        """
        Stop the service and end its fake workers.

        @return: A L{Deferred} firing once its sockets are closed.
        """
        stopped = service.stopService() if service.running else None
        for spawned in self.processes.spawned:
            if not spawned.transport.ended:
                spawned.end(0)
        return stopped

    def test_holdsSockets(self) -> None:
        """
        Every listener is bound in the main process and not read there; the
        workers are given those very descriptors, chat in worker 0 only.
        """
        service = self.start(
            '[services.echo]\ntype = "echo"\n'
            'listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]\n'
            '[services.chat]\ntype = "chat"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        )
        held = list(service.served.held.values())
        self.assertEqual(len(held), 3)
        readers = reactor.getReaders()
        for listener in held:
            self.assertIsNotNone(listener.port)
            self.assertNotIn(listener.port, readers)
        fds = {listener.name: listener.fileno() for listener in held}
        first, second = self.processes.spawned
        self.assertEqual(
            sorted(fd for fd in first.childFDs.values() if isinstance(fd, int)),
            sorted(fds.values()),
        )
        self.assertEqual(
            sorted(first.transport.lines()[0]["sockets"]),
            sorted(fds),
        )
        self.assertEqual(
            sorted(second.transport.lines()[0]["sockets"]),
            ["echo/tcp:0:interface=127.0.0.1", "echo/udp:0:interface=127.0.0.1"],
        )
        self.assertEqual(list(service.served), held)

    def test_udpSocketPerWorker(self) -> None:
        """
        A UDP listener with C{reuse_port} is bound once per worker, on the
        same address with C{SO_REUSEPORT}, and each worker is given its own;
        a reload to one worker closes the copy it no longer needs.
        """
        port = freePort(socket.SOCK_DGRAM)
        text = (
            '[services.echo]\ntype = "echo"\nlisten = [\n'
            f'  {{ address = "udp:{port}:interface=127.0.0.1", reuse_port = true }},\n'
            "]\n"
        )
        service = self.start(text)
        self.assertEqual(len(service.served.held), 2)
        copies = list(service.served.held.values())
        for held in copies:
            skt = held.port.socket
            self.assertEqual(skt.getsockname(), (LOOPBACK, port))
            self.assertEqual(skt.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), 1)
        self.assertEqual(
            [held.name for held in copies],
            [
                f"echo/udp:{port}:interface=127.0.0.1",
                f"echo/udp:{port}:interface=127.0.0.1 (worker 1)",
            ],
        )
        given = [
            sorted(fd for fd in spawned.childFDs.values() if isinstance(fd, int))
            for spawned in self.processes.spawned
        ]
        self.assertEqual(given, [[copies[0].fileno()], [copies[1].fileno()]])
        for spawned in self.processes.spawned:
            spawned.ready()
        self.write(text, workers=1)
        result: list[Any] = []
        service.reload().addCallback(lambda r: result.append(r.applied))
        self.processes.spawned[2].ready()
        self.assertEqual(result, [True])
        self.assertEqual(list(service.served.held.values()), [copies[0]])
        self.assertIsNone(copies[1].port)

    def test_readyWhenAllReady(self) -> None:
        """
        C{netd ready with N workers} is logged once every worker is ready.
        """
        self.start(ECHO.replace("tcp:7", "tcp:0"))
        self.processes.spawned[0].ready()
        ready = [e for e in self.events if "netd ready" in formatEvent(e)]
        self.assertEqual(ready, [])
        self.processes.spawned[1].ready()
        ready = [formatEvent(e) for e in self.events if "netd ready" in formatEvent(e)]
        self.assertEqual(ready, ["netd ready with 2 workers"])

    def test_reloadSameSockets(self) -> None:
        """
        A reload that keeps every socket is passed on to the workers in
        place, with the validated text.
        """
        text = ECHO.replace("tcp:7", "tcp:0")
        service = self.start(text)
        for spawned in self.processes.spawned:
            spawned.ready()
        newText = text + "[services.echo.limits]\nmax_sessions = 5\n"
        self.write(newText)
        reloaded = service.reload()
        for spawned in self.processes.spawned:
            self.assertEqual(
                spawned.transport.lines()[1]["text"], "[netd]\nworkers = 2\n" + newText
            )
        self.assertNoResult(reloaded)
        for spawned in self.processes.spawned:
            spawned.reloaded(True, "changed: echo")
        result = self.successResultOf(reloaded)
        self.assertTrue(result.applied)
        self.assertIn("applied by the 2 workers", result.summary)
        self.assertEqual(len(self.processes.spawned), 2)
        self.assertEqual(service.config.services[0].limits.maxSessions, 5)
        self.assertEqual(service.served.config.services[0].limits.maxSessions, 5)

    def test_reloadRefusedByWorker(self) -> None:
        """
        A worker that cannot apply a reload (a file it cannot read) makes
        the reload fail, saying which worker and why, in the log.
        """
        text = ECHO.replace("tcp:7", "tcp:0")
        service = self.start(text)
        for spawned in self.processes.spawned:
            spawned.ready()
        self.write(text + "[services.echo.limits]\nmax_sessions = 5\n")
        reloaded = service.reload()
        self.processes.spawned[0].reloaded(True)
        self.processes.spawned[1].reloaded(False, "key.pem: permission denied")
        result = self.successResultOf(reloaded)
        self.assertFalse(result.applied)
        errors = [formatEvent(e) for e in self.events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("worker 1: key.pem: permission denied", errors[0])

    def test_reloadBadConfig(self) -> None:
        """
        An invalid file is rejected with one error; nothing is sent.
        """
        text = ECHO.replace("tcp:7", "tcp:0")
        service = self.start(text)
        self.write(text + "[services.bad]\ntype = 'nosuch'\n")
        self.assertFalse(self.successResultOf(service.reload()).applied)
        self.assertEqual(
            [len(s.transport.lines()) for s in self.processes.spawned], [1, 1]
        )
        errors = [e for e in self.events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)

    def test_reloadNewSockets(self) -> None:
        """
        A reload that adds a listener binds it, starts a new generation with
        the new set and, once it is ready, stops the old one; a socket no
        longer used is closed.
        """
        text = (
            '[services.echo]\ntype = "echo"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
            '[services.gone]\ntype = "discard"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        )
        service = self.start(text)
        for spawned in self.processes.spawned:
            spawned.ready()
        gone = service.served.held[("ephemeral", "gone/tcp:0:interface=127.0.0.1")]
        added = (
            '[services.echo]\ntype = "echo"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
            '[services.new]\ntype = "discard"\nlisten = ["udp:0:interface=127.0.0.1"]\n'
        )
        self.write(added)
        result: list[Any] = []
        service.reload().addCallback(lambda r: result.append(r.applied))
        self.assertEqual(len(self.processes.spawned), 4)
        new = self.processes.spawned[2:]
        self.assertEqual(
            sorted(new[0].transport.lines()[0]["sockets"]),
            ["echo/tcp:0:interface=127.0.0.1", "new/udp:0:interface=127.0.0.1"],
        )
        self.assertIsNotNone(gone.port)
        for spawned in new:
            spawned.ready()
        self.assertEqual(result, [True])
        for spawned in self.processes.spawned[:2]:
            self.assertEqual(spawned.transport.signals, [signal.SIGTERM])
        self.assertIsNone(gone.port)
        self.assertNotIn(
            ("ephemeral", "gone/tcp:0:interface=127.0.0.1"), service.served.held
        )
        self.assertEqual(len(service.served.held), 2)

    def test_reloadBindFails(self) -> None:
        """
        A new address that cannot be bound fails the reload before any
        worker is started: everyone keeps serving.
        """
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind((LOOPBACK, 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        text = ECHO.replace("tcp:7", "tcp:0")
        service = self.start(text)
        self.write(
            text
            + f'[services.d]\ntype = "discard"\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        )
        self.assertFalse(self.successResultOf(service.reload()).applied)
        self.assertEqual(len(self.processes.spawned), 2)
        self.assertEqual(len(service.served.held), 1)

    async def test_stop(self) -> None:
        """
        Stopping closes the main process's sockets and SIGTERMs the workers;
        it is over once they have exited.
        """
        service = self.start(ECHO.replace("tcp:7", "tcp:0"))
        [held] = service.served.held.values()
        done: list[Any] = []
        stopped = service.stopService().addCallback(done.append)
        self.assertIsNone(held.port)
        for spawned in self.processes.spawned:
            self.assertEqual(spawned.transport.signals, [signal.SIGTERM])
        self.assertEqual(done, [])
        for spawned in self.processes.spawned:
            spawned.end(0)
        await stopped
        self.assertEqual(len(done), 1)

    def execText(self, command: str = "/bin/cat", extra: str = "") -> str:
        """
        @param command: The exec service's program.
        @param extra: More TOML.
        @return: A configuration with an exec service C{x} and an echo
            service.
        """
        user = 'user = "nobody"\n' if os.geteuid() == 0 else ""
        return (
            f'[services.x]\ntype = "exec"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
            f'command = ["{command}"]\n{user}'
            '[services.echo]\ntype = "echo"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
            + extra
        )

    def test_execSpawnerHeld(self) -> None:
        """
        The main process forks an exec service's door keeper when it starts
        (as root, before the drop) and hands its door to worker 0 only, which
        serves the service, as one more inherited descriptor named in its
        start message; a restarted worker 0 is given it again.
        """
        service = self.start(self.execText())
        held = service.served.heldServices["x"]
        self.assertIsInstance(held, HeldSpawner)
        self.assertTrue(held.spawner.running)
        self.assertIn(held, list(service.served))
        door = held.fileno()
        first, second = self.processes.spawned
        [header] = first.transport.lines()
        number = header["held"]["x"]
        self.assertEqual(first.childFDs[number], door)
        self.assertNotIn(door, second.childFDs.values())
        self.assertEqual(second.transport.lines()[0]["held"], {})
        self.assertEqual(second.transport.lines()[0]["heldNames"], ["x"])
        first.ready()
        first.end(1)
        self.processes.advance(1)
        again = self.processes.spawned[2]
        self.assertEqual(again.transport.lines()[0]["index"], 0)
        self.assertEqual(again.childFDs[number], door)
        self.assertEqual(again.transport.lines()[0]["held"], {"x": number})

    def test_reloadKeepsHeld(self) -> None:
        """
        A reload in place that changes an exec service but not its program
        keeps its door keeper and names it again to worker 0; a generation
        swap hands the same door to the new worker 0.
        """
        service = self.start(self.execText())
        held = service.served.heldServices["x"]
        for spawned in self.processes.spawned:
            spawned.ready()
        self.write(self.execText(extra="[services.x.limits]\nmax_sessions = 5\n"))
        reloaded = service.reload()
        first = self.processes.spawned[0]
        number = first.transport.lines()[0]["held"]["x"]
        self.assertEqual(first.transport.lines()[1]["held"], {"x": number})
        for spawned in self.processes.spawned:
            spawned.reloaded(True, "changed: x")
        self.assertTrue(self.successResultOf(reloaded).applied)
        self.assertTrue(held.spawner.running)
        self.write(
            self.execText(
                extra='[services.more]\ntype = "discard"\n'
                'listen = ["tcp:0:interface=127.0.0.1"]\n'
            )
        )
        result: list[Any] = []
        service.reload().addCallback(lambda r: result.append(r.applied))
        newFirst = self.processes.spawned[2]
        header = newFirst.transport.lines()[0]
        self.assertEqual(newFirst.childFDs[header["held"]["x"]], held.fileno())
        for spawned in self.processes.spawned[2:]:
            spawned.ready()
        self.assertEqual(result, [True])
        self.assertIs(service.served.heldServices["x"], held)
        self.assertTrue(held.spawner.running)

    async def test_reloadChangedProgram(self) -> None:
        """
        A reload that changes an exec service's program (accepted only when
        netd is still root, or runs programs as its own user) stops its door
        keeper: worker 0 is no longer given it.
        """
        service = self.start(self.execText())
        held = service.served.heldServices["x"]
        for spawned in self.processes.spawned:
            spawned.ready()
        self.write(self.execText(command="/bin/sh"))
        reloaded = service.reload()
        first = self.processes.spawned[0]
        self.assertEqual(first.transport.lines()[1]["held"], {})
        self.assertEqual(first.transport.lines()[1]["heldNames"], [])
        for spawned in self.processes.spawned:
            spawned.reloaded(True, "changed: x")
        self.assertTrue(self.successResultOf(reloaded).applied)
        self.assertFalse(held.spawner.running)
        self.assertEqual(service.served.heldServices, {})
        self.assertNotIn(held, list(service.served))
        [line] = [
            formatEvent(e)
            for e in self.events
            if "its spawner, forked before root was dropped" in formatEvent(e)
        ]
        self.assertEqual(
            line,
            "x: its spawner, forked before root was dropped, is stopped: the "
            "service is changed",
        )
        await held.spawner.stop()
        self.assertIsNone(held.spawner.pid)

    async def test_removedServiceHeldStopped(self) -> None:
        """
        A reload that removes an exec service (here with a new generation)
        stops its door keeper once the new workers serve; until then the old
        worker 0 may still be restarted with it.
        """
        service = self.start(self.execText())
        held = service.served.heldServices["x"]
        for spawned in self.processes.spawned:
            spawned.ready()
        self.write(
            '[services.more]\ntype = "discard"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
        )
        result: list[Any] = []
        service.reload().addCallback(lambda r: result.append(r.applied))
        self.assertTrue(held.spawner.running)
        for spawned in self.processes.spawned[2:]:
            self.assertEqual(spawned.transport.lines()[0]["held"], {})
            spawned.ready()
        self.assertEqual(result, [True])
        self.assertFalse(held.spawner.running)
        self.assertEqual(service.served.heldServices, {})
        await held.spawner.stop()

    async def test_stopEndsHeld(self) -> None:
        """
        Stopping the main process ends the door keeper (its process is
        reaped).
        """
        service = self.start(self.execText())
        held = service.served.heldServices["x"]
        pid = held.spawner.pid
        self.assertIsNotNone(pid)
        stopped = service.stopService()
        for spawned in self.processes.spawned:
            spawned.end(0)
        await stopped
        self.assertFalse(held.spawner.running)
        self.assertIsNone(held.spawner.pid)
        with self.assertRaises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    def test_secondSIGTERM(self) -> None:
        """
        A SIGTERM while stopping is passed on to the workers (they close
        their sessions at once).
        """
        service = self.start(ECHO.replace("tcp:7", "tcp:0"))
        stopped = service.stopService()
        service._onSIGTERM()
        for spawned in self.processes.spawned:
            self.assertEqual(
                spawned.transport.signals, [signal.SIGTERM, signal.SIGTERM]
            )
            spawned.end(0)
        return stopped

    def test_accessLogCreated(self) -> None:
        """
        With an account to switch to, the access log files of http services
        are created before the switch and handed to the account with the
        other files, so that the unprivileged workers can open them.
        """
        from netd.config import loadConfig
        from netd.privileges import Account

        log = os.path.abspath(self.mktemp())
        self.write(
            '[services.www]\ntype = "http"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
            f'access_log_file = "{log}"\n'
        )
        account = Account(os.getuid(), os.getgid(), (os.getgid(),), "me")
        service = supervisorService(
            loadConfig(serviceTypes(), self.path),
            reactor,
            workers=2,
            supervisor=Supervisor(self.processes, ["python"], {}, self.events.append),
            account=account,
        )
        service._prepare()
        self.assertTrue(os.path.exists(log))
        self.assertIn(log, service.served.ownedFiles())
        self.assertIn(log, service._handedOver)


class SpawnFailureTests(SynchronousTestCase):
    """
    A worker that cannot even be started.
    """

    def test_retried(self) -> None:
        """
        An error from C{spawnProcess} (an interpreter the service user cannot
        run) is logged with the fix and retried with the back-off.
        """
        processes = ProcessReactor()
        failures = [PermissionError(13, "Permission denied")]
        spawn = processes.spawnProcess

        def failOnce(*args: Any, **kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            return spawn(*args, **kwargs)

        processes.spawnProcess = failOnce  # type: ignore[method-assign]
        events: list[dict[str, Any]] = []
        supervisor = Supervisor(processes, ["python"], {}, events.append)
        supervisor._log = Logger(observer=events.append)
        supervisor.start(makePlan(1))
        [error] = [formatEvent(e) for e in events if e["log_level"].name == "error"]
        self.assertIn("cannot start worker 0 (python: Permission denied", error)
        self.assertIn("retrying in 0.5s", error)
        self.assertEqual(processes.spawned, [])
        processes.advance(0.5)
        self.assertEqual(len(processes.spawned), 1)
