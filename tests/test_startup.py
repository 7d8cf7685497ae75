# -*- test-case-name: tests.test_startup -*-
"""
Tests for L{netd.startup}: start-up failures under twistd, daemonized or
not, are one line and netd's exit status; Twisted's own port lines stay out
of the log.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
from typing import Any

from twisted.logger import LogPublisher, PredicateResult
from twisted.python import log as legacyLog
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.startup import (
    EX_CANTCREAT,
    EX_OSERR,
    StartupReport,
    _startApplication,
    _waitForStart,
    describeFailure,
    guardRunner,
    quiet,
    twistedNoise,
    unguardRunner,
)
from tests.test_endtoend import LOOPBACK, Daemon, freePorts


class FakeLogger:
    """
    twistd's logger, as L{_startApplication} sees it.
    """

    _observer = None


class FakeRunner:
    """
    The part of twistd's C{UnixApplicationRunner} that L{netd.startup} uses.

    @ivar removed: The pidfiles removed.
    """

    def __init__(self, statusPipe: int | None, pidfile: str = "netd.pid") -> None:
        self.config: dict[str, Any] = {"statusPipe": statusPipe, "pidfile": pidfile}
        self.logger = FakeLogger()
        self.removed: list[str] = []

    def removePID(self, pidfile: str) -> None:
        """
        @param pidfile: The pidfile to remove.
        """
        self.removed.append(pidfile)


class RunnerClass:
    """
    A stand-in for twistd's runner class, for L{guardRunner}.
    """

    def startApplication(self, application: Any) -> None:
        """
        @param application: Ignored.
        """

    def _waitForStart(self, readPipe: int) -> int:
        """
        @param readPipe: Ignored.
        @return: 0.
        """
        return 0


class StatusPipeTests(SynchronousTestCase):
    """
    Both ends of twistd's status pipe, in netd's format.
    """

    def setUp(self) -> None:
        self.read, self.write = os.pipe()
        self.addCleanup(self._close)
        self.pidfile = os.path.abspath(self.mktemp())
        with open(self.pidfile, "w") as f:
            f.write("1")

    def _close(self) -> None:
        for fd in (self.read, self.write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def start(self, failure: BaseException, report: StartupReport) -> FakeRunner:
        """
        Run L{_startApplication} around a start that fails.

        @param failure: What the start raises.
        @param report: What netd wrote.
        @return: The runner.
        """
        runner = FakeRunner(self.write, self.pidfile)

        def startApplication(self: Any, application: Any) -> None:
            raise failure

        self.patch(
            sys.modules["netd.startup"],
            "_original",
            {"startApplication": startApplication},
        )
        self.assertRaises(SystemExit, _startApplication, runner, None, report)
        return runner

    def waitForStart(self) -> tuple[int, str]:
        """
        Run L{_waitForStart} on the pipe, capturing what it prints.

        @return: The exit status and the printed text.
        """
        stderr = io.StringIO()
        self.patch(sys, "__stderr__", stderr)
        return _waitForStart(None, self.read), stderr.getvalue()

    def test_netdLine(self) -> None:
        """
        netd's own line (written into the L{StartupReport}) and its exit
        status reach the starting process as they are: no bytes repr, no
        truncation; the pidfile is removed.
        """
        report = StartupReport()
        line = "netd: echo cannot listen on tcp:7: address already in use " + "x" * 200
        report.write(line + "\n")
        runner = self.start(SystemExit(EX_OSERR), report)
        self.assertEqual(runner.removed, [self.pidfile])
        self.assertEqual(self.waitForStart(), (EX_OSERR, line + "\n"))

    def test_osError(self) -> None:
        """
        An L{OSError} twistd raises (its pidfile) is one line naming the file
        and the cause, exit status 73; no traceback is logged.
        """
        os.unlink(self.pidfile)
        error = PermissionError(13, "Permission denied", self.pidfile)
        runner = self.start(error, StartupReport())
        self.assertEqual(runner.removed, [], "a pidfile never written is left alone")
        self.assertEqual(
            self.waitForStart(),
            (
                EX_CANTCREAT,
                f"netd: cannot write the pidfile {self.pidfile}: Permission denied\n",
            ),
        )

    def test_twistdFormat(self) -> None:
        """
        A message in twistd's own format is printed decoded, with exit 1; a
        C{0} is a successful start.
        """
        os.write(self.write, b"1 ValueError: bad")
        self.assertEqual(
            self.waitForStart(),
            (1, "netd: start-up failed: ValueError: bad (see the log)\n"),
        )
        os.write(self.write, b"0")
        self.assertEqual(self.waitForStart(), (0, ""))

    def test_describeFailure(self) -> None:
        """
        Other exceptions are a bug in netd: exit 70, saying the log has the
        traceback.
        """
        self.assertEqual(
            describeFailure(RuntimeError("boom"), None),
            (
                "netd: cannot start: RuntimeError: boom (a bug in netd: the log "
                "has the traceback)",
                70,
            ),
        )
        self.assertEqual(
            describeFailure(FileNotFoundError(2, "No such file", "/x"), "p"),
            ("netd: cannot start: /x: No such file", EX_OSERR),
        )


class GuardRunnerTests(SynchronousTestCase):
    """
    L{guardRunner} wraps the runner class and L{unguardRunner} undoes it.
    """

    def test_guardAndUndo(self) -> None:
        """
        Both methods are replaced, once, and put back.
        """
        original = RunnerClass.__dict__["startApplication"]
        guardRunner(StartupReport(), RunnerClass)
        guardRunner(StartupReport(), RunnerClass)
        self.assertIsNot(RunnerClass.__dict__["startApplication"], original)
        self.assertIs(
            sys.modules["netd.startup"]._original["startApplication"], original
        )
        unguardRunner()
        self.assertIs(RunnerClass.__dict__["startApplication"], original)


class NoiseTests(SynchronousTestCase):
    """
    Twisted's port lines are filtered.
    """

    def test_predicate(self) -> None:
        """
        The lines Twisted's TCP, UDP and UNIX ports log are dropped; netd's
        own events and other legacy lines pass.
        """
        for line in (
            "Factory (SessionFactory) starting on 10007",
            "DatagramProtocol starting on 10007",
            "(TCP Port 10007 Closed)",
            "(UDP Port 10007 Closed)",
            "(UNIX Port /run/netd.sock Closed)",
        ):
            event = {"log_namespace": "log_legacy", "message": (line,)}
            self.assertEqual(twistedNoise(event), PredicateResult.no, line)
        for event in (
            {"log_namespace": "log_legacy", "message": ("Server Shut Down.",)},
            {"log_namespace": "netd.daemon", "log_format": "Factory starting on 7"},
        ):
            self.assertEqual(twistedNoise(event), PredicateResult.maybe)

    def test_legacyLogThroughFilter(self) -> None:
        """
        A legacy C{log.msg} of such a line, as C{tcp.Port} emits it, does not
        reach an observer behind L{quiet}; other lines do.
        """
        events: list[dict[str, Any]] = []
        publisher = LogPublisher()
        publisher.addObserver(quiet(events.append))
        legacy = legacyLog.LogPublisher(publisher, publisher)
        legacy.msg("Factory starting on 10007")
        legacy.msg("something else")
        self.assertEqual([e["message"] for e in events], [("something else",)])


class DaemonizedStartupTests(TestCase):
    """
    The issue's case: C{twistd netd} without C{-n}, on a port another process
    holds.
    """

    timeout = 60

    async def test_portTaken(self) -> None:
        """
        The starting process prints netd's one line (not a bytes repr, not
        cut off) and exits 71; C{twistd.log} has the line and no traceback;
        the pidfile is gone.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        (port,) = freePorts(1)
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind((LOOPBACK, port))
        holder.listen()
        config = os.path.join(directory, "netd.toml")
        with open(config, "w") as f:
            f.write(
                f'[services.echo]\ntype = "echo"\n'
                f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
            )
        daemon = Daemon(["netd", "--config", config], directory)
        self.addCleanup(daemon.kill)
        daemon.start()
        code = await daemon.wait(30)
        expected = (
            f"netd: echo cannot listen on tcp:{port}:interface=127.0.0.1: "
            "address already in use"
        )
        self.assertEqual(code, EX_OSERR, daemon.stderr)
        self.assertEqual(len(daemon.stderr.splitlines()), 1, daemon.stderr)
        self.assertTrue(daemon.stderr.startswith(expected), daemon.stderr)
        self.assertNotIn("b'", daemon.stderr)
        with open(os.path.join(directory, "twistd.log")) as f:
            logged = f.read()
        self.assertIn(expected[len("netd: ") :], logged)
        self.assertNotIn("Traceback", logged)
        self.assertFalse(os.path.exists(os.path.join(directory, "twistd.pid")))

    async def test_noTwistedPortLines(self) -> None:
        """
        A foreground netd's log has its own "listening" lines and none of
        Twisted's C{... starting on N} and C{(TCP Port N Closed)}.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        (port,) = freePorts(1)
        config = os.path.join(directory, "netd.toml")
        with open(config, "w") as f:
            f.write(
                f'[services.echo]\ntype = "echo"\nlisten = '
                f'["tcp:{port}:interface=127.0.0.1", "udp:{port}:interface=127.0.0.1"]\n'
            )
        daemon = Daemon(["-n", "--pidfile=", "netd", "--config", config], directory)
        self.addCleanup(daemon.kill)
        daemon.start()
        await daemon.waitForOutput(f"echo listening on udp:127.0.0.1:{port}")
        self.assertEqual(await daemon.stop(), 0, daemon.stdout + daemon.stderr)
        self.assertIn("echo listening on tcp", daemon.stdout)
        self.assertNotIn(" starting on ", daemon.stdout)
        self.assertNotRegex(daemon.stdout, r"\((TCP|UDP) Port \d+ Closed\)")
