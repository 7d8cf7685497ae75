# -*- test-case-name: tests.test_spawn -*-
"""
netd's side of a spawner (L{netd.spawn.helper}): forks it, asks it to
start children, hears their pids and exit statuses.

The socketpair is C{SOCK_SEQPACKET} (one record per message, descriptors
attached to it), which Twisted has no transport for, so L{Spawner} is its
own small L{IReadDescriptor} on the reactor and sends with C{sendmsg}
(records are tiny; the kernel buffer takes them at once).

With C{workers = N}, the main process forks a L{DoorSpawner} per exec
service while it is root, and hands its door to the workers that serve the
service; there a L{Spawner} given the door (C{door=}) asks the door keeper
for a spawner of its own instead of forking one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.spawn.helper import MAX_MESSAGE, Program, serve, serveDoor


class SpawnError(Exception):
    """
    A child could not be started (the reason is in words).
    """


@implementer(IReadDescriptor)
class Spawner:
    """
    One spawner process and the children it runs.

    @ivar program: What it runs.
    @ivar reactor: The reactor.
    @ivar pid: The spawner's pid, once forked.
    @ivar uid: The user id the spawner runs as (from its first message).
    @ivar exits: Called with C{(pid, status)} for each child that ends.
    """

    _log = Logger()
    pid: int | None = None
    uid: int | None = None

    def __init__(
        self,
        program: Program,
        reactor: Any,
        name: str,
        forkHelper: Any = os.fork,
        door: int | None = None,
    ) -> None:
        """
        @param program: What it runs.
        @param reactor: The reactor.
        @param name: The service's name, for the log.
        @param forkHelper: L{os.fork}, or a replacement in tests.
        @param door: A door keeper's door (L{DoorSpawner}) to ask for the
            spawner, instead of forking one; L{None}: fork it.
        """
        self.program = program
        self.reactor = reactor
        self.name = name
        self.door = door
        self._fork = forkHelper
        self._sock: socket.socket | None = None
        self._pending: dict[int, defer.Deferred[int]] = {}
        self._exits: dict[int, Callable[[int], None]] = {}
        self._nextId = 0
        self._reaped: list[defer.Deferred[None]] = []
        self.ready: defer.Deferred[int | None] = defer.Deferred()

    @property
    def running(self) -> bool:
        """
        Whether the spawner process is there to ask.
        """
        return self._sock is not None

    def start(self) -> None:
        """
        Fork the spawner process (or, given a L{door}, ask its door keeper
        for one) and start reading its messages.

        @raise OSError: If it cannot be forked, or the door is closed.
        """
        if self._sock is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if self.door is not None:
            try:
                with socket.socket(fileno=os.dup(self.door)) as door:
                    socket.send_fds(door, [b'{"op": "channel"}'], [theirs.fileno()])
            except OSError:
                ours.close()
                raise
            finally:
                theirs.close()
            self._adopt(ours, None)
            return
        pid = self._fork()
        if pid == 0:
            ours.close()
            self._serve(theirs)
        theirs.close()
        self._adopt(ours, pid)

    def _serve(self, sock: socket.socket) -> NoReturn:
        """
        In the forked process: be the spawner.

        @param sock: Its end of the socketpair.
        """
        serve(sock, self.program)

    def _adopt(self, sock: socket.socket, pid: int | None) -> None:
        """
        Start reading the spawner's messages.

        @param sock: netd's end of its socketpair.
        @param pid: Its pid, if netd forked it (and so reaps it).
        """
        sock.setblocking(False)
        self._sock = sock
        self.pid = pid
        self.reactor.addReader(self)

    def spawn(
        self, stdio: int, stderr: int, env: Mapping[str, str]
    ) -> defer.Deferred[int]:
        """
        Start one child.

        @param stdio: Its stdin and stdout (not consumed: the spawner gets
            a copy).
        @param stderr: Its stderr (not consumed).
        @param env: The connection's variables (C{REMOTE_ADDR}, ...).
        @return: A L{Deferred} firing with the child's pid, or failing with
            L{SpawnError}.
        """
        if self._sock is None:
            return defer.fail(SpawnError("the spawner is not running"))
        self._nextId += 1
        rid = self._nextId
        message = json.dumps({"op": "spawn", "id": rid, "env": dict(env)})
        try:
            socket.send_fds(self._sock, [message.encode("ascii")], [stdio, stderr])
        except OSError as e:
            return defer.fail(SpawnError(f"cannot reach the spawner: {e.strerror}"))
        d: defer.Deferred[int] = defer.Deferred()
        self._pending[rid] = d
        return d

    def onExit(self, pid: int, callback: Callable[[int], None]) -> None:
        """
        Be told when a child ends.

        @param pid: The child.
        @param callback: Called with its raw wait status.
        """
        self._exits[pid] = callback

    def kill(self, pid: int, number: int = signal.SIGTERM) -> None:
        """
        Signal a child and its process group (through the spawner, which
        may run as another user).

        @param pid: The child.
        @param number: The signal.
        """
        if self._sock is None:
            return
        message = json.dumps({"op": "kill", "pid": pid, "signal": int(number)})
        with contextlib.suppress(OSError):
            self._sock.send(message.encode("ascii"))

    def fileno(self) -> int:
        """
        @return: The socket's descriptor (-1 once closed).
        """
        return self._sock.fileno() if self._sock is not None else -1

    def logPrefix(self) -> str:
        """
        @return: For Twisted's log.
        """
        return "spawner"

    def doRead(self) -> None:
        """
        Read every message waiting.
        """
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.reactor.removeReader(self)
                self.connectionLost(Failure(SpawnError("the spawner exited")))
                return
            try:
                message = json.loads(data)
            except ValueError:
                continue
            self._dispatch(message)
            sock = self._sock

    def _dispatch(self, message: dict[str, Any]) -> None:
        """
        Act on one message from the spawner.

        @param message: The message.
        """
        if "ready" in message:
            if message["ready"]:
                self.uid = message.get("uid")
                self.ready.callback(self.uid)
            else:
                self._log.error(
                    "{service}: the spawner failed to start: {error}",
                    service=self.name,
                    error=message.get("error"),
                )
            return
        if "exited" in message:
            callback = self._exits.pop(message["exited"], None)
            if callback is not None:
                callback(message["status"])
            return
        d = self._pending.pop(message.get("id", -1), None)
        if d is None:
            return
        if "pid" in message:
            d.callback(message["pid"])
        else:
            d.errback(SpawnError(message.get("error", "unknown error")))

    def connectionLost(self, reason: Failure) -> None:
        """
        The spawner is gone: fail what waits on it, collect its status.

        @param reason: Why.
        """
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(SpawnError("the spawner exited"))
        self._reapHelper()

    def stop(self) -> defer.Deferred[None]:
        """
        Close the socket: the spawner SIGTERMs the children left and exits.

        @return: A L{Deferred} that fires once the spawner process is reaped
            (or, after 2 seconds, given up on).
        """
        if self._sock is not None:
            self.reactor.removeReader(self)
            self.connectionLost(Failure(SpawnError("stopped")))
        if self.pid is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._reaped.append(d)
        return d

    def _reapHelper(self, attempts: int = 200) -> None:
        """
        Collect the spawner's exit status (it is netd's child, not one
        Twisted's reaper knows), polling for up to 2 seconds.

        @param attempts: Polls left.
        """
        if self.pid is None:
            return
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid = self.pid
        if pid or not attempts:
            if not pid:
                self._log.warn(
                    "{service}: the spawner (pid {pid}) did not exit",
                    service=self.name,
                    pid=self.pid,
                )
            self.pid = None
            reaped, self._reaped = self._reaped, []
            for d in reaped:
                d.callback(None)
        else:
            self.reactor.callLater(0.01, self._reapHelper, attempts - 1)


class DoorSpawner(Spawner):
    """
    A door keeper (L{netd.spawn.helper.serveDoor}), forked by the main
    process of a netd with workers while it is root: it switches to the
    program's account at once and forks a spawner for each channel a worker
    asks for on its door (L{Spawner} with C{door=}).

    Its control socket (this object's L{fileno}) is the main process's
    alone: it carries the C{ready} message, and closing it ends the door
    keeper. The door (L{doorFileno}) is what the workers inherit.
    """

    _door: socket.socket | None = None
    _theirDoor: socket.socket | None = None

    def start(self) -> None:
        """
        Fork the door keeper.

        @raise OSError: If it cannot be forked.
        """
        if self._sock is not None:
            return
        self._door, self._theirDoor = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_SEQPACKET
        )
        try:
            super().start()
        finally:
            self._theirDoor.close()
            self._theirDoor = None
            if self._sock is None:
                self._door.close()
                self._door = None

    def _serve(self, sock: socket.socket) -> NoReturn:
        """
        In the forked process: be the door keeper.

        @param sock: Its end of the control socketpair.
        """
        assert self._door is not None and self._theirDoor is not None
        self._door.close()
        serveDoor(sock, self._theirDoor, self.program)

    def doorFileno(self) -> int:
        """
        @return: The door's descriptor, for the workers (-1 once closed).
        """
        return self._door.fileno() if self._door is not None else -1

    def spawn(
        self, stdio: int, stderr: int, env: Mapping[str, str]
    ) -> defer.Deferred[int]:
        """
        A door keeper starts no programs itself.

        @return: A failed L{Deferred}.
        """
        return defer.fail(SpawnError("a door keeper starts no programs"))

    def connectionLost(self, reason: Failure) -> None:
        """
        The control socket is closed (or the door keeper is gone): close the
        door too.

        @param reason: Why.
        """
        door, self._door = self._door, None
        if door is not None:
            door.close()
        super().connectionLost(reason)
