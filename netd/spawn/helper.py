# -*- test-case-name: tests.test_spawn -*-
"""
The spawner process: what runs, alone, in the process forked by
L{netd.spawn.client.Spawner}.

Plain blocking Python with no Twisted (it never runs a reactor): one loop
(L{serve}) waits on its socket to netd and on a pidfd per child. Messages
are JSON, one per C{SOCK_SEQPACKET} record:

    - from netd: C{{"op": "spawn", "id": N, "env": {...}}} with two
      descriptors (the child's stdin/stdout, its stderr);
      C{{"op": "kill", "pid": P, "signal": S}};
    - to netd: C{{"ready": true, "uid": U}} once; C{{"id": N, "pid": P}}
      or C{{"id": N, "error": "..."}} per spawn; C{{"exited": P,
      "status": W}} (the raw wait status) per child.

Only the connection's own variables (L{CONNECTION_VARIABLES}) are taken
from a spawn request, checked; the program, its account, environment,
directory and limits are the L{Program} it was forked with. Only its own,
unreaped children can be signalled. When netd closes its end, the
spawner sends SIGTERM to the children left and exits.

With C{workers = N}, the main process forks a door keeper instead
(L{serveDoor}), switched to the account in the same way: on its door, a
socket the main process hands to the workers that serve the service, it
takes C{{"op": "channel"}} with one descriptor and forks a spawner
(L{serve}) for that socket. Each worker process (and each service instance
in it) gets a spawner of its own this way, long after netd dropped root.
The door keeper exits when the main process closes its control socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import socket
from collections.abc import Mapping
from typing import Any, NoReturn

from attrs import frozen

CONNECTION_VARIABLES = frozenset(
    {"REMOTE_ADDR", "REMOTE_PORT", "LOCAL_ADDR", "LOCAL_PORT"}
)

# The longest message either side sends (a spawn request's environment is
# four short values).
MAX_MESSAGE = 65536

_RLIMITS = {
    "as": resource.RLIMIT_AS,
    "cpu": resource.RLIMIT_CPU,
    "nofile": resource.RLIMIT_NOFILE,
}

# The most spawners a door keeper runs at once (a worker's service instance
# needs one; more are refused).
MAX_CHANNELS = 64

_SIGNALS = frozenset({signal.SIGTERM, signal.SIGKILL, signal.SIGHUP, signal.SIGINT})


@frozen
class Program:
    """
    What a spawner runs: everything about a child but its connection.

    @ivar argv: The command; C{argv[0]} is an absolute path.
    @ivar uid: The user to run as, or L{None} for the spawner's own.
    @ivar gid: The group to run as (with L{uid}).
    @ivar groups: The supplementary groups (with L{uid}).
    @ivar environment: The fixed environment (C{PATH}, C{NETD_SERVICE}, the
        service's C{env} table); the connection's variables are added.
    @ivar directory: The working directory.
    @ivar rlimits: C{("as" | "cpu" | "nofile", value)} pairs, soft and hard.
    @ivar nice: The scheduling priority (0 to 19), or L{None} to inherit.
    """

    argv: tuple[str, ...]
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    directory: str = "/"
    rlimits: tuple[tuple[str, int], ...] = ()
    nice: int | None = None


class SpawnFailed(Exception):
    """
    A program could not be started (why, in words).
    """


DEFAULT_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}


def canSpawnDirectly(program: Program) -> bool:
    """
    Whether the spawner can start the program with C{posix_spawn}: it runs
    as the program's user already, and there are no resource limits to set
    in the child. The working directory and niceness are then the
    spawner's own, set here (its children inherit them).

    @param program: The program.
    @return: Whether it can.
    """
    if program.rlimits or (program.uid is not None and os.getuid() != program.uid):
        return False
    try:
        os.chdir(program.directory)
        if program.nice is not None:
            os.setpriority(os.PRIO_PROCESS, 0, program.nice)
    except OSError:
        return False
    return True


def becomeAccount(program: Program) -> None:
    """
    Switch the spawner itself to the program's account, if it is root and
    the account is not: from then on nothing of netd's is root.

    @param program: The program.
    @raise OSError: If the switch fails.
    """
    uid = program.uid
    if uid is None or uid == 0 or os.geteuid() != 0:
        return
    gid = program.gid if program.gid is not None else uid
    os.setgroups(list(program.groups) or [gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def connectionEnvironment(program: Program, extra: Any) -> dict[str, str]:
    """
    The child's environment: the program's, plus the connection's own
    variables from a spawn request (anything else in it is ignored).

    @param program: The program.
    @param extra: The request's C{"env"}.
    @return: The environment.
    """
    env = dict(program.environment)
    if isinstance(extra, Mapping):
        for key in CONNECTION_VARIABLES:
            value = extra.get(key)
            if isinstance(value, str) and len(value) < 256 and "\0" not in value:
                env[key] = value
    return env


def runChild(
    program: Program, stdio: int, stderr: int, env: dict[str, str], report: int
) -> NoReturn:
    """
    In the forked child: set everything up and C{execve} the program; on a
    failure, write what failed to C{report} and exit with 127.

    @param program: The program.
    @param stdio: The descriptor for stdin and stdout.
    @param stderr: The descriptor for stderr.
    @param env: The environment.
    @param report: The close-on-exec pipe the spawner reads.
    """
    step = "setsid"
    try:
        os.setsid()
        step = "set up descriptors"
        os.dup2(stdio, 0)
        os.dup2(stdio, 1)
        os.dup2(stderr, 2)
        os.closerange(3, report)
        os.closerange(report + 1, 65536)
        step = f"change directory to {program.directory}"
        os.chdir(program.directory)
        for name, value in program.rlimits:
            step = f"set rlimit_{name}"
            resource.setrlimit(_RLIMITS[name], (value, value))
        if program.nice is not None:
            step = "set nice"
            os.setpriority(os.PRIO_PROCESS, 0, program.nice)
        if program.uid is not None and os.getuid() != program.uid:
            step = f"switch to uid {program.uid}"
            becomeAccount(program)
        for number in range(1, signal.NSIG):
            with contextlib.suppress(OSError, ValueError):
                signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        step = f"execute {program.argv[0]}"
        os.execve(program.argv[0], list(program.argv), env)
    except OSError as e:
        message = f"cannot {step}: {e.strerror or e}"
    except BaseException as e:
        message = f"cannot {step}: {e}"
    try:
        os.write(report, message.encode("utf-8", "replace")[:4000])
    finally:
        os._exit(127)


class Helper:
    """
    The spawner's state: its socket to netd and its children.

    @ivar sock: The socket to netd.
    @ivar program: What it runs.
    @ivar children: Running children: pid to pidfd.
    """

    def __init__(self, sock: socket.socket, program: Program) -> None:
        self.sock = sock
        self.program = program
        self.children: dict[int, int] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, None)
        self.fast = canSpawnDirectly(program)

    def launch(self, stdio: int, stderr: int, env: dict[str, str]) -> int:
        """
        Start the program: with C{posix_spawn} (a vfork, whose cost does not
        grow with this process's memory, a copy of netd's) when nothing is
        left to do in the child but descriptors and signals (L{fast}), else
        with C{fork} and L{runChild}.

        @param stdio: Its stdin and stdout.
        @param stderr: Its stderr.
        @param env: Its environment.
        @return: Its pid.
        @raise SpawnFailed: If it could not be started, saying why.
        """
        program = self.program
        if self.fast:
            try:
                return os.posix_spawn(
                    program.argv[0],
                    list(program.argv),
                    env,
                    file_actions=[
                        (os.POSIX_SPAWN_DUP2, stdio, 0),
                        (os.POSIX_SPAWN_DUP2, stdio, 1),
                        (os.POSIX_SPAWN_DUP2, stderr, 2),
                        (os.POSIX_SPAWN_CLOSE, stdio),
                        (os.POSIX_SPAWN_CLOSE, stderr),
                    ],
                    setsid=True,
                    setsigmask=(),
                    setsigdef=DEFAULT_SIGNALS,
                )
            except OSError as e:
                raise SpawnFailed(
                    f"cannot execute {program.argv[0]}: {e.strerror or e}"
                ) from e
        readEnd, writeEnd = os.pipe()
        try:
            pid = os.fork()
            if pid == 0:
                os.close(readEnd)
                runChild(program, stdio, stderr, env, writeEnd)
            os.close(writeEnd)
            failure = b""
            while chunk := os.read(readEnd, 4096):
                failure += chunk
        finally:
            os.close(readEnd)
        if failure:
            os.waitpid(pid, 0)
            raise SpawnFailed(failure.decode("utf-8", "replace"))
        return pid

    def send(self, message: dict[str, Any]) -> None:
        """
        Send one message to netd (blocking: netd reads promptly).

        @param message: The message.
        """
        self.sock.send(json.dumps(message).encode("ascii"))

    def spawn(self, request: dict[str, Any], fds: list[int]) -> None:
        """
        Fork and run the program for one spawn request; report the pid or
        why not.

        @param request: The request.
        @param fds: The descriptors that came with it (closed here).
        """
        rid = request.get("id")
        try:
            if len(fds) != 2:
                self.send({"id": rid, "error": "a spawn needs two descriptors"})
                return
            env = connectionEnvironment(self.program, request.get("env"))
            try:
                pid = self.launch(fds[0], fds[1], env)
            except SpawnFailed as e:
                self.send({"id": rid, "error": str(e)})
                return
            pidfd = os.pidfd_open(pid)
            self.children[pid] = pidfd
            self.selector.register(pidfd, selectors.EVENT_READ, pid)
            self.send({"id": rid, "pid": pid})
        except OSError as e:
            self.send({"id": rid, "error": f"cannot fork: {e.strerror or e}"})
        finally:
            for fd in fds:
                os.close(fd)

    def kill(self, request: dict[str, Any]) -> None:
        """
        Signal one of its own running children (and its process group).

        @param request: The request.
        """
        pid, number = request.get("pid"), request.get("signal")
        if pid not in self.children or number not in _SIGNALS:
            return
        try:
            os.killpg(pid, number)
        except OSError:
            with contextlib.suppress(OSError):
                os.kill(pid, number)

    def reap(self, pid: int) -> None:
        """
        A child ended: collect its status and report it.

        @param pid: Its pid.
        """
        pidfd = self.children.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        self.send({"exited": pid, "status": status})

    def receive(self) -> bool:
        """
        Read and act on one message from netd.

        @return: Whether netd is still there.
        """
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
        except InterruptedError:
            return True
        except ConnectionResetError:
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        try:
            request = json.loads(data)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            for fd in fds:
                os.close(fd)
            return True
        if request.get("op") == "spawn":
            self.spawn(request, fds)
            return True
        for fd in fds:
            os.close(fd)
        if request.get("op") == "kill":
            self.kill(request)
        return True

    def run(self) -> None:
        """
        Serve until netd closes its end; then SIGTERM the children left.
        """
        self.send({"ready": True, "uid": os.geteuid()})
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    if not self.receive():
                        self.stop()
                        return
                else:
                    self.reap(key.data)

    def stop(self) -> None:
        """
        netd is gone: the children left get SIGTERM.
        """
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGTERM)


def leaveNetd(keep: set[int]) -> None:
    """
    Right after the fork: leave netd's signals and descriptors behind.

    @param keep: The descriptors to keep (besides 0, 1 and 2, which become
        C{/dev/null}; 2 is left as it is).
    """
    # Whatever netd inherited or set goes (posix_spawn resets only the
    # signals Python calls valid; glibc's own two are reset here).
    for number in range(1, signal.NSIG):
        with contextlib.suppress(OSError, ValueError):
            signal.signal(number, signal.SIG_DFL)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)


def switchOrReport(sock: socket.socket, program: Program) -> None:
    """
    Switch to the program's account; on a failure tell netd why.

    @param sock: The socket to netd.
    @param program: The program.
    @raise OSError: If the switch fails.
    """
    try:
        becomeAccount(program)
    except OSError as e:
        sock.send(
            json.dumps(
                {"ready": False, "error": f"cannot switch: {e.strerror}"}
            ).encode()
        )
        raise


def serve(sock: socket.socket, program: Program) -> NoReturn:
    """
    The whole life of a spawner process, right after the fork: leave netd's
    signals and descriptors behind, switch to the program's account, serve,
    exit.

    @param sock: Its end of the socketpair.
    @param program: What it runs.
    """
    code = 0
    try:
        leaveNetd({sock.fileno()})
        switchOrReport(sock, program)
        Helper(sock, program).run()
    except BaseException:
        code = 1
    finally:
        os._exit(code)


class DoorKeeper:
    """
    The door keeper's state (L{serveDoor}): its control socket to the main
    process, its door, and the spawners it forked.

    @ivar control: The socket to the main process: C{ready} is sent on it
        once; its end (EOF) ends the door keeper.
    @ivar door: The socket workers send channel requests to (it sends
        nothing on it).
    @ivar program: What its spawners run.
    @ivar spawners: Running spawners: pid to pidfd.
    """

    def __init__(
        self, control: socket.socket, door: socket.socket, program: Program
    ) -> None:
        self.control = control
        self.door = door
        self.program = program
        self.spawners: dict[int, int] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ, "control")
        self.selector.register(door, selectors.EVENT_READ, "door")

    def run(self) -> None:
        """
        Serve channel requests until the main process closes its end.
        """
        self.control.send(json.dumps({"ready": True, "uid": os.geteuid()}).encode())
        while True:
            for key, _ in self.selector.select():
                if key.data == "control":
                    try:
                        if not self.control.recv(MAX_MESSAGE):
                            return
                    except InterruptedError:
                        continue
                    except OSError:
                        return
                elif key.data == "door":
                    self.receive()
                else:
                    self.reap(key.data)

    def receive(self) -> None:
        """
        Read one request from the door: a channel request gets a spawner.
        """
        try:
            data, fds, _, _ = socket.recv_fds(self.door, MAX_MESSAGE, 1)
        except InterruptedError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            # Every copy of the door is closed: nothing can ask any more.
            self.selector.unregister(self.door)
            for fd in fds:
                os.close(fd)
            return
        try:
            request = json.loads(data)
        except ValueError:
            request = None
        try:
            if (
                isinstance(request, dict)
                and request.get("op") == "channel"
                and len(fds) == 1
                and len(self.spawners) < MAX_CHANNELS
            ):
                self.fork(fds[0])
        finally:
            for fd in fds:
                os.close(fd)

    def fork(self, fd: int) -> None:
        """
        Fork a spawner serving one channel.

        @param fd: The channel's socket (not consumed).
        """
        try:
            pid = os.fork()
        except OSError:
            return
        if pid == 0:
            serve(socket.socket(fileno=os.dup(fd)), self.program)
        pidfd = os.pidfd_open(pid)
        self.spawners[pid] = pidfd
        self.selector.register(pidfd, selectors.EVENT_READ, pid)

    def reap(self, pid: int) -> None:
        """
        A spawner ended (its worker closed its channel): collect it.

        @param pid: Its pid.
        """
        pidfd = self.spawners.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def serveDoor(
    control: socket.socket, door: socket.socket, program: Program
) -> NoReturn:
    """
    The whole life of a door keeper, right after the fork: leave netd's
    signals and descriptors behind, switch to the program's account, fork a
    spawner per channel request, exit when the main process closes
    C{control}. The spawners it forked live on until their channels close.

    @param control: Its end of the control socketpair.
    @param door: Its end of the door socketpair.
    @param program: What its spawners run.
    """
    code = 0
    try:
        leaveNetd({control.fileno(), door.fileno()})
        switchOrReport(control, program)
        DoorKeeper(control, door, program).run()
    except BaseException:
        code = 1
    finally:
        os._exit(code)
