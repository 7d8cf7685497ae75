# -*- test-case-name: tests.test_exec -*-
"""
Tests for L{netd.services.exec}: settings and checks, the session logic on
a fake spawner and clock, and wait mode on a real UDP socket and a real
spawner.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import sys
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from netd.config import ConfigError, parseConfig
from netd.descriptions import parseListener
from netd.limits import Limits
from netd.listeners import DatagramListenerService
from netd.services import serviceTypes
from netd.services import exec as execModule
from netd.services.exec import (
    QUICK_FAILURES,
    THROTTLE_SECONDS,
    ExecProtocol,
    ExecSupervisor,
    HeldSpawner,
    _StderrReader,
    buildProgram,
    checkConfig,
    checkNotes,
    checkProgram,
    command,
    describeStatus,
    directory,
    environment,
    mode,
    tcpCounts,
)
from netd.sessions import SessionFactory
from netd.spawn.client import SpawnError
from netd.servicetype import setHeldDescriptors
from netd.spawn.helper import Program
from tests.support import makeContext

PYTHON_UDP_UPPER = (
    "import socket; s = socket.socket(fileno=0); d, a = s.recvfrom(100); "
    "s.sendto(d.upper(), a)"
)


def captureEvents(case: Any) -> list[LogEvent]:
    """
    Collect every log event for the rest of a test.

    @param case: The test case.
    @return: The list the events go to.
    """
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class ConverterTests(SynchronousTestCase):
    """
    The converters of the exec settings.
    """

    def test_command(self) -> None:
        """
        C{command} is an argv list with an absolute program; a shell line,
        an empty list, a non-string item and a relative program are refused
        with a message saying what to write.
        """
        self.assertEqual(command(["/bin/cat", "-u"]), ("/bin/cat", "-u"))
        with self.assertRaises(ValueError) as caught:
            command("/usr/bin/git daemon --inetd")
        self.assertIn("never a shell line), got a string", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            command([])
        self.assertIn("got an empty array", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            command(["/bin/cat", 3])
        self.assertIn("got an item that is an integer", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            command(["git", "daemon"])
        self.assertEqual(
            str(caught.exception),
            "the program 'git' must be an absolute path (there is no PATH search), "
            "e.g. /usr/bin/git",
        )

    def test_mode(self) -> None:
        """
        C{mode} is C{"nowait"} or C{"wait"}.
        """
        self.assertEqual((mode("wait"), mode("nowait")), ("wait", "nowait"))
        with self.assertRaises(ValueError) as caught:
            mode("stream")
        self.assertEqual(
            str(caught.exception), 'expected "nowait" or "wait", got \'stream\''
        )

    def test_environment(self) -> None:
        """
        C{env} is a table of strings with proper names.
        """
        self.assertEqual(environment({"LANG": "C"}), (("LANG", "C"),))
        for bad, message in (
            ({"A=B": "x"}, "'A=B' is not an environment variable name"),
            ({"A": 1}, "A: the value must be a string, got an integer"),
            (["A"], 'expected a table of strings such as { LANG = "C" }, got an array'),
        ):
            with self.assertRaises(ValueError) as caught:
                environment(bad)
            self.assertEqual(str(caught.exception), message)

    def test_directory(self) -> None:
        """
        C{directory} is an absolute path.
        """
        self.assertEqual(directory("/srv"), "/srv")
        with self.assertRaises(ValueError):
            directory("srv")


class CheckProgramTests(SynchronousTestCase):
    """
    L{checkProgram}: the program exists, may be run by the service's user,
    and nobody else can change it.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        os.chmod(self.directory, 0o755)
        self.program = os.path.join(self.directory, "program")
        with open(self.program, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(self.program, 0o755)
        self.uid = os.geteuid()

    def test_good(self) -> None:
        """
        A program mode 755 in directories writable only by their owner is
        fine; so is /bin/cat.
        """
        self.assertIsNone(checkProgram(self.program, self.uid, ()))
        self.assertIsNone(checkProgram("/bin/cat", 65534, (65534,)))

    def test_stickyRootDirectory(self) -> None:
        """
        A directory writable by others but sticky and owned by root (as
        C{/tmp}) above the program is accepted (nobody else can replace what
        is in it); without the sticky bit it is refused.
        """
        if os.geteuid() != 0:
            raise SkipTest("needs root to own the directory")
        sticky = os.path.join(self.directory, "sticky")
        inner = os.path.join(sticky, "inner")
        os.makedirs(inner)
        os.chmod(inner, 0o755)
        program = os.path.join(inner, "program")
        os.rename(self.program, program)
        os.chmod(sticky, 0o1777)
        self.assertIsNone(checkProgram(program, self.uid, ()))
        os.chmod(sticky, 0o777)
        self.assertEqual(
            checkProgram(program, self.uid, ()),
            f"{sticky} is writable by its group or by others (mode drwxrwxrwx): "
            "anyone could change what runs",
        )

    def test_missing(self) -> None:
        """
        A program that does not exist is named with the reason.
        """
        self.assertEqual(
            checkProgram("/nonexistent", self.uid, ()),
            "/nonexistent: No such file or directory",
        )

    def test_notExecutable(self) -> None:
        """
        A program the user may not execute is refused.
        """
        os.chmod(self.program, 0o744)
        self.assertEqual(
            checkProgram(self.program, 65534, (65534,)),
            f"{self.program} is not executable by uid 65534",
        )

    def test_writableByOthers(self) -> None:
        """
        A program, or a directory above it, writable by its group or others
        is refused.
        """
        os.chmod(self.program, 0o775)
        self.assertIn(
            "is writable by its group or by others",
            str(checkProgram(self.program, self.uid, ())),
        )
        os.chmod(self.program, 0o755)
        os.chmod(self.directory, 0o777)
        self.addCleanup(os.chmod, self.directory, 0o755)
        self.assertEqual(
            checkProgram(self.program, self.uid, ()),
            f"{self.directory} is writable by its group or by others (mode "
            "drwxrwxrwx): anyone could change what runs",
        )

    def test_ownedBySomeoneElse(self) -> None:
        """
        A program owned by a third user is refused.
        """
        if os.geteuid() != 0:
            raise self.skipTest("changing a file's owner needs root")
        os.chown(self.program, 12345, 0)
        self.assertEqual(
            checkProgram(self.program, 65534, (65534,)),
            f"{self.program} belongs to uid 12345: the program and the directories "
            "above it must belong to root or to uid 65534",
        )

    def test_notRegular(self) -> None:
        """
        A directory is not a program.
        """
        self.assertEqual(
            checkProgram(self.directory, self.uid, ()),
            f"{self.directory} is not a regular file",
        )


def execConfig(body: str, listen: str = '"tcp:7000:interface=127.0.0.1"') -> str:
    """
    @param body: Lines of an exec service.
    @param listen: Its listeners.
    @return: A whole configuration.
    """
    return f'[services.x]\ntype = "exec"\nlisten = [{listen}]\n{body}'


class CheckConfigTests(SynchronousTestCase):
    """
    The exec service's configuration checks.
    """

    def problems(self, text: str) -> list[str]:
        """
        @param text: A configuration.
        @return: Its problems' lines (none if valid).
        """
        try:
            parseConfig(serviceTypes(), text, "netd.toml")
        except ConfigError as e:
            return e.lines()
        return []

    def userLine(self) -> str:
        """
        @return: A C{user = } line valid for whoever runs the tests.
        """
        if os.geteuid() == 0:
            return 'user = "nobody"\n'
        return f'user = "{pwd.getpwuid(os.geteuid()).pw_name}"\n'

    def test_valid(self) -> None:
        """
        A service with a program and a user is valid, in each mode.
        """
        self.assertEqual(
            self.problems(execConfig('command = ["/bin/cat"]\n' + self.userLine())), []
        )
        self.assertEqual(
            self.problems(
                execConfig(
                    'command = ["/bin/cat"]\n' + self.userLine(),
                    '"udp:7000:interface=127.0.0.1"',
                )
            ),
            [],
        )

    def test_noCommand(self) -> None:
        """
        C{command} is required.
        """
        self.assertEqual(
            self.problems(execConfig(self.userLine())),
            [
                "netd.toml: services.x.command: an exec service needs command = "
                '["/path/to/program", "arg", ...]'
            ],
        )

    def test_modeAndListeners(self) -> None:
        """
        C{wait} with a stream listener, C{nowait} with a udp one and an ssl
        listener are refused.
        """
        lines = self.problems(
            execConfig('command = ["/bin/cat"]\nmode = "wait"\n' + self.userLine())
        )
        self.assertEqual(len(lines), 1)
        self.assertIn('mode = "wait" serves udp listeners only', lines[0])
        lines = self.problems(
            execConfig(
                'command = ["/bin/cat"]\nmode = "nowait"\n' + self.userLine(),
                '"udp:7000"',
            )
        )
        self.assertIn('a udp listener needs mode = "wait"', lines[0])

    def test_programChecked(self) -> None:
        """
        The program is checked at validation.
        """
        lines = self.problems(
            execConfig('command = ["/nonexistent/x"]\n' + self.userLine())
        )
        self.assertEqual(
            lines,
            [
                "netd.toml: services.x.command: /nonexistent/x: No such file or directory"
            ],
        )

    def test_rootNeedsUser(self) -> None:
        """
        When netd runs as root, C{user} is required, and C{user = "root"}
        needs C{allow_root}.
        """
        if os.geteuid() != 0:
            raise self.skipTest("the rule applies when netd runs as root")
        lines = self.problems(execConfig('command = ["/bin/cat"]\n'))
        self.assertIn("services.x.user: netd runs as root: give the user", lines[0])
        lines = self.problems(execConfig('command = ["/bin/cat"]\nuser = "root"\n'))
        self.assertIn("the program would run as root", lines[0])
        self.assertEqual(
            self.problems(
                execConfig('command = ["/bin/cat"]\nuser = "root"\nallow_root = true\n')
            ),
            [],
        )

    def test_unknownUser(self) -> None:
        """
        A user that does not exist is named.
        """
        lines = self.problems(
            execConfig('command = ["/bin/cat"]\nuser = "no-such-user-here"\n')
        )
        self.assertEqual(len(lines), 1)
        self.assertIn("services.x.user: no such user or group", lines[0])

    def test_checkNotes(self) -> None:
        """
        C{--check} says who the programs run as and whether a spawner is
        forked as root.
        """
        config = parseConfig(
            serviceTypes(),
            execConfig('command = ["/bin/cat"]\n' + self.userLine()),
            "netd.toml",
        )
        [note] = checkNotes(config.services[0])
        if os.geteuid() == 0:
            self.assertIn("their spawner is forked before netd drops root", note)
            self.assertIn("switches to nobody at once (nothing stays root)", note)
        else:
            self.assertIn("no privileged spawner is needed", note)


class WorkersCheckTests(SynchronousTestCase):
    """
    With workers, after the drop: an exec service whose programs run as
    another user is valid only while the process still has the spawner
    forked for them before the drop; C{--check} says where it comes from.
    """

    text = execConfig('command = ["/bin/cat"]\nuser = "daemon"\n')

    def service(self, text: str | None = None) -> Any:
        """
        @param text: A configuration (L{text} if L{None}), valid for root.
        @return: Its exec service's configuration.
        """
        if os.geteuid() != 0:
            raise SkipTest("the configuration names another user: needs root")
        return parseConfig(serviceTypes(), text or self.text, "netd.toml").services[0]

    def afterDrop(self, service: Any) -> list[str]:
        """
        @param service: An exec service's configuration.
        @return: Its problems, checked as if netd ran as nobody.
        """
        nobody = pwd.getpwnam("nobody").pw_uid
        self.patch(execModule.os, "geteuid", lambda: nobody)
        return [problem.message for problem in checkConfig(service, {})]

    def test_refusedWithoutSpawner(self) -> None:
        """
        No spawner forked as root: refused, as in a single netd.
        """
        self.addCleanup(setHeldDescriptors, setHeldDescriptors({}))
        [problem] = self.afterDrop(self.service())
        self.assertIn("netd does not run as root", problem)

    def test_workerWithHeldSpawner(self) -> None:
        """
        In a worker, a service the main process holds a spawner for (served
        by this worker or another one) is valid.
        """
        service = self.service()
        self.addCleanup(setHeldDescriptors, setHeldDescriptors({}, ["x"]))
        self.assertEqual(self.afterDrop(service), [])
        setHeldDescriptors({"x": 9})
        self.assertEqual(self.afterDrop(service), [])

    def test_mainProcessHeldSpawner(self) -> None:
        """
        In the main process, a service whose door keeper was forked as root
        for the same program is valid; a new or changed program is refused,
        saying that a restart applies it.
        """
        service = self.service()
        changed = self.service(self.text.replace("/bin/cat", "/bin/sh"))
        self.addCleanup(setHeldDescriptors, setHeldDescriptors({}))
        self.patch(
            execModule,
            "_forkedAsRoot",
            {"x": buildProgram("x", service.settings)},
        )
        self.assertEqual(self.afterDrop(service), [])
        [problem] = self.afterDrop(changed)
        self.assertEqual(
            problem,
            "netd dropped root after it started, and a spawner that runs programs "
            "as uid 1 can only be forked before (the service is new or its "
            "programs changed): restart netd to apply it",
        )

    def test_checkNotes(self) -> None:
        """
        With workers, C{--check} says the spawner is forked by the main
        process and handed to worker 0.
        """
        service = self.service()
        [note] = checkNotes(service, 2)
        self.assertEqual(
            note,
            "programs run as daemon (uid 1, gid 1, groups 1): their spawner is "
            "forked by the main process before netd drops root and handed to "
            "worker 0, and switches to daemon at once (nothing stays root)",
        )
        [single] = checkNotes(service, 1)
        self.assertNotIn("worker 0", single)


class HeldSpawnerTests(TestCase):
    """
    L{HeldSpawner}, the main process's door keeper of an exec service.
    """

    async def test_fits(self) -> None:
        """
        It fits a reloaded service with the same programs (other settings
        may change), not one with another program, nor once stopped; as
        root it is remembered as forked as root until it stops.
        """
        user = 'user = "nobody"\n' if os.geteuid() == 0 else ""
        text = execConfig('command = ["/bin/cat"]\n' + user)
        service = parseConfig(serviceTypes(), text, "netd.toml").services[0]
        held = HeldSpawner(service, reactor)
        held.startService()
        self.assertTrue(held.spawner.running)
        self.assertGreaterEqual(held.fileno(), 0)
        self.assertEqual("x" in execModule._forkedAsRoot, os.geteuid() == 0)
        self.assertTrue(held.fits(service))
        limits = parseConfig(
            serviceTypes(),
            text + "[services.x.limits]\nmax_sessions = 2\n",
            "netd.toml",
        ).services[0]
        self.assertTrue(held.fits(limits))
        other = parseConfig(
            serviceTypes(), text.replace("/bin/cat", "/bin/sh"), "netd.toml"
        ).services[0]
        self.assertFalse(held.fits(other))
        await held.stopService()
        self.assertFalse(held.fits(service))
        self.assertEqual(held.fileno(), -1)
        self.assertNotIn("x", execModule._forkedAsRoot)


class DescribeTests(SynchronousTestCase):
    """
    L{describeStatus} and L{tcpCounts}.
    """

    def test_status(self) -> None:
        """
        An exit status and a signal are told apart.
        """
        self.assertEqual(
            describeStatus(3 << 8),
            ("exited with status 3", {"exitStatus": 3, "signal": None}),
        )
        self.assertEqual(
            describeStatus(signal.SIGKILL),
            ("killed by SIGKILL", {"exitStatus": None, "signal": "SIGKILL"}),
        )

    def test_tcpCounts(self) -> None:
        """
        The kernel's byte counts of a TCP socket are read, the FIN not
        counted; a UNIX socket has none.
        """
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(10)
        self.addCleanup(server.close)
        client = socket.create_connection(server.getsockname())
        self.addCleanup(client.close)
        accepted, _ = server.accept()
        self.addCleanup(accepted.close)
        client.sendall(b"x" * 1000)
        client.shutdown(socket.SHUT_WR)
        self.assertEqual(accepted.recv(2000, socket.MSG_WAITALL), b"x" * 1000)
        accepted.sendall(b"y" * 10)
        self.assertEqual(client.recv(10, socket.MSG_WAITALL), b"y" * 10)
        self.assertEqual(tcpCounts(accepted), (1000, 10))
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertIsNone(tcpCounts(a))


class FakeSpawner:
    """
    Stands in for L{netd.spawn.client.Spawner}: spawns resolve when the
    test says.
    """

    running = True

    def __init__(self) -> None:
        self.program = Program(argv=("/bin/true",))
        self.spawns: list[tuple[int, dict[str, str], defer.Deferred[int]]] = []
        self.exits: dict[int, Any] = {}
        self.kills: list[tuple[int, int]] = []
        self.stopped = False

    def start(self) -> None:
        """
        Nothing to start: the test plays the spawner's side.
        """

    def spawn(self, stdio: int, stderr: int, env: Any) -> defer.Deferred[int]:
        d: defer.Deferred[int] = defer.Deferred()
        self.spawns.append((stdio, dict(env), d))
        return d

    def onExit(self, pid: int, callback: Any) -> None:
        self.exits[pid] = callback

    def kill(self, pid: int, number: int) -> None:
        self.kills.append((pid, number))

    def stop(self) -> defer.Deferred[None]:
        self.stopped = True
        return defer.succeed(None)


class SocketTransport(StringTransport):
    """
    A L{StringTransport} with the socket an exec protocol hands over.
    """

    def __init__(self, host: Any, peer: Any) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self.handle, self.other = socket.socketpair()
        self.handle.setblocking(False)
        self.reading = True
        self.aborted = False

    def getHandle(self) -> socket.socket:
        return self.handle

    def stopReading(self) -> None:
        self.reading = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class ExecProtocolTests(SynchronousTestCase):
    """
    L{ExecProtocol} inside a L{netd.sessions.Session}, on a fake spawner and
    a fake clock.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.context = makeContext(
            "exec",
            limits=Limits(maxDuration=30, idleTimeout=0),
            settings={"command": ("/bin/true",), "kill_grace": 2.0},
            reactor=self.reactor,
        )
        self.spawner = FakeSpawner()
        self.supervisor = ExecSupervisor(self.context, self.spawner)  # type: ignore[arg-type]
        from netd.services.exec import ExecFactory

        self.sessions = SessionFactory(
            ExecFactory(self.supervisor), self.context, "tcp:7000"
        )
        self.events = captureEvents(self)

    def connect(self) -> tuple[Any, SocketTransport]:
        """
        @return: A connected session and its transport.
        """
        from twisted.internet.address import IPv4Address

        session = self.sessions.buildProtocol(IPv4Address("TCP", "192.0.2.7", 5000))
        transport = SocketTransport(
            IPv4Address("TCP", "127.0.0.1", 7000), IPv4Address("TCP", "192.0.2.7", 5000)
        )
        self.addCleanup(transport.handle.close)
        self.addCleanup(transport.other.close)
        session.makeConnection(transport)
        return session, transport

    def sessionEvents(self) -> list[LogEvent]:
        return [e for e in self.events if "session from" in e.get("log_format", "")]

    def test_handsOverSocket(self) -> None:
        """
        The connection's socket goes to the program, blocking, with the
        connection's variables; netd stops reading it and the stderr socket
        is adopted.
        """
        session, transport = self.connect()
        [(fd, env, d)] = self.spawner.spawns
        self.assertEqual(fd, transport.handle.fileno())
        self.assertTrue(transport.handle.getblocking())
        self.assertFalse(transport.reading)
        self.assertEqual(
            env,
            {
                "REMOTE_ADDR": "192.0.2.7",
                "REMOTE_PORT": "5000",
                "LOCAL_ADDR": "127.0.0.1",
                "LOCAL_PORT": "7000",
            },
        )
        self.assertEqual(len(self.reactor.adoptedStreamConnections), 1)

    def test_exitEndsSession(self) -> None:
        """
        When the program exits the connection is closed and the session
        event gains its pid, status and run time.
        """
        session, transport = self.connect()
        self.spawner.spawns[0][2].callback(4242)
        self.reactor.advance(1.5)
        self.spawner.exits[4242](1 << 8)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.handle.getblocking())
        session.connectionLost(Failure(Exception("closed")))
        [event] = self.sessionEvents()
        self.assertEqual(
            (event["pid"], event["exitStatus"], event["signal"], event["runTime"]),
            (4242, 1, None, 1.5),
        )
        self.assertEqual(event["reason"], "pid 4242 exited with status 1 after 1.500s")
        self.assertEqual(self.context.policy.active, 0)

    def test_maxDuration(self) -> None:
        """
        At C{max_duration} the program gets SIGTERM, then SIGKILL after
        C{kill_grace}; the session stays open (and counted) until it exits.
        """
        session, transport = self.connect()
        self.spawner.spawns[0][2].callback(99)
        self.reactor.advance(30)
        self.assertEqual(self.spawner.kills, [(99, signal.SIGTERM)])
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.context.policy.active, 1)
        self.reactor.advance(2)
        self.assertEqual(
            self.spawner.kills, [(99, signal.SIGTERM), (99, signal.SIGKILL)]
        )
        self.spawner.exits[99](signal.SIGKILL)
        self.assertTrue(transport.disconnecting)
        session.connectionLost(Failure(Exception("closed")))
        [event] = self.sessionEvents()
        self.assertEqual(
            event["reason"],
            "maximum session duration reached; pid 99 killed by SIGKILL after 32.000s",
        )

    def test_exitBeforeKill(self) -> None:
        """
        A program that exits after SIGTERM gets no SIGKILL.
        """
        session, transport = self.connect()
        self.spawner.spawns[0][2].callback(99)
        self.reactor.advance(30)
        self.spawner.exits[99](signal.SIGTERM)
        self.reactor.advance(10)
        self.assertEqual(self.spawner.kills, [(99, signal.SIGTERM)])

    def test_drainBeforeStarted(self) -> None:
        """
        A session cut before its program is started ends the program as
        soon as it starts.
        """
        from netd.drain import abortSession

        session, transport = self.connect()
        abortSession(session)
        self.assertEqual(self.spawner.kills, [])
        self.spawner.spawns[0][2].callback(7)
        self.assertEqual(self.spawner.kills, [(7, signal.SIGTERM)])

    def test_spawnerGone(self) -> None:
        """
        If the spawner is gone no exit will be reported: a cut session
        closes at once instead of waiting for one.
        """
        session, transport = self.connect()
        self.spawner.spawns[0][2].callback(99)
        self.spawner.running = False
        self.reactor.advance(30)
        self.assertEqual(self.spawner.kills, [])
        self.assertTrue(transport.disconnecting)

    def test_spawnFails(self) -> None:
        """
        A program that cannot be started ends the session with the reason,
        logged as an error.
        """
        session, transport = self.connect()
        self.spawner.spawns[0][2].errback(SpawnError("cannot execute /x: No such file"))
        self.assertTrue(transport.disconnecting)
        session.connectionLost(Failure(Exception("closed")))
        [event] = self.sessionEvents()
        self.assertEqual(
            event["reason"], "cannot start the program: cannot execute /x: No such file"
        )
        errors = [e for e in self.events if "cannot start" in e.get("log_format", "")]
        self.assertEqual(len(errors), 1)

    def test_throttle(self) -> None:
        """
        After ten quick failures in a row new connections are refused for a
        while, and that is logged once.
        """
        for pid in range(QUICK_FAILURES + 3):
            session, transport = self.connect()
            if not self.spawner.spawns:
                break
            _, _, d = self.spawner.spawns.pop()
            d.callback(1000 + pid)
            self.spawner.exits[1000 + pid](1 << 8)
            session.connectionLost(Failure(Exception("closed")))
        self.assertEqual(pid, QUICK_FAILURES)
        self.assertEqual(self.spawner.spawns, [])
        self.assertTrue(transport.disconnecting)
        session.connectionLost(Failure(Exception("closed")))
        self.assertIn("throttled", self.sessionEvents()[-1]["reason"])
        throttles = [
            e for e in self.events if "times in a row" in e.get("log_format", "")
        ]
        self.assertEqual(len(throttles), 1)
        self.reactor.advance(THROTTLE_SECONDS)
        self.connect()
        self.assertEqual(len(self.spawner.spawns), 1)

    def test_successResetsCount(self) -> None:
        """
        A program that runs fine resets the count of quick failures.
        """
        for pid in range(QUICK_FAILURES * 2):
            session, transport = self.connect()
            _, _, d = self.spawner.spawns.pop()
            d.callback(pid)
            self.spawner.exits[pid](0 if pid % 5 == 0 else 1 << 8)
            session.connectionLost(Failure(Exception("closed")))
        self.assertFalse(self.supervisor.throttled())

    def test_stopWaits(self) -> None:
        """
        Stopping the supervisor waits for its programs up to the drain
        timeout, then ends those of wait listeners (a session's program is
        ended by the session's drain), then stops the spawner.
        """
        self.context.drainTimeout = 10
        session, transport = self.connect()
        self.spawner.spawns[0][2].callback(5)
        waiting = self.supervisor.run(0, {})
        self.spawner.spawns[1][2].callback(6)
        self.successResultOf(waiting).drainedBySupervisor = True
        d = self.supervisor.stopService()
        self.assertNoResult(d)
        self.reactor.advance(self.context.drainTimeout)
        self.assertEqual(self.spawner.kills, [(6, signal.SIGTERM)])
        self.spawner.exits[6](signal.SIGTERM)
        self.assertFalse(self.spawner.stopped)
        self.assertNoResult(d)
        self.spawner.exits[5](signal.SIGTERM)
        self.successResultOf(d)
        self.assertTrue(self.spawner.stopped)


class SupervisorStopTests(SynchronousTestCase):
    """
    L{ExecSupervisor.stopService}.
    """

    def test_waitsForTheSpawner(self) -> None:
        """
        With no program running, what C{stopService} returns fires only once
        the spawner is stopped and reaped (it returned L{None} before, so
        netd's stop did not wait for the reap).
        """
        spawner = FakeSpawner()
        reaped: defer.Deferred[None] = defer.Deferred()
        spawner.stop = lambda: reaped  # type: ignore[method-assign]
        context = makeContext("exec", settings={"command": ("/bin/true",)})
        supervisor = ExecSupervisor(context, spawner)  # type: ignore[arg-type]
        supervisor.startService()
        stopping = supervisor.stopService()
        self.assertIsInstance(stopping, defer.Deferred)
        self.assertNoResult(stopping)
        reaped.callback(None)
        self.assertIsNone(self.successResultOf(stopping))


class StderrTests(SynchronousTestCase):
    """
    L{_StderrReader}: one event per line, bounded.
    """

    def setUp(self) -> None:
        context = makeContext(
            "exec", settings={"command": ("/bin/true",), "stderr_lines": 3}
        )
        self.reader = _StderrReader(ExecSupervisor(context, FakeSpawner()))  # type: ignore[arg-type]
        self.reader.makeConnection(StringTransport())
        self.events = captureEvents(self)

    def lines(self) -> list[str]:
        return [e["line"] for e in self.events if "line" in e]

    def test_linesAfterPid(self) -> None:
        """
        Lines that arrive before the pid is known are logged with it.
        """
        self.reader.dataReceived(b"one\ntw")
        self.assertEqual(self.lines(), [])
        self.reader.started(12)
        self.reader.dataReceived(b"o\r\n")
        self.assertEqual(self.lines(), ["one", "two"])
        self.assertEqual({e["pid"] for e in self.events}, {12})

    def test_bounded(self) -> None:
        """
        A long line is cut at 1,024 bytes (the rest of it dropped); after
        C{stderr_lines} lines the rest is discarded, said once; a last line
        without a newline is logged at the end.
        """
        self.reader.started(12)
        self.reader.dataReceived(b"x" * 3000)
        self.reader.dataReceived(b"x" * 3000 + b"\nb\n")
        self.reader.dataReceived(b"c")
        self.reader.connectionLost()
        self.assertEqual(self.lines(), ["x" * 1024, "b", "c"])
        self.reader.dataReceived(b"more\nmore\n")
        warnings = [e for e in self.events if "discarded" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(len(self.lines()), 3)


class WaitModeTests(TestCase):
    """
    C{mode = "wait"} on a real UDP socket with a real spawner.
    """

    timeout = 30

    async def test_programGetsDatagrams(self) -> None:
        """
        The program receives the datagram that woke netd (it was peeked, not
        read) and answers on the socket; after it exits netd takes the
        socket back and the next datagram starts another program.
        """
        if not os.access("/usr/bin/python3", os.X_OK):
            raise self.skipTest("/usr/bin/python3 is not installed (package python3)")
        # The system's Python: the service's user may not reach a venv's.
        program = ["/usr/bin/python3", "-c", PYTHON_UDP_UPPER]
        settings = {"command": tuple(program)}
        if os.geteuid() == 0:
            settings["user"] = "nobody"
        context = makeContext(
            "exec",
            settings=settings,
            reactor=reactor,
        )
        from netd.services.exec import buildDatagramProtocol, supervisorFor

        supervisor = supervisorFor(context)
        supervisor.startService()
        self.addCleanup(supervisor.stopService)
        listener = parseListener("udp:0:interface=127.0.0.1")
        service = DatagramListenerService(
            context, listener, buildDatagramProtocol(context, listener)
        )
        service.startService()
        self.addCleanup(service.stopService)
        address = service.port.getHost()
        events = captureEvents(self)

        from twisted.internet.threads import deferToThread

        def ask(data: bytes) -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(10)
                client.sendto(data, (address.host, address.port))
                return client.recv(100)

        self.assertEqual(await deferToThread(ask, b"hello"), b"HELLO")
        for _ in range(500):
            if any("program for" in e.get("log_format", "") for e in events):
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(await deferToThread(ask, b"again"), b"AGAIN")
        ended = [e for e in events if "program for" in e.get("log_format", "")]
        self.assertEqual(ended[0]["exitStatus"], 0)
        self.assertEqual(context.counters.datagramsDropped, 0)
