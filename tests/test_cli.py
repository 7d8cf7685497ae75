# -*- test-case-name: tests.test_cli -*-
"""
Tests for L{netd.cli}: the C{netd} command, against a real netd.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd import __version__
from netd.cli import main
from tests.test_endtoend import REPO, Daemon, freePorts

NETD = [sys.executable, "-m", "netd.cli"]


def netd(*args: str) -> tuple[int, str, str]:
    """
    Run the C{netd} command (blocking: run it in a thread).

    @param args: Its arguments.
    @return: The exit status, standard output and standard error.
    """
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run(
        NETD + list(args), capture_output=True, text=True, timeout=60, env=env
    )
    return done.returncode, done.stdout, done.stderr


class MainTests(SynchronousTestCase):
    """
    The commands that need no daemon, in process.
    """

    def command(self, *argv: str) -> tuple[int, str, str]:
        """
        @param argv: The arguments.
        @return: The exit status and what was written.
        """
        out, err = io.StringIO(), io.StringIO()
        return main(list(argv), out, err), out.getvalue(), err.getvalue()

    def test_version(self) -> None:
        """
        C{netd version} prints netd's, Twisted's and Python's versions.
        """
        code, out, err = self.command("version")
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith(f"netd {__version__} (Twisted "), out)

    def test_usage(self) -> None:
        """
        An unknown option or command is one line and a pointer to
        C{--help}, exit 64.
        """
        self.assertEqual(
            self.command("--confg"),
            (
                64,
                "",
                "netd: option --confg not recognized\n"
                "netd: 'netd --help' lists the options\n",
            ),
        )
        code, out, err = self.command("status", "--bogus")
        self.assertEqual(code, 64)
        self.assertEqual(len(err.splitlines()), 2, err)
        self.assertIn("netd status: 'netd status --help'", err)
        self.assertEqual(self.command()[0], 64)

    def test_check(self) -> None:
        """
        C{netd check} is C{twistd netd --check}: the summary, exit 0; a bad
        file, exit 78.
        """
        code, out, err = self.command("check")
        self.assertEqual(code, 0, err)
        self.assertIn("configuration is valid (4 services, 7 listeners)", out)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[netd]\n")
        code, out, err = self.command("check", "--config", path)
        self.assertEqual(code, 78)
        self.assertIn("netd: 1 problem; nothing was started", err)

    def test_noDaemon(self) -> None:
        """
        C{status}, C{reload} and C{stop} with no netd say so, exit 69.
        """
        path = os.path.abspath(self.mktemp())
        for command in ("status", "reload", "stop"):
            code, out, err = self.command(command, "--control", path)
            self.assertEqual(code, 69)
            self.assertIn(f"netd {command}: control socket {path}: no such socket", err)


class RunTests(TestCase):
    """
    C{netd run}, then C{netd status}, C{reload} and C{stop} from another
    process.
    """

    timeout = 120

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="netd-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.control = os.path.join(self.directory, "c.sock")
        (self.port,) = freePorts(1)
        self.config = os.path.join(self.directory, "netd.toml")
        self.writeConfig(f'"tcp:{self.port}:interface=127.0.0.1"')

    def writeConfig(self, listen: str) -> None:
        """
        @param listen: The echo service's listener, as TOML.
        """
        with open(self.config, "w") as f:
            f.write(f'[services.echo]\ntype = "echo"\nlisten = [{listen}]\n')

    async def test_runStatusReloadStop(self) -> None:
        """
        C{netd run} serves in the foreground with a control socket;
        C{netd status} lists what it serves; C{netd reload} reloads (exit 0)
        or names why it failed (exit 1, the old configuration still runs);
        C{netd stop} stops it (it exits 0) and waits.
        """
        args = ["run", "--config", self.config, "--control", self.control]
        if os.geteuid() == 0:
            args.append("--allow-root")
        daemon = Daemon(args, self.directory, command=NETD)
        self.addCleanup(daemon.kill)
        daemon.start()
        await daemon.waitForOutput(f"echo listening on tcp:127.0.0.1:{self.port}")
        await daemon.waitForOutput("control socket on")
        code, out, err = await deferToThread(netd, "status", "--control", self.control)
        self.assertEqual(code, 0, err)
        self.assertIn("serving 1 service on 1 listener", out)
        self.assertIn(
            f"echo (echo): tcp:{self.port}:interface=127.0.0.1 (port {self.port}); "
            "0 open sessions",
            out,
        )
        code, out, err = await deferToThread(netd, "reload", "--control", self.control)
        self.assertEqual((code, err), (0, ""))
        self.writeConfig('"tcp:70000"')
        code, out, err = await deferToThread(netd, "reload", "--control", self.control)
        self.assertEqual(code, 1)
        self.assertIn("netd reload: reload failed", err)
        self.assertIn("out of range", err)
        code, out, err = await deferToThread(netd, "stop", "--control", self.control)
        self.assertEqual(code, 0, err)
        self.assertIn("stopped", out)
        self.assertEqual(await daemon.wait(), 0, daemon.stdout + daemon.stderr)
        self.assertNotIn("Traceback", daemon.stdout + daemon.stderr)

    async def test_stopByPidfile(self) -> None:
        """
        A C{twistd netd} started without C{--control} is stopped through its
        pidfile: C{netd stop --pidfile} sends SIGTERM and waits.
        """
        pidfile = os.path.join(self.directory, "netd.pid")
        daemon = Daemon(
            ["-n", f"--pidfile={pidfile}", "netd", "--config", self.config],
            self.directory,
        )
        self.addCleanup(daemon.kill)
        daemon.start()
        await daemon.waitForOutput(f"echo listening on tcp:127.0.0.1:{self.port}")
        code, out, err = await deferToThread(netd, "stop", "--pidfile", pidfile)
        self.assertEqual(code, 0, err)
        self.assertIn("sent SIGTERM", out)
        self.assertEqual(await daemon.wait(), 0)
