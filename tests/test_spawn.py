# -*- test-case-name: tests.test_spawn -*-
"""
Tests for L{netd.spawn}: a real spawner process starting real programs.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import sys

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.spawn.client import DoorSpawner, Spawner, SpawnError
from netd.spawn.helper import Program, connectionEnvironment


def readAll(skt: socket.socket) -> bytes:
    """
    Read a socket to its end (blocking, with a timeout).

    @param skt: The socket.
    @return: Everything it carried.
    """
    skt.settimeout(10)
    chunks = []
    while chunk := skt.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


class ConnectionEnvironmentTests(SynchronousTestCase):
    """
    Only the connection's own variables are taken from a spawn request.
    """

    def test_onlyConnectionVariables(self) -> None:
        """
        C{REMOTE_ADDR} and friends are added; any other name, a non-string,
        a value with a NUL or one too long is ignored; the program's own
        variables stay.
        """
        program = Program(argv=("/bin/true",), environment=(("PATH", "/bin"),))
        env = connectionEnvironment(
            program,
            {
                "REMOTE_ADDR": "192.0.2.1",
                "LOCAL_PORT": "79",
                "LD_PRELOAD": "/tmp/evil.so",
                "PATH": "/tmp",
                "REMOTE_PORT": 5,
                "LOCAL_ADDR": "a\0b",
            },
        )
        self.assertEqual(
            env, {"PATH": "/bin", "REMOTE_ADDR": "192.0.2.1", "LOCAL_PORT": "79"}
        )
        self.assertEqual(
            connectionEnvironment(program, {"REMOTE_ADDR": "x" * 300}),
            {"PATH": "/bin"},
        )
        self.assertEqual(connectionEnvironment(program, ["no"]), {"PATH": "/bin"})


class SpawnerTests(TestCase):
    """
    L{Spawner} forks a spawner process that starts programs on the
    descriptors it is given and reports their pids and exit statuses.
    """

    timeout = 30

    def startSpawner(self, program: Program) -> Spawner:
        """
        @param program: What it runs.
        @return: A started spawner, stopped at clean-up.
        """
        spawner = Spawner(program, reactor, "test")
        spawner.start()
        self.addCleanup(spawner.stop)
        return spawner

    async def runOnce(
        self, program: Program, stdin: bytes = b"", env: dict[str, str] | None = None
    ) -> tuple[int, bytes, bytes]:
        """
        Run a program once on a socketpair.

        @param program: The program.
        @param stdin: What it reads.
        @param env: The connection's variables.
        @return: Its wait status, its stdout and its stderr.
        """
        spawner = self.startSpawner(program)
        ours, theirs = socket.socketpair()
        errOurs, errTheirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(errOurs.close)
        ended: defer.Deferred[int] = defer.Deferred()
        try:
            pid = await spawner.spawn(theirs.fileno(), errTheirs.fileno(), env or {})
        finally:
            theirs.close()
            errTheirs.close()
        spawner.onExit(pid, ended.callback)
        if stdin:
            ours.sendall(stdin)
        ours.shutdown(socket.SHUT_WR)
        from twisted.internet.threads import deferToThread

        out = await deferToThread(readAll, ours)
        err = await deferToThread(readAll, errOurs)
        status = await ended
        return status, out, err

    async def test_stdioAndStderr(self) -> None:
        """
        The program reads the connection on stdin, writes it on stdout, and
        its stderr is the other descriptor; its status comes back.
        """
        status, out, err = await self.runOnce(
            Program(argv=("/bin/sh", "-c", "cat; echo oops >&2; exit 3")),
            b"hello",
        )
        self.assertEqual(
            (os.waitstatus_to_exitcode(status), out, err), (3, b"hello", b"oops\n")
        )

    async def test_cleanEnvironment(self) -> None:
        """
        The environment is exactly the program's plus the connection's.
        """
        status, out, err = await self.runOnce(
            Program(argv=("/usr/bin/env",), environment=(("PATH", "/bin"), ("A", "b"))),
            env={"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "4000"},
        )
        self.assertEqual(
            sorted(out.decode().splitlines()),
            ["A=b", "PATH=/bin", "REMOTE_ADDR=127.0.0.1", "REMOTE_PORT=4000"],
        )

    async def test_onlyStdioOpen(self) -> None:
        """
        The program has descriptors 0, 1 and 2 and no other, started with
        C{posix_spawn} or (with resource limits) C{fork}.
        """
        for rlimits in ((), (("nofile", 64),)):
            status, out, err = await self.runOnce(
                Program(argv=("/bin/ls", "/proc/self/fd"), rlimits=rlimits)
            )
            # ls itself opens one descriptor to read the directory.
            self.assertEqual(len(out.split()), 4, out)
            self.assertEqual(out.split()[:3], [b"0", b"1", b"2"])

    async def test_limitsDirectoryNice(self) -> None:
        """
        The resource limits, niceness and working directory are applied.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        status, out, err = await self.runOnce(
            Program(
                argv=(
                    "/bin/sh",
                    "-c",
                    "ulimit -n; ulimit -t; ulimit -v; pwd; cut -d' ' -f19 /proc/self/stat",
                ),
                directory=directory,
                rlimits=(("nofile", 37), ("cpu", 11), ("as", 512 * 1024 * 1024)),
                nice=7,
            )
        )
        self.assertEqual(
            out.decode().split(), ["37", "11", str(512 * 1024), directory, "7"], err
        )

    async def test_signalsReset(self) -> None:
        """
        The program starts with default dispositions for every standard
        signal and none blocked (netd's Python ignores SIGPIPE, the spawner
        SIGINT, SIGTERM and SIGHUP; a program must inherit none of that),
        with or without resource limits (C{posix_spawn} or C{fork}).
        glibc's C{posix_spawn} leaves its own two real-time signals (32 and
        33) ignored, which glibc programs handle themselves: not checked.
        """
        for rlimits in ((), (("nofile", 64),)):
            status, out, err = await self.runOnce(
                Program(
                    argv=("/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"),
                    rlimits=rlimits,
                )
            )
            fields = dict(line.split(":") for line in out.decode().splitlines())
            self.assertEqual(int(fields["SigBlk"], 16), 0)
            self.assertEqual(int(fields["SigIgn"], 16) & 0x7FFFFFFF, 0, rlimits)

    async def test_cannotExecute(self) -> None:
        """
        A program that cannot be executed fails the spawn with the reason.
        """
        spawner = self.startSpawner(Program(argv=("/nonexistent/program",)))
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        with self.assertRaises(SpawnError) as caught:
            await spawner.spawn(theirs.fileno(), theirs.fileno(), {})
        self.assertEqual(
            str(caught.exception),
            "cannot execute /nonexistent/program: No such file or directory",
        )

    async def test_badDirectory(self) -> None:
        """
        A working directory that does not exist fails the spawn.
        """
        spawner = self.startSpawner(
            Program(argv=("/bin/true",), directory="/nonexistent")
        )
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        with self.assertRaises(SpawnError) as caught:
            await spawner.spawn(theirs.fileno(), theirs.fileno(), {})
        self.assertIn("cannot change directory to /nonexistent", str(caught.exception))

    async def test_kill(self) -> None:
        """
        L{Spawner.kill} signals a running child; its status says so.
        """
        spawner = self.startSpawner(Program(argv=("/bin/sleep", "60")))
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        pid = await spawner.spawn(theirs.fileno(), theirs.fileno(), {})
        theirs.close()
        ended: defer.Deferred[int] = defer.Deferred()
        spawner.onExit(pid, ended.callback)
        spawner.kill(pid, signal.SIGTERM)
        status = await ended
        self.assertEqual(os.waitstatus_to_exitcode(status), -signal.SIGTERM)

    async def test_killOnlyItsChildren(self) -> None:
        """
        A kill request for a pid the spawner did not start is ignored.
        """
        victim = os.fork()
        if victim == 0:
            signal.pause()
            os._exit(0)
        self.addCleanup(
            lambda: (os.kill(victim, signal.SIGKILL), os.waitpid(victim, 0))
        )
        spawner = self.startSpawner(Program(argv=("/bin/true",)))
        await spawner.ready
        spawner.kill(victim, signal.SIGKILL)
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(os.waitpid(victim, os.WNOHANG), (0, 0))

    async def test_stopEndsChildren(self) -> None:
        """
        Stopping the spawner (netd closing its end) sends SIGTERM to the
        children left, and the spawner process is reaped.
        """
        spawner = self.startSpawner(Program(argv=("/bin/sleep", "60")))
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        pid = await spawner.spawn(theirs.fileno(), theirs.fileno(), {})
        theirs.close()
        helper = spawner.pid
        spawner.stop()
        for _ in range(200):
            if spawner.pid is None:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertIsNone(spawner.pid)
        with self.assertRaises(ChildProcessError):
            os.waitpid(helper, os.WNOHANG)
        # sleep's socket closes when it dies.
        from twisted.internet.threads import deferToThread

        self.assertEqual(await deferToThread(readAll, ours), b"")
        # Reparented to init, it may linger as a zombie until init reaps it.
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        self.assertIn(state, ("gone", "Z"))

    async def test_switchesUser(self) -> None:
        """
        As root, the spawner switches to the program's user at once, and the
        program runs as that user and group only.
        """
        if os.geteuid() != 0:
            raise self.skipTest("switching users needs root")
        nobody = pwd.getpwnam("nobody")
        program = Program(
            argv=("/bin/grep", "-E", "^(Uid|Gid|Groups):", "/proc/self/status"),
            uid=nobody.pw_uid,
            gid=nobody.pw_gid,
            groups=(nobody.pw_gid,),
        )
        spawner = self.startSpawner(program)
        self.assertEqual(await spawner.ready, nobody.pw_uid)
        with open(f"/proc/{spawner.pid}/status") as f:
            uids = [line.split()[1:] for line in f if line.startswith("Uid:")][0]
        self.assertEqual(set(uids), {str(nobody.pw_uid)})
        status, out, err = await self.runOnce(program)
        lines = dict(line.split(":", 1) for line in out.decode().splitlines())
        self.assertEqual(set(lines["Uid"].split()), {str(nobody.pw_uid)})
        self.assertEqual(set(lines["Gid"].split()), {str(nobody.pw_gid)})
        self.assertEqual(lines["Groups"].split(), [str(nobody.pw_gid)])


def uidOf(pid: int) -> set[str]:
    """
    @param pid: A process.
    @return: Its real, effective, saved and filesystem user ids.
    """
    with open(f"/proc/{pid}/status") as f:
        return {
            uid for line in f if line.startswith("Uid:") for uid in line.split()[1:]
        }


class DoorSpawnerTests(TestCase):
    """
    L{DoorSpawner} (the main process of a netd with workers) forks a door
    keeper; a L{Spawner} given its door (in a worker) gets a spawner of its
    own from it, with no fork of its own.
    """

    timeout = 30

    def keeper(self, program: Program) -> DoorSpawner:
        """
        @param program: What its spawners run.
        @return: A started door keeper, stopped at clean-up.
        """
        keeper = DoorSpawner(program, reactor, "test")
        keeper.start()
        self.addCleanup(keeper.stop)
        return keeper

    def throughDoor(self, keeper: DoorSpawner) -> Spawner:
        """
        @param keeper: A door keeper.
        @return: A started spawner asked for on its door, stopped at
            clean-up.
        """

        def noFork() -> int:
            raise AssertionError("a spawner given a door must not fork")

        spawner = Spawner(
            keeper.program, reactor, "test", forkHelper=noFork, door=keeper.doorFileno()
        )
        spawner.start()
        self.addCleanup(spawner.stop)
        return spawner

    async def runOn(self, spawner: Spawner) -> tuple[int, bytes]:
        """
        Run the program once.

        @param spawner: The spawner.
        @return: The wait status and standard output.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        ended: defer.Deferred[int] = defer.Deferred()
        try:
            pid = await spawner.spawn(theirs.fileno(), theirs.fileno(), {})
        finally:
            theirs.close()
        spawner.onExit(pid, ended.callback)
        from twisted.internet.threads import deferToThread

        out = await deferToThread(readAll, ours)
        return await ended, out

    async def test_spawnerThroughDoor(self) -> None:
        """
        Two spawners asked for on one door run the program independently:
        each hears only its own child's exit. The door keeper starts no
        program itself.
        """
        keeper = self.keeper(Program(argv=("/bin/echo", "through the door")))
        self.assertEqual(await keeper.ready, os.geteuid())
        first, second = self.throughDoor(keeper), self.throughDoor(keeper)
        self.assertEqual(await first.ready, os.geteuid())
        self.assertEqual(await second.ready, os.geteuid())
        self.assertIsNone(first.pid)
        self.assertEqual(await self.runOn(first), (0, b"through the door\n"))
        self.assertEqual(await self.runOn(second), (0, b"through the door\n"))
        with self.assertRaises(SpawnError):
            await keeper.spawn(0, 0, {})

    async def test_switchesUser(self) -> None:
        """
        As root, the door keeper switches to the program's user at once, and
        so do the spawners it forks and their programs.
        """
        if os.geteuid() != 0:
            raise self.skipTest("switching users needs root")
        daemon = pwd.getpwnam("daemon")
        keeper = self.keeper(
            Program(
                argv=("/usr/bin/id", "-u"),
                uid=daemon.pw_uid,
                gid=daemon.pw_gid,
                groups=(daemon.pw_gid,),
            )
        )
        self.assertEqual(await keeper.ready, daemon.pw_uid)
        assert keeper.pid is not None
        self.assertEqual(uidOf(keeper.pid), {str(daemon.pw_uid)})
        spawner = self.throughDoor(keeper)
        self.assertEqual(await spawner.ready, daemon.pw_uid)
        self.assertEqual(await self.runOn(spawner), (0, b"%d\n" % daemon.pw_uid))

    async def test_keeperEndsSpawnersStay(self) -> None:
        """
        Stopping the door keeper (the main process closing its control
        socket) ends it and closes its door; a spawner it forked keeps
        serving its channel until that closes, and a new one cannot be
        asked for.
        """
        keeper = self.keeper(Program(argv=("/bin/echo", "still here")))
        spawner = self.throughDoor(keeper)
        await spawner.ready
        door = os.dup(keeper.doorFileno())
        self.addCleanup(os.close, door)
        await keeper.stop()
        self.assertIsNone(keeper.pid)
        self.assertEqual(keeper.doorFileno(), -1)
        self.assertEqual(await self.runOn(spawner), (0, b"still here\n"))
        late = Spawner(keeper.program, reactor, "test", door=door)
        with self.assertRaises(OSError):
            late.start()
        self.assertFalse(late.running)

    async def test_channelEndsSpawner(self) -> None:
        """
        Closing a channel (a worker's spawner stopping) ends the spawner the
        door keeper forked for it, and its running child gets SIGTERM.
        """
        keeper = self.keeper(Program(argv=("/bin/sleep", "60")))
        spawner = self.throughDoor(keeper)
        await spawner.ready
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        try:
            await spawner.spawn(theirs.fileno(), theirs.fileno(), {})
        finally:
            theirs.close()
        assert keeper.pid is not None
        spawner.stop()
        from twisted.internet.threads import deferToThread

        # sleep's socket closes when SIGTERM ends it.
        self.assertEqual(await deferToThread(readAll, ours), b"")
        # The door keeper reaps the spawner it forked.
        for _ in range(200):
            with open(f"/proc/{keeper.pid}/task/{keeper.pid}/children") as f:
                if not f.read().split():
                    break
            await deferLater(reactor, 0.01, lambda: None)
        with open(f"/proc/{keeper.pid}/task/{keeper.pid}/children") as f:
            self.assertEqual(f.read().split(), [])


if sys.platform != "linux":
    SpawnerTests.skip = "the spawner uses pidfds (Linux)"  # type: ignore[attr-defined]
    DoorSpawnerTests.skip = SpawnerTests.skip  # type: ignore[attr-defined]
