# -*- test-case-name: tests.test_exec_e2e -*-
"""
End to end: the real C{twistd netd} running real programs under exec
services, talked to with real clients: C{git daemon --inetd} with
C{git clone}, C{in.tftpd} (tftpd-hpa) in wait mode with C{tftp} (tftp-hpa);
and, with C{workers = 2} and C{[netd] user}, a program that prints its uid,
read with C{nc} (netcat-openbsd).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests import test_endtoend
from tests.test_deployment import findInterpreterFor
from tests.test_endtoend import Daemon, freePorts
from tests.test_listeners import LOOPBACK, waitFor
from tests.test_workers_e2e import alive, children

CLIENT_TIMEOUT = 60


def run(args: list[str], cwd: str) -> subprocess.CompletedProcess[bytes]:
    """
    @param args: A client command.
    @param cwd: Where to run it.
    @return: The finished process.
    """
    return subprocess.run(args, cwd=cwd, capture_output=True, timeout=CLIENT_TIMEOUT)


def userLine() -> str:
    """
    @return: The C{user} line an exec service needs: as root, nobody; else
        none (the programs run as netd's own user).
    """
    return 'user = "nobody"\n' if os.geteuid() == 0 else ""


class ExecEndToEndTests(TestCase):
    """
    exec services in the real daemon.
    """

    timeout = 120

    writeConfig = test_endtoend.EndToEndTests.writeConfig
    daemon = test_endtoend.EndToEndTests.daemon
    netd = test_endtoend.EndToEndTests.netd
    assertStoppedCleanly = test_endtoend.EndToEndTests.assertStoppedCleanly

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        # The programs run as nobody: let it reach the test's directory
        # (trial makes the directories above it private).
        here = self.directory
        while here != os.getcwd() and here != os.path.dirname(here):
            os.chmod(here, 0o755)
            here = os.path.dirname(here)

    async def test_gitClone(self) -> None:
        """
        C{git clone git://...} from C{git daemon --inetd} under an exec
        service gets the repository; the session event names the program's
        pid and exit status; C{--check} says who the programs run as.
        """
        if shutil.which("git") is None:
            raise self.skipTest("git is not installed (package git)")
        repositories = os.path.join(self.directory, "repos")
        source = os.path.join(self.directory, "source")
        os.makedirs(repositories)
        git = ["git", "-c", "user.name=netd", "-c", "user.email=netd@example.invalid"]
        for args in (
            ["git", "init", "-q", "-b", "main", source],
            ["sh", "-c", "echo hello from netd > README"],
            ["git", "add", "README"],
            git + ["commit", "-q", "-m", "first"],
            [
                "git",
                "clone",
                "-q",
                "--bare",
                source,
                os.path.join(repositories, "repo.git"),
            ],
        ):
            done = run(args, source if os.path.isdir(source) else self.directory)
            self.assertEqual(done.returncode, 0, done.stderr)
        (port,) = freePorts(1)
        config = self.writeConfig(
            "[services.git]\n"
            'type = "exec"\n'
            f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
            'command = ["/usr/bin/git", "daemon", "--inetd", "--export-all", '
            '"--log-destination=stderr", '
            f'"--base-path={repositories}", "{repositories}"]\n'
            + userLine()
            + "# git refuses repositories another user owns unless told\n"
            'env = { GIT_CONFIG_COUNT = "1", GIT_CONFIG_KEY_0 = "safe.directory", '
            'GIT_CONFIG_VALUE_0 = "*" }\n'
            "[services.git.limits]\n"
            "max_sessions = 4\n"
        )
        check = run(
            test_endtoend.twistdCommand()
            + ["netd", "--allow-root", "--config", config, "--check"],
            self.directory,
        )
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertIn(b"git (exec): tcp:", check.stdout)
        self.assertIn(b"programs run as", check.stdout)
        daemon = self.netd("--config", config)
        await daemon.waitForOutput(r"git listening on ")

        clone = os.path.join(self.directory, "clone")
        done = await deferToThread(
            run,
            ["git", "clone", "-q", f"git://{LOOPBACK}:{port}/repo.git", clone],
            self.directory,
        )
        self.assertEqual(done.returncode, 0, done.stderr + daemon.stdout.encode())
        with open(os.path.join(clone, "README")) as f:
            self.assertEqual(f.read(), "hello from netd\n")
        [line] = await daemon.waitForOutput(
            r"git session from 127\.0\.0\.1:\d+ on .* \(pid \d+ exited with status 0 after"
        )
        self.assertNotIn("0 bytes out", line)
        self.assertStoppedCleanly(daemon, await daemon.stop())

    async def test_tftpWait(self) -> None:
        """
        C{tftp} fetches a 1 MiB file from C{in.tftpd} run by a wait-mode udp
        exec service, sha256 equal, twice (netd takes the socket back after
        the first program exits).
        """
        tftpd = "/usr/sbin/in.tftpd"
        if not os.access(tftpd, os.X_OK) or shutil.which("tftp") is None:
            raise self.skipTest(
                "in.tftpd or tftp is missing (packages tftpd-hpa, tftp-hpa)"
            )
        if os.geteuid() != 0:
            raise self.skipTest("in.tftpd --secure chroots: netd must run as root")
        root = os.path.join(self.directory, "tftp")
        os.makedirs(root)
        os.chmod(root, 0o755)
        data = os.urandom(1024 * 1024)
        with open(os.path.join(root, "big.bin"), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(root, "big.bin"), 0o644)
        (port,) = freePorts(1)
        config = self.writeConfig(
            "[services.tftp]\n"
            'type = "exec"\n'
            'mode = "wait"\n'
            f'listen = ["udp:{port}:interface=127.0.0.1"]\n'
            "# in.tftpd chroots into the directory and then switches to nobody\n"
            'command = ["/usr/sbin/in.tftpd", "--timeout", "1", "--user", "nobody", '
            f'"--secure", "{root}"]\n'
            'user = "root"\n'
            "allow_root = true\n"
        )
        daemon = self.netd("--config", config)
        await daemon.waitForOutput(r"tftp listening on ")
        for attempt in (1, 2):
            target = os.path.join(self.directory, f"got{attempt}.bin")
            done = await deferToThread(
                run,
                [
                    "tftp",
                    LOOPBACK,
                    str(port),
                    "-m",
                    "binary",
                    "-c",
                    "get",
                    "big.bin",
                    target,
                ],
                self.directory,
            )
            self.assertEqual(done.returncode, 0, done.stderr)
            with open(target, "rb") as f:
                self.assertEqual(
                    hashlib.sha256(f.read()).hexdigest(),
                    hashlib.sha256(data).hexdigest(),
                )
            await daemon.waitForOutput(
                r"tftp program for 127\.0\.0\.1:\d+ on udp:.* \(pid \d+ exited with status 0\)",
                count=attempt,
            )
        self.assertStoppedCleanly(daemon, await daemon.stop())

    async def test_limitsAndDrain(self) -> None:
        """
        A program that ignores SIGTERM is killed at C{max_duration} plus
        C{kill_grace}; on SIGTERM netd drains a running program (SIGTERM at
        the drain deadline) and exits cleanly.
        """
        script = os.path.join(self.directory, "stubborn.sh")
        with open(script, "w") as f:
            f.write(
                "#!/bin/sh\ntrap '' TERM\necho started\nsleep 30 </dev/null >/dev/null 2>&1 &\nwait\n"
            )
        os.chmod(script, 0o755)
        polite = os.path.join(self.directory, "polite.sh")
        with open(polite, "w") as f:
            f.write("#!/bin/sh\necho started\nexec sleep 30\n")
        os.chmod(polite, 0o755)
        stubbornPort, politePort = freePorts(2)
        config = self.writeConfig(
            "[netd]\n"
            "drain_timeout = 1\n"
            "[services.stubborn]\n"
            'type = "exec"\n'
            f'listen = ["tcp:{stubbornPort}:interface=127.0.0.1"]\n'
            f'command = ["{script}"]\n' + userLine() + "kill_grace = 0.5\n"
            "[services.stubborn.limits]\n"
            "max_duration = 1\n"
            "[services.polite]\n"
            'type = "exec"\n'
            f'listen = ["tcp:{politePort}:interface=127.0.0.1"]\n'
            f'command = ["{polite}"]\n' + userLine()
        )
        daemon = self.netd("--config", config)
        await daemon.waitForOutput(r"polite listening on ")

        def readFrom(port: int) -> bytes:
            with socket.create_connection((LOOPBACK, port), timeout=20) as s:
                chunks = []
                while chunk := s.recv(100):
                    chunks.append(chunk)
                return b"".join(chunks)

        self.assertEqual(await deferToThread(readFrom, stubbornPort), b"started\n")
        await daemon.waitForOutput(
            r"stubborn session from .*\(maximum session duration reached; pid \d+ "
            r"killed by SIGKILL after 1\.5\d\ds\)"
        )
        reading = deferToThread(readFrom, politePort)
        # Let the polite program start before netd is told to stop.
        await deferLater(reactor, 1.0, lambda: None)
        code = await daemon.stop()
        self.assertEqual(await reading, b"started\n")
        self.assertRegex(
            daemon.stdout,
            r"polite session from .*\(drain deadline reached; pid \d+ killed by SIGTERM",
        )
        self.assertStoppedCleanly(daemon, code)


def processUid(pid: int) -> int:
    """
    @param pid: A process.
    @return: Its real user id.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


class ExecWorkersEndToEndTests(TestCase):
    """
    An exec service in a netd with C{workers = 2} and C{[netd] user =
    "nobody"}: its programs run as its own C{user}, through the spawner the
    main process forked before it dropped root.
    """

    timeout = 120

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise self.skipTest("needs root (CI runs as root)")
        if shutil.which("nc") is None:
            raise self.skipTest("nc is missing (package netcat-openbsd)")
        # The workers start after the switch to nobody: nobody must be able
        # to run the interpreter and read the files.
        interpreter = findInterpreterFor("nobody")
        if interpreter is None:
            raise self.skipTest("no Python that nobody can run with these packages")
        self.python, self.pythonpath = interpreter
        self.directory = tempfile.mkdtemp(prefix="netd-execworkers-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        os.chmod(self.directory, 0o755)
        self.script = os.path.join(self.directory, "uid.sh")
        with open(self.script, "w") as f:
            f.write("#!/bin/sh\nid -u\n")
        os.chmod(self.script, 0o755)

    def writeConfig(self, text: str) -> str:
        """
        @param text: TOML text.
        @return: The configuration file's path (readable by anyone).
        """
        path = os.path.join(self.directory, "netd.toml")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def netd(self, config: str) -> Daemon:
        """
        Start the real twistd netd as root, with the interpreter nobody can
        run; kill it and whatever it left after the test.

        @param config: The configuration file.
        @return: The started daemon.
        """
        daemon = Daemon(
            ["-n", "--pidfile=", "netd", "--config", config],
            self.directory,
            allowRoot=False,
            command=[
                self.python,
                "-c",
                "from twisted.scripts.twistd import run; run()",
            ],
            env={"PYTHONPATH": self.pythonpath},
        )

        def killAll() -> None:
            if daemon.process is not None and daemon.process.poll() is None:
                for pid in children(daemon.process.pid):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            daemon.kill()

        self.addCleanup(killAll)
        daemon.start()
        return daemon

    async def uidFrom(self, port: int) -> int:
        """
        @param port: The exec service's port.
        @return: The uid its program printed, read with C{nc}.
        """
        done = await deferToThread(
            run, ["nc", "-N", "-w", "10", LOOPBACK, str(port)], self.directory
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return int(done.stdout.strip())

    async def programChangeRefused(
        self, daemon: Daemon, base: str, port: int, uid: int
    ) -> None:
        """
        Change the program of the exec service C{who} and reload: the reload
        is refused, naming the setting and the restart it needs, and the
        programs still run as C{uid}.
        """
        assert daemon.process is not None
        self.writeConfig(base.replace('uid.sh"]', 'uid.sh", "changed"]'))
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(
            r"reload failed, still running the previous configuration: .*"
            r"services\.who\.user: netd dropped root after it started.*restart netd"
        )
        self.assertEqual(await self.uidFrom(port), uid)

    async def test_programsRunAsServiceUser(self) -> None:
        """
        C{nc} gets the uid of the service's user (daemon), not nobody's, from
        the program worker 0 starts; C{--check} says the spawner is forked
        by the main process and handed to worker 0. A reload that changes a
        limit (applied in place), one that adds a listener (a new
        generation of workers) and a restarted worker 0 keep it; a reload
        that changes the program is refused with an error naming the
        setting. The spawners run as daemon; at stop they are all gone.
        """
        daemonUid = pwd.getpwnam("daemon").pw_uid
        nobodyUid = pwd.getpwnam("nobody").pw_uid
        port, other = freePorts(2)
        base = (
            '[netd]\nworkers = 2\nuser = "nobody"\ndrain_timeout = 2\n'
            '[services.who]\ntype = "exec"\n'
            f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
            f'command = ["{self.script}"]\nuser = "daemon"\n'
        )
        config = self.writeConfig(base)
        check = await deferToThread(
            run,
            test_endtoend.twistdCommand() + ["netd", "--config", config, "--check"],
            self.directory,
        )
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertIn(
            b"programs run as daemon (uid 1, gid 1, groups 1): their spawner is "
            b"forked by the main process before netd drops root and handed to "
            b"worker 0, and switches to daemon at once (nothing stays root)",
            check.stdout,
        )
        daemon = self.netd(config)
        await daemon.waitForOutput(r"netd ready with 2 workers")
        assert daemon.process is not None
        main = daemon.process.pid
        await waitFor(lambda: len(children(main)) == 3, 20, "2 workers and a spawner")
        [keeper] = [pid for pid in children(main) if processUid(pid) == daemonUid]
        self.assertEqual(processUid(main), nobodyUid)
        self.assertEqual(await self.uidFrom(port), daemonUid)

        self.writeConfig(base + "[services.who.limits]\nmax_sessions = 5\n")
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(r"reloaded .*changed: who; applied by the 2 workers")
        self.assertEqual(await self.uidFrom(port), daemonUid)

        self.writeConfig(
            base + f'[services.echo]\ntype = "echo"\n'
            f'listen = ["tcp:{other}:interface=127.0.0.1"]\n'
        )
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(r"reloaded .*added: echo.*2 new workers serve it")
        self.assertEqual(await self.uidFrom(port), daemonUid)

        readyLines = await daemon.waitForOutput(r"worker 0 ready \(pid \d+\)", count=2)
        worker0 = int(readyLines[-1].rsplit("pid ", 1)[1].strip().rstrip(")"))
        os.kill(worker0, signal.SIGKILL)
        await daemon.waitForOutput(r"worker 0 ready \(pid \d+\)", count=3)
        self.assertEqual(await self.uidFrom(port), daemonUid)

        await self.programChangeRefused(daemon, base, port, daemonUid)

        # worker 0's own spawner, forked by the door keeper: not root either.
        await waitFor(lambda: len(children(keeper)) == 1, 10, "one spawner")
        spawners = children(keeper)
        self.assertEqual([processUid(pid) for pid in spawners], [daemonUid])
        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stderr)
        for pid in [keeper, *spawners]:
            await waitFor(lambda: not alive(pid), 10, f"the end of spawner {pid}")

    async def test_singleProcessReloads(self) -> None:
        """
        The same in a single netd (no workers) with C{[netd] user =
        "nobody"}: programs run as daemon, also after a reload that leaves
        the service unchanged and one that changes a limit (the instance is
        rebuilt after the drop and gets its spawner from the door keeper
        forked before); a reload that changes the program is refused.
        """
        daemonUid = pwd.getpwnam("daemon").pw_uid
        (port,) = freePorts(1)
        base = (
            '[netd]\nuser = "nobody"\ndrain_timeout = 2\n'
            '[services.who]\ntype = "exec"\n'
            f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
            f'command = ["{self.script}"]\nuser = "daemon"\n'
        )
        config = self.writeConfig(base)
        daemon = self.netd(config)
        await daemon.waitForOutput(r"who listening on")
        assert daemon.process is not None
        self.assertEqual(await self.uidFrom(port), daemonUid)

        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(r"reloaded .*unchanged")
        self.assertEqual(await self.uidFrom(port), daemonUid)

        self.writeConfig(base + "[services.who.limits]\nmax_sessions = 5\n")
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(r"reloaded .*changed: who")
        self.assertEqual(await self.uidFrom(port), daemonUid)

        await self.programChangeRefused(daemon, base, port, daemonUid)
        self.assertNotIn("cannot run as uid", daemon.stderr)
        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stderr)
