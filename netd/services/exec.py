# -*- test-case-name: tests.test_exec -*-
"""
The exec service (inetd's program lines): a program per connection, or one
program at a time per datagram socket.

C{mode = "nowait"} (stream listeners): for each admitted connection,
L{ExecProtocol} stops netd reading the socket, and the program gets it as
stdin and stdout (made blocking, as inetd programs expect). netd keeps the
connection as an open session until the program exits, so every session
limit applies: C{max_sessions} is the most programs at once,
C{max_sessions_per_peer} per source, allow/deny before anything is
started, C{max_duration} and the drain at stop end the program (SIGTERM,
then SIGKILL after C{kill_grace} seconds; L{ExecProtocol.stopSession}),
and C{idle_timeout} looks at the kernel's byte counts of the socket
(C{TCP_INFO}; L{tcpCounts}), since the bytes never pass through netd.

C{mode = "wait"} (datagram listeners, e.g. TFTP): L{ExecDatagram} stops
Twisted reading the UDP socket and watches it for readability itself; when
a datagram arrives (peeked, not read, so that the program receives it), the
socket is handed to one program as stdin and stdout, and netd does not
look at it again until the program exits.

Every program is started by the service's spawner (L{netd.spawn}), forked
before netd drops root and switched at once to the service's C{user}. With
C{workers = N} the main process forks the service's door keeper
(L{HeldSpawner}) before the drop and hands its door to worker 0, whose
supervisor asks it for a spawner instead of forking one. Its
stderr is a socket netd reads: one log event per line, at most
C{stderr_lines} per program, each cut at 1,024 bytes. A program that fails
(non-zero status or a signal, or cannot be started) within a second of
starting, ten times in a row, makes the service refuse new connections for
ten seconds, logged once (L{ExecSupervisor.throttled}).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import stat
import struct
import weakref
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.datagrams import ServiceDatagramProtocol
from netd.descriptions import DatagramListener
from netd.privileges import resolveAccount
from netd.servicetype import ServiceContext, ServiceType, isHeld
from netd.settings import Problem, Setting, boolean, describe, integer, number
from netd.spawn.client import DoorSpawner, Spawner, SpawnError
from netd.spawn.helper import Program

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# A program that fails this soon after starting, this many times in a row,
# makes the service refuse new work for THROTTLE_SECONDS.
QUICK_EXIT = 1.0
QUICK_FAILURES = 10
THROTTLE_SECONDS = 10.0

MAX_STDERR_LINE = 1024

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked, tcpi_bytes_received.
_TCP_INFO_BYTES = struct.Struct("=QQ")
_TCP_INFO_BYTES_OFFSET = 120
# tcpi_state values (TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING, TCP_TIME_WAIT;
# TCP_FIN_WAIT2, TCP_TIME_WAIT).
_PEER_FIN_STATES = frozenset({8, 9, 11, 6})
_OUR_FIN_ACKED_STATES = frozenset({5, 6})


def command(value: Any) -> tuple[str, ...]:
    """
    A converter accepting an argv list whose first item is an absolute path.

    @param value: The TOML value.
    @return: The argv.
    @raise ValueError: If it is not a non-empty list of strings, or its
        program is not an absolute path.
    """
    expected = "expected an array of strings (an argv, never a shell line)"
    if isinstance(value, str):
        raise ValueError(
            f"{expected}, got a string: write it as an array, e.g. "
            '["/usr/bin/git", "daemon", "--inetd", "/srv/git"]'
        )
    if not isinstance(value, list) or not value:
        got = describe(value) if value != [] else "an empty array"
        raise ValueError(f"{expected}, got {got}")
    for item in value:
        if not isinstance(item, str) or "\0" in item:
            raise ValueError(f"{expected}, got an item that is {describe(item)}")
    if not os.path.isabs(value[0]):
        raise ValueError(
            f"the program {value[0]!r} must be an absolute path "
            "(there is no PATH search), e.g. /usr/bin/" + os.path.basename(value[0])
        )
    return tuple(value)


def mode(value: Any) -> str:
    """
    A converter accepting C{"nowait"} or C{"wait"}.

    @param value: The TOML value.
    @return: It.
    @raise ValueError: Otherwise.
    """
    if value not in ("nowait", "wait"):
        got = repr(value) if isinstance(value, str) else describe(value)
        raise ValueError(f'expected "nowait" or "wait", got {got}')
    return str(value)


def environment(value: Any) -> tuple[tuple[str, str], ...]:
    """
    A converter accepting a table of environment variables.

    @param value: The TOML value.
    @return: C{(name, value)} pairs.
    @raise ValueError: If a name or value is not acceptable.
    """
    if not isinstance(value, dict):
        raise ValueError(
            f'expected a table of strings such as {{ LANG = "C" }}, got {describe(value)}'
        )
    pairs = []
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"{key!r} is not an environment variable name")
        if not isinstance(item, str) or "\0" in item:
            raise ValueError(f"{key}: the value must be a string, got {describe(item)}")
        pairs.append((key, item))
    return tuple(pairs)


def optionalName(value: Any) -> str | None:
    """
    A converter accepting a user or group name (or number), or C{""}.

    @param value: The TOML value.
    @return: The name, or L{None} for C{""}.
    @raise ValueError: If it is not a string.
    """
    if not isinstance(value, str):
        raise ValueError(
            f"expected a user or group name or number, got {describe(value)}"
        )
    return value or None


def directory(value: Any) -> str:
    """
    A converter accepting an absolute directory path.

    @param value: The TOML value.
    @return: It.
    @raise ValueError: If it is not an absolute path.
    """
    if not isinstance(value, str) or not os.path.isabs(value):
        got = repr(value) if isinstance(value, str) else describe(value)
        raise ValueError(f"expected an absolute path, got {got}")
    return value


def tcpCounts(skt: Any) -> tuple[int, int] | None:
    """
    The bytes a TCP socket has received and sent (and had acknowledged),
    from the kernel.

    @param skt: The socket.
    @return: C{(received, sent)}, or L{None} if it is not TCP or the kernel
        says nothing.
    """
    try:
        info = skt.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCP_INFO_BYTES_OFFSET + _TCP_INFO_BYTES.size:
        return None
    acked, received = _TCP_INFO_BYTES.unpack_from(info, _TCP_INFO_BYTES_OFFSET)
    # The kernel counts sequence numbers: a FIN received, or sent and
    # acknowledged, is one more than the bytes.
    state = info[0]
    if state in _PEER_FIN_STATES and received:
        received -= 1
    if state in _OUR_FIN_ACKED_STATES and acked:
        acked -= 1
    return received, acked


def describeStatus(status: int) -> tuple[str, dict[str, Any]]:
    """
    Say how a child ended.

    @param status: Its raw wait status.
    @return: Words (C{"exited with status 1"}, C{"killed by SIGTERM"}) and
        the fields for the log event (C{exitStatus} or C{signal}).
    """
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exited with status {code}", {"exitStatus": code, "signal": None}
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name}", {"exitStatus": None, "signal": name}


def addressVariables(prefix: str, address: Any) -> dict[str, str]:
    """
    C{REMOTE_ADDR}/C{REMOTE_PORT} (or C{LOCAL_...}) for an address.

    @param prefix: C{"REMOTE"} or C{"LOCAL"}.
    @param address: An L{IAddress}, or a C{(host, port, ...)} tuple.
    @return: The variables (none for a UNIX address).
    """
    if isinstance(address, tuple):
        host, port = address[0], address[1]
    else:
        host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None or port is None:
        return {}
    return {f"{prefix}_ADDR": str(host), f"{prefix}_PORT": str(port)}


def buildProgram(name: str, settings: Mapping[str, Any]) -> Program:
    """
    The L{Program} a service's spawner runs.

    @param name: The service's name.
    @param settings: Its settings.
    @return: The program.
    @raise KeyError: If its user or group does not exist.
    """
    account = resolveAccount(settings["user"], settings["group"])
    env = {"PATH": DEFAULT_PATH}
    env.update(settings["env"])
    env["NETD_SERVICE"] = name
    rlimits = tuple(
        (key, settings[f"rlimit_{key}"])
        for key in ("as", "cpu", "nofile")
        if settings[f"rlimit_{key}"]
    )
    return Program(
        argv=settings["command"],
        uid=account.uid if account is not None else None,
        gid=account.gid if account is not None else None,
        groups=account.groups if account is not None else (),
        environment=tuple(env.items()),
        directory=settings["directory"],
        rlimits=rlimits,
        nice=settings["nice"] or None,
    )


class _StderrReader(Protocol):
    """
    A program's stderr: one log event per line, bounded.

    @ivar supervisor: The service's supervisor.
    @ivar pid: The program's pid, once known.
    """

    _log = Logger()
    pid: int | None = None

    def __init__(self, supervisor: ExecSupervisor) -> None:
        self.supervisor = supervisor
        self._buffer = b""
        self._lines = 0
        self._cutShown = False
        self._skipping = False
        self._early: list[bytes] | None = []

    def started(self, pid: int | None) -> None:
        """
        The program's pid is known (L{None}: it did not start): log the
        lines that came before the spawner's reply.

        @param pid: The pid.
        """
        self.pid = pid
        early, self._early = self._early, None
        for line in early or ():
            self._emit(line)

    def dataReceived(self, data: bytes) -> None:
        """
        Log each complete line; keep a partial one (at most one line long).

        @param data: Bytes the program wrote to stderr.
        """
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            self._skipping = False
            data = data[end + 1 :]
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_STDERR_LINE:
            # Log its first 1,024 bytes now, drop the rest of it.
            lines.append(self._buffer)
            self._buffer = b""
            self._skipping = True
        for line in lines:
            self._emit(line)

    def _emit(self, line: bytes) -> None:
        """
        Log one line, unless this program has logged its share.

        @param line: The line, without its newline.
        """
        if self._early is not None:
            if len(self._early) <= self.supervisor.stderrLines:
                self._early.append(line)
            return
        limit = self.supervisor.stderrLines
        self._lines += 1
        if self._lines > limit:
            if not self._cutShown:
                self._cutShown = True
                self._log.warn(
                    "{service} pid {pid}: more than {limit} stderr lines, "
                    "the rest is discarded",
                    service=self.supervisor.context.name,
                    pid=self.pid,
                    limit=limit,
                )
            return
        text = line[:MAX_STDERR_LINE].rstrip(b"\r").decode("utf-8", "replace")
        self._log.info(
            "{service} pid {pid} stderr: {line}",
            service=self.supervisor.context.name,
            pid=self.pid,
            line=text,
        )

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        """
        The program (and every process sharing its stderr) is done: log a
        last unterminated line.

        @param reason: Why.
        """
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = b""


class Child:
    """
    One running program.

    @ivar pid: Its pid.
    @ivar started: When it was started (reactor seconds).
    @ivar stderr: Its stderr reader.
    """

    def __init__(self, pid: int, started: float, stderr: _StderrReader) -> None:
        self.pid = pid
        self.started = started
        self.stderr = stderr
        self.ended: defer.Deferred[int] = defer.Deferred()
        self._killTimer: Any = None
        # A wait-mode program is drained by the supervisor at stop; a
        # nowait one by its session (netd.drain), which says why.
        self.drainedBySupervisor = False

    def cancelKill(self) -> None:
        """
        Forget a pending SIGKILL.
        """
        if self._killTimer is not None and self._killTimer.active():
            self._killTimer.cancel()
        self._killTimer = None


class ExecSupervisor(Service):
    """
    An exec service's spawner and children: starts the spawner (as root if
    netd is, before it drops), starts programs, counts quick failures,
    and at stop lets the programs of C{mode = "wait"} listeners finish
    within the drain timeout before the spawner is closed (those of
    C{nowait} sessions are drained with the sessions).

    @ivar context: The service instance.
    @ivar spawner: Its spawner.
    @ivar children: The running programs, by pid.
    """

    _log = Logger()

    def __init__(self, context: ServiceContext, spawner: Spawner | None = None) -> None:
        self.context = context
        settings = context.settings
        self.setName(f"{context.name}/spawner")
        self.spawner = spawner or Spawner(
            buildProgram(context.name, settings),
            context.reactor,
            context.name,
            door=context.heldDescriptor,
        )
        self.killGrace: float = settings["kill_grace"]
        self.stderrLines: int = settings["stderr_lines"]
        self.children: dict[int, Child] = {}
        self._quickFailures = 0
        self._throttledUntil = 0.0
        self._stopping: defer.Deferred[None] | None = None

    def privilegedStartService(self) -> None:
        """
        Fork the spawner now, while netd may still be root.
        """
        Service.privilegedStartService(self)
        self._startSpawner()

    def startService(self) -> None:
        """
        Fork the spawner unless L{privilegedStartService} did.
        """
        Service.startService(self)
        self._startSpawner()

    def _startSpawner(self) -> None:
        if self.spawner.running:
            return
        program = self.spawner.program
        if self.spawner.door is None:
            # A single netd's door keeper is forked just before (its
            # descriptor exists only now).
            self.spawner.door = self.context.heldDescriptor
        if self.spawner.door is not None:
            # The door keeper was forked as root: by this process before
            # the instances started, or by the main process of a worker.
            try:
                self.spawner.start()
            except OSError as e:
                self._log.error(
                    "{service}: cannot reach the spawner the main process "
                    "forked ({error}): its programs cannot start; restart netd",
                    service=self.context.name,
                    error=e.strerror or str(e),
                )
            return
        self.spawner.start()
        if program.uid is not None and os.geteuid() not in (0, program.uid):
            self._log.error(
                "{service}: started after netd dropped root (a reload?): its "
                "programs cannot run as uid {uid}; restart netd to apply it",
                service=self.context.name,
                uid=program.uid,
            )

    def throttled(self) -> bool:
        """
        @return: Whether new programs are refused for now (too many quick
            failures in a row).
        """
        return bool(self._throttledUntil) and (
            self.context.reactor.seconds() < self._throttledUntil
        )

    def _recordEnd(self, runTime: float, failed: bool) -> None:
        """
        Count a program that ended, throttling after too many quick failures.

        @param runTime: Seconds it ran.
        @param failed: Whether it failed (or could not start).
        """
        if not (failed and runTime < QUICK_EXIT):
            self._quickFailures = 0
            return
        self._quickFailures += 1
        if self._quickFailures >= QUICK_FAILURES and not self.throttled():
            self._quickFailures = 0
            self._throttledUntil = self.context.reactor.seconds() + THROTTLE_SECONDS
            self._log.error(
                "{service}: the program failed within {quick:g}s of starting "
                "{count} times in a row; refusing new connections for {pause:g}s",
                service=self.context.name,
                quick=QUICK_EXIT,
                count=QUICK_FAILURES,
                pause=THROTTLE_SECONDS,
            )

    def run(self, stdio: int, env: Mapping[str, str]) -> defer.Deferred[Child]:
        """
        Start a program with C{stdio} as its stdin and stdout.

        @param stdio: The descriptor (not consumed).
        @param env: The connection's variables.
        @return: A L{Deferred} firing with the L{Child} (whose C{ended}
            fires with its wait status), or failing with L{SpawnError}.
        """
        reactor = self.context.reactor
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        reader = _StderrReader(self)
        try:
            theirs.shutdown(socket.SHUT_RD)
            ours.shutdown(socket.SHUT_WR)
            reactor.adoptStreamConnection(
                ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: reader)
            )
            started = reactor.seconds()
            d = self.spawner.spawn(stdio, theirs.fileno(), env)
        finally:
            ours.close()
            theirs.close()

        def spawned(pid: int) -> Child:
            reader.started(pid)
            child = Child(pid, started, reader)
            self.children[pid] = child
            self.spawner.onExit(pid, lambda status: self._ended(child, status))
            return child

        def failed(reason: Failure) -> Failure:
            reader.started(None)
            self._recordEnd(0.0, True)
            return reason

        return d.addCallbacks(spawned, failed)

    def _ended(self, child: Child, status: int) -> None:
        """
        A program ended: count it and tell whoever waits on it.

        @param child: The program.
        @param status: Its raw wait status.
        """
        child.cancelKill()
        self.children.pop(child.pid, None)
        runTime = self.context.reactor.seconds() - child.started
        self._recordEnd(runTime, status != 0)
        child.ended.callback(status)
        if self._stopping is not None and not self.children:
            self._finishStop()

    def terminate(self, child: Child) -> None:
        """
        End a program: SIGTERM now, SIGKILL after C{kill_grace} seconds.

        @param child: The program.
        """
        if child.pid not in self.children or child._killTimer is not None:
            return
        self.spawner.kill(child.pid, signal.SIGTERM)
        child._killTimer = self.context.reactor.callLater(
            self.killGrace, self._kill, child
        )

    def _kill(self, child: Child) -> None:
        child._killTimer = None
        if child.pid in self.children:
            self._log.warn(
                "{service} pid {pid} still running {grace:g}s after SIGTERM: SIGKILL",
                service=self.context.name,
                pid=child.pid,
                grace=self.killGrace,
            )
            self.spawner.kill(child.pid, signal.SIGKILL)

    def stopService(self) -> defer.Deferred[None]:
        """
        Wait for the running programs (up to the drain timeout, then
        SIGTERM, then SIGKILL), then close the spawner.

        @return: A L{Deferred} that fires when the spawner is closed.
        """
        Service.stopService(self)
        stopping: defer.Deferred[None] = defer.Deferred()
        self._stopping = stopping
        if not self.children:
            # _finishStop forgets self._stopping: return the Deferred itself.
            self._finishStop()
            return stopping
        reactor = self.context.reactor
        deadline = reactor.callLater(self.context.drainTimeout, self._terminateAll)
        last = reactor.callLater(
            self.context.drainTimeout + self.killGrace + 5, self._finishStop
        )

        def cancel(result: Any) -> Any:
            for timer in (deadline, last):
                if timer.active():
                    timer.cancel()
            return result

        return self._stopping.addBoth(cancel)

    def _terminateAll(self) -> None:
        for child in list(self.children.values()):
            if child.drainedBySupervisor:
                self.terminate(child)

    def _finishStop(self) -> None:
        d, self._stopping = self._stopping, None
        stopped = self.spawner.stop()
        if d is not None:
            stopped.chainDeferred(d)


_supervisors: weakref.WeakKeyDictionary[ServiceContext, ExecSupervisor] = (
    weakref.WeakKeyDictionary()
)


def supervisorFor(context: ServiceContext) -> ExecSupervisor:
    """
    The supervisor of a service instance (made on first use, shared by its
    listeners).

    @param context: The instance.
    @return: Its L{ExecSupervisor}.
    """
    supervisor = _supervisors.get(context)
    if supervisor is None:
        supervisor = _supervisors[context] = ExecSupervisor(context)
    return supervisor


class ExecProtocol(Protocol):
    """
    One C{nowait} connection: the program gets the socket; netd keeps the
    session open (and its limits counting) until the program exits.

    @ivar supervisor: The service's supervisor.
    @ivar child: The program, once started.
    """

    # The L{netd.sessions.Session} around this protocol (or a plain
    # transport, in tests).
    transport: Any
    child: Child | None = None
    _socket: Any = None
    _stopRequested = False

    def __init__(self, supervisor: ExecSupervisor) -> None:
        self.supervisor = supervisor
        self._fields: dict[str, Any] = {}

    def connectionMade(self) -> None:
        """
        Stop reading the socket, make it blocking and start the program on
        it (unless the service is throttled).
        """
        transport = self.transport
        transport.stopReading()
        if self.supervisor.throttled():
            self._setReason("refused: the program keeps failing at start (throttled)")
            transport.loseConnection()
            return
        self._socket = transport.getHandle()
        self._socket.setblocking(True)
        env = addressVariables("REMOTE", transport.getPeer())
        env.update(addressVariables("LOCAL", transport.getHost()))
        self.supervisor.run(self._socket.fileno(), env).addCallbacks(
            self._started, self._failed
        )

    def _setReason(self, reason: str) -> None:
        """
        Give the session event its reason, after any of netd's own.

        @param reason: Words.
        """
        previous = getattr(self.transport, "closeReason", None)
        with contextlib.suppress(AttributeError):
            self.transport.closeReason = f"{previous}; {reason}" if previous else reason

    def _started(self, child: Child) -> None:
        self.child = child
        self._fields["pid"] = child.pid
        child.ended.addCallback(self._ended)
        if self._stopRequested:
            self.supervisor.terminate(child)

    def _failed(self, reason: Failure) -> None:
        reason.trap(SpawnError)
        self._fields["pid"] = None
        self.supervisor._log.error(
            "{service}: cannot start {program}: {error}",
            service=self.supervisor.context.name,
            program=self.supervisor.spawner.program.argv[0],
            error=reason.getErrorMessage(),
        )
        self._setReason(f"cannot start the program: {reason.getErrorMessage()}")
        self.transport.loseConnection()

    def _ended(self, status: int) -> None:
        """
        The program exited: close netd's copy of the socket.

        @param status: Its raw wait status.
        """
        assert self.child is not None
        words, fields = describeStatus(status)
        runTime = self.supervisor.context.reactor.seconds() - self.child.started
        self._fields.update(fields, runTime=runTime)
        self.refreshCounters()
        self._setReason(f"pid {self.child.pid} {words} after {runTime:.3f}s")
        self.child = None
        if self._socket is not None:
            self._socket.setblocking(False)
        self.transport.loseConnection()

    def stopSession(self) -> None:
        """
        netd ends the session (max duration, drain): the program gets
        SIGTERM, then SIGKILL after C{kill_grace}; the connection closes
        when it has exited.
        """
        self._stopRequested = True
        if self.child is not None and not self.supervisor.spawner.running:
            # The spawner is gone (it cannot have died but with netd): no
            # exit will be reported, so close now.
            self.transport.loseConnection()
        elif self.child is not None:
            self.supervisor.terminate(self.child)
        elif self._socket is None or "pid" in self._fields:
            self.transport.loseConnection()

    def refreshCounters(self) -> None:
        """
        Copy the kernel's byte counts of the socket into the session's (the
        bytes never pass through netd), for its idle timeout and its event.
        """
        if self._socket is None:
            return
        counts = tcpCounts(self._socket)
        if counts is not None:
            self.transport.bytesIn, self.transport.bytesOut = counts

    def sessionFields(self) -> dict[str, Any]:
        """
        @return: The fields the session event gains: C{pid}, C{exitStatus}
            or C{signal}, C{runTime}.
        """
        return dict(self._fields)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        """
        The connection is closed: a program still running on it is ended.

        @param reason: Why.
        """
        if self.child is not None:
            self.supervisor.terminate(self.child)


class ExecFactory(Factory):
    """
    Makes an L{ExecProtocol} per connection.

    @ivar supervisor: The service's supervisor.
    """

    noisy = False

    def __init__(self, supervisor: ExecSupervisor) -> None:
        self.supervisor = supervisor

    def buildProtocol(self, addr: Any) -> ExecProtocol:
        """
        @param addr: The peer.
        @return: A new L{ExecProtocol}.
        """
        protocol = ExecProtocol(self.supervisor)
        protocol.factory = self
        return protocol


@implementer(IReadDescriptor)
class _Readable:
    """
    Watches a UDP socket for readability without reading it.

    @ivar owner: Told when a datagram is waiting.
    """

    fd = -1

    def __init__(self, owner: ExecDatagram) -> None:
        self.owner = owner

    def fileno(self) -> int:
        """
        @return: The socket's descriptor (kept: the port may be gone by the
            time the reactor is told to stop watching it).
        """
        return self.fd

    def doRead(self) -> None:
        """
        A datagram is waiting.
        """
        self.owner.readable()

    def connectionLost(self, reason: Failure) -> None:
        """
        Nothing to do: the port closes its socket itself.

        @param reason: Why.
        """

    def logPrefix(self) -> str:
        """
        @return: For Twisted's log.
        """
        return "exec-wait"


class ExecDatagram(ServiceDatagramProtocol):
    """
    One C{mode = "wait"} UDP listener: the socket goes to one program at a
    time, which reads the datagram that woke netd and any after it.

    @ivar supervisor: The service's supervisor.
    @ivar listener: The listener's description.
    @ivar child: The program that owns the socket, if any.
    """

    _log = Logger()
    child: Child | None = None
    _watching = False
    _deadline: Any = None
    _reason: str | None = None

    def __init__(
        self, context: ServiceContext, supervisor: ExecSupervisor, listener: str
    ) -> None:
        super().__init__(context)
        self.supervisor = supervisor
        self.listener = listener
        self._watcher = _Readable(self)

    def startProtocol(self) -> None:
        """
        Stop Twisted reading the socket and watch it instead, once the port
        is done starting (it starts reading after connecting its protocol).
        """
        self.context.reactor.callLater(0, self._takeOver)

    def _takeOver(self) -> None:
        if self.transport is None or self._watching or self.child is not None:
            return
        self.transport.stopReading()  # type: ignore[attr-defined]
        self._watch()

    def serviceDatagram(self, data: bytes, addr: Any) -> None:
        """
        A datagram Twisted read in the moment before L{_takeOver}: no
        program can get it.

        @param data: The payload.
        @param addr: Its source.
        """
        self.drop("arrived while the listener was starting", addr[0])

    def _watch(self) -> None:
        if not self._watching and self.transport is not None:
            self._watching = True
            self._watcher.fd = self.transport.fileno()  # type: ignore[attr-defined]
            self.context.reactor.addReader(self._watcher)

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self.context.reactor.removeReader(self._watcher)

    def stopProtocol(self) -> None:
        """
        The listener closes: stop watching (a running program keeps its
        copy of the socket until it exits).
        """
        self._unwatch()

    def _discard(self) -> None:
        """
        Read and forget the waiting datagram.
        """
        with contextlib.suppress(OSError):
            self.transport.socket.recv(65536)  # type: ignore[attr-defined]

    def readable(self) -> None:
        """
        A datagram is waiting: check its source and hand the socket to a
        program, or drop it.
        """
        skt = self.transport.socket  # type: ignore[attr-defined]
        try:
            _, addr = skt.recvfrom(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            self._discard()
            return
        self.counters.datagramsIn += 1
        reason = self.filter.check(addr[0]) if self.filter.active else None
        if reason is None and self.supervisor.throttled():
            reason = "the program keeps failing at start (throttled)"
        if reason is None and not self.supervisor.running:
            reason = "the service is stopping"
        if reason is not None:
            self._discard()
            self.drop(reason, addr[0])
            return
        self._unwatch()
        skt.setblocking(True)
        env = addressVariables("REMOTE", addr)
        env.update(addressVariables("LOCAL", skt.getsockname()))
        self.supervisor.run(skt.fileno(), env).addCallbacks(
            self._started, self._failed, callbackArgs=(addr,), errbackArgs=(addr,)
        )

    def _started(self, child: Child, addr: Any) -> None:
        self.child = child
        child.drainedBySupervisor = True
        limits = self.context.policy.limits
        if limits.maxDuration:
            self._deadline = self.context.reactor.callLater(
                limits.maxDuration, self._tooLong
            )
        child.ended.addCallback(self._ended, addr)

    def _tooLong(self) -> None:
        self._deadline = None
        self._reason = "maximum session duration reached"
        if self.child is not None:
            self.supervisor.terminate(self.child)

    def _failed(self, reason: Failure, addr: Any) -> None:
        reason.trap(SpawnError)
        self._log.error(
            "{service}: cannot start {program} for {peer}: {error}",
            service=self.context.name,
            program=self.supervisor.spawner.program.argv[0],
            peer=f"{addr[0]}:{addr[1]}",
            error=reason.getErrorMessage(),
        )
        self._resume()
        self._discard()

    def _resume(self) -> None:
        if self.transport is not None and getattr(self.transport, "socket", None):
            self.transport.socket.setblocking(False)  # type: ignore[attr-defined]
            self._watch()

    def _ended(self, status: int, addr: Any) -> None:
        """
        The program exited: take the socket back.

        @param status: Its raw wait status.
        @param addr: The source of the datagram that started it.
        """
        child, self.child = self.child, None
        assert child is not None
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        words, fields = describeStatus(status)
        runTime = self.context.reactor.seconds() - child.started
        netdReason = getattr(self, "_reason", None)
        self._reason = None
        self.counters.sessions += 1
        self._log.info(
            "{service} program for {peer} on {listener} ended after "
            "{duration:.3f}s ({reason})",
            service=self.context.name,
            peer=(
                f"{addr[0]}:{addr[1]}"
                if ":" not in addr[0]
                else f"[{addr[0]}]:{addr[1]}"
            ),
            listener=self.listener,
            duration=runTime,
            reason=(f"{netdReason}; " if netdReason else "")
            + f"pid {child.pid} {words}",
            pid=child.pid,
            runTime=runTime,
            **fields,
        )
        self._resume()


def buildStreamFactory(context: ServiceContext) -> ExecFactory:
    """
    @param context: The service instance.
    @return: A factory of L{ExecProtocol}s.
    """
    return ExecFactory(supervisorFor(context))


def buildDatagramProtocol(
    context: ServiceContext, listener: DatagramListener
) -> ExecDatagram:
    """
    @param context: The service instance.
    @param listener: The UDP listener.
    @return: Its L{ExecDatagram}.
    """
    return ExecDatagram(context, supervisorFor(context), listener.description)


def buildServices(context: ServiceContext) -> list[Service]:
    """
    @param context: The service instance.
    @return: Its supervisor (which forks the spawner).
    """
    return [supervisorFor(context)]


# In a single netd, or the main process of a netd with workers: the programs
# of the door keepers forked as root (HeldSpawner), by service name; a
# configuration reloaded after the drop may keep them (checkConfig).
_forkedAsRoot: dict[str, Program] = {}


def spawnerHeldFor(name: str, program: Program) -> bool:
    """
    Whether this process, no longer root, still has a spawner forked as
    root for a service's programs: in a single netd or the main process of
    a netd with workers, a door keeper forked for exactly this program; in a worker,
    one the main process holds (it passes its door, to the worker that
    serves the service, only for the same program).

    @param name: The service's name.
    @param program: Its programs.
    @return: Whether its programs can still run as their own user.
    """
    if name in _forkedAsRoot:
        # This process forked it (a single netd, or a main process).
        return _forkedAsRoot[name] == program
    return isHeld(name)


class HeldSpawner(Service):
    """
    An exec service's door keeper (L{DoorSpawner}), forked while netd is
    still root: in a single netd (L{InProcessServices<netd.instances.InProcessServices>}),
    or in the main process of a netd with workers, whose workers that serve
    the service inherit its door (L{fileno}). Each instance of the service
    asks it for a spawner of its own, so one rebuilt by a reload after the
    drop still runs its programs as their user. Nothing of it stays root
    unless the service's user is root (C{allow_root}).

    @ivar spawner: The door keeper.
    """

    def __init__(self, config: Any, reactor: Any) -> None:
        """
        @param config: The service's L{ServiceConfig<netd.config.ServiceConfig>}.
        @param reactor: The reactor.
        """
        self.setName(f"{config.name}/spawner")
        self.spawner = DoorSpawner(
            buildProgram(config.name, config.settings), reactor, config.name
        )

    def privilegedStartService(self) -> None:
        """
        Fork the door keeper now, while netd may still be root.
        """
        Service.privilegedStartService(self)
        self._start()

    def startService(self) -> None:
        """
        Fork the door keeper unless L{privilegedStartService} did.
        """
        Service.startService(self)
        self._start()

    def _start(self) -> None:
        if self.spawner.running:
            return
        asRoot = os.geteuid() == 0
        self.spawner.start()
        if asRoot:
            _forkedAsRoot[self.spawner.name] = self.spawner.program

    def stopService(self) -> defer.Deferred[None]:
        """
        Close the control socket and the door: the door keeper exits (the
        spawners it forked end when their workers close their channels).

        @return: A L{Deferred} firing once it is reaped.
        """
        Service.stopService(self)
        if _forkedAsRoot.get(self.spawner.name) == self.spawner.program:
            del _forkedAsRoot[self.spawner.name]
        return self.spawner.stop()

    def fileno(self) -> int:
        """
        @return: The door, for the workers (-1 if not running).
        """
        return self.spawner.doorFileno()

    def fits(self, config: Any) -> bool:
        """
        Whether its programs are those of a (reloaded) configuration of the
        service: same command, account, environment, directory and limits.

        @param config: The service's new L{ServiceConfig<netd.config.ServiceConfig>}.
        @return: Whether the workers may still be given its door.
        """
        try:
            program = buildProgram(config.name, config.settings)
        except (KeyError, ValueError, OverflowError):
            return False
        return self.spawner.running and program == self.spawner.program


def buildHeldService(config: Any, reactor: Any) -> HeldSpawner:
    """
    @param config: An exec service's L{ServiceConfig<netd.config.ServiceConfig>}.
    @param reactor: The reactor.
    @return: Its door keeper, for the main process of a netd with workers.
    """
    return HeldSpawner(config, reactor)


def _canRun(st: os.stat_result, uid: int, groups: tuple[int, ...], bit: int) -> bool:
    """
    Whether an account gets a permission on a file (as the kernel decides
    for an unprivileged process: owner bits, else group bits, else other
    bits; root gets execute if anyone does).

    @param st: The file's status.
    @param uid: The account's user id.
    @param groups: Its group ids.
    @param bit: C{1} (execute or search), C{2} (write) or C{4} (read).
    @return: Whether it may.
    """
    if uid == 0:
        return bit != 1 or bool(st.st_mode & 0o111) or stat.S_ISDIR(st.st_mode)
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in groups:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def checkProgram(path: str, uid: int, groups: tuple[int, ...]) -> str | None:
    """
    Check that a program exists, may be executed by an account, and cannot
    be changed by anyone but root and that account: it and every directory
    above it belong to one of them and are writable by neither their group
    nor others. A sticky directory owned by root (C{/tmp}) is the one
    exception above the program, as OpenSSH and sudo allow it: nobody else
    can rename or remove what root or the account owns in it, and what is
    below it must belong to one of them. The program itself directly in a
    sticky directory is still refused if anyone else could have put it
    there first (its owner is checked).

    @param path: The absolute path.
    @param uid: The account's user id.
    @param groups: Its group ids.
    @return: L{None} if it is fine, else what is wrong.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if not _canRun(st, uid, groups, 1):
        return f"{path} is not executable by uid {uid}"
    who = {0, uid}
    here = path
    while True:
        info = os.stat(here)
        if info.st_uid not in who:
            return (
                f"{here} belongs to uid {info.st_uid}: the program and the "
                f"directories above it must belong to root or to uid {uid}"
            )
        stickyRoot = (
            here != path
            and stat.S_ISDIR(info.st_mode)
            and info.st_mode & stat.S_ISVTX
            and info.st_uid == 0
        )
        if info.st_mode & 0o022 and not stickyRoot:
            return (
                f"{here} is writable by its group or by others "
                f"(mode {stat.filemode(info.st_mode)}): anyone could change what runs"
            )
        if here != path and not _canRun(info, uid, groups, 1):
            return f"uid {uid} cannot search {here}"
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def checkConfig(config: Any, services: Mapping[str, Any]) -> list[Problem]:
    """
    An exec service: its listeners fit its mode; its user is given when
    netd runs as root, and is root only with C{allow_root}; its program
    exists, may be run by that user and cannot be changed by anyone else;
    its directory exists.

    @param config: This service's L{ServiceConfig<netd.config.ServiceConfig>}.
    @param services: Every enabled service, by name.
    @return: The problems found.
    """
    settings = config.settings
    path = f"services.{config.name}"
    problems = []
    datagram = [l for l in config.listeners if isinstance(l, DatagramListener)]
    stream = [l for l in config.listeners if not isinstance(l, DatagramListener)]
    if settings["mode"] == "nowait" and datagram:
        problems.append(
            Problem(
                f"{path}.mode",
                'a udp listener needs mode = "wait" (one program at a time owns '
                "the socket, as inetd's udp wait)",
            )
        )
    if settings["mode"] == "wait" and stream:
        problems.append(
            Problem(
                f"{path}.mode",
                'mode = "wait" serves udp listeners only; stream listeners need '
                'mode = "nowait" (a program per connection)',
            )
        )
    for listener in stream:
        if listener.kind == "ssl":
            problems.append(
                Problem(
                    f"{path}.listen",
                    f"{listener.description}: an exec program cannot be given a TLS "
                    "connection (it would read the encrypted bytes); use tcp:",
                )
            )
    if not settings["command"]:
        problems.append(
            Problem(
                f"{path}.command",
                'an exec service needs command = ["/path/to/program", "arg", ...]',
            )
        )
        return problems
    try:
        account = resolveAccount(settings["user"], settings["group"])
    except (KeyError, ValueError, OverflowError) as e:
        problems.append(Problem(f"{path}.user", f"no such user or group: {e}"))
        return problems
    euid = os.geteuid()
    if account is None:
        if euid == 0:
            problems.append(
                Problem(
                    f"{path}.user",
                    "netd runs as root: give the user the program runs as "
                    '(user = "nobody", or a dedicated account)',
                )
            )
            return problems
        uid, groups = euid, tuple(os.getgroups()) + (os.getegid(),)
    else:
        uid, groups = account.uid, account.groups
        if uid == 0 and not settings["allow_root"]:
            problems.append(
                Problem(
                    f"{path}.user",
                    "the program would run as root: give another user, or set "
                    "allow_root = true if it needs root (and drops it itself)",
                )
            )
        if (
            euid != 0
            and uid != euid
            and not spawnerHeldFor(config.name, buildProgram(config.name, settings))
        ):
            if _forkedAsRoot:
                why = (
                    "netd dropped root after it started, and a spawner that runs "
                    f"programs as uid {uid} can only be forked before (the service "
                    "is new or its programs changed): restart netd to apply it"
                )
            else:
                why = (
                    f"netd does not run as root, so its programs run as its own "
                    f"user (uid {euid}), not uid {uid}: start netd as root or "
                    "leave user unset"
                )
            problems.append(Problem(f"{path}.user", why))
    problem = checkProgram(settings["command"][0], uid, groups)
    if problem is not None:
        problems.append(Problem(f"{path}.command", problem))
    if not os.path.isdir(settings["directory"]):
        problems.append(
            Problem(f"{path}.directory", f"{settings['directory']} is not a directory")
        )
    return problems


def checkNotes(config: Any, processes: int = 1) -> list[str]:
    """
    What C{--check} says about an exec service: who its programs run as,
    and through what.

    @param config: Its L{ServiceConfig<netd.config.ServiceConfig>}.
    @param processes: 1, or the number of workers.
    @return: Lines.
    """
    settings = config.settings
    account = resolveAccount(settings["user"], settings["group"])
    if account is None or os.geteuid() != 0:
        name = pwd.getpwuid(os.geteuid()).pw_name if account is None else account.name
        return [
            f"programs run as netd's own user ({name}); no privileged spawner "
            "is needed"
        ]
    if processes > 1:
        forked = (
            "their spawner is forked by the main process before netd drops root "
            "and handed to worker 0"
        )
    else:
        forked = "their spawner is forked before netd drops root"
    if account.uid == 0:
        return [f"programs run as root (allow_root): {forked}, and stays root"]
    return [
        f"programs run as {account.describe()}: {forked}, and switches to "
        f"{account.name} at once (nothing stays root)"
    ]


exec_ = ServiceType(
    name="exec",
    description="run a program per connection (nowait) or per udp socket (wait)",
    settings=(
        Setting(
            "command",
            (),
            command,
            "the program and its arguments (an argv list, never a shell line)",
        ),
        Setting(
            "mode",
            None,
            mode,
            '"nowait" (a program per connection; the default for stream listeners) '
            'or "wait" (one program owns the udp socket until it exits; the '
            "default for udp listeners)",
        ),
        Setting(
            "user",
            None,
            optionalName,
            "the user programs run as (required when netd runs as root)",
        ),
        Setting(
            "group",
            None,
            optionalName,
            "the group programs run as (default: the user's primary group)",
        ),
        Setting(
            "allow_root",
            False,
            boolean,
            'allow user = "root" (for programs that drop root themselves)',
        ),
        Setting(
            "env",
            (),
            environment,
            "extra environment variables (beside PATH, REMOTE_ADDR, REMOTE_PORT, "
            "LOCAL_ADDR, LOCAL_PORT, NETD_SERVICE)",
        ),
        Setting("directory", "/", directory, "the programs' working directory"),
        Setting(
            "rlimit_as",
            0,
            integer(0, 2**62),
            "address space limit in bytes (0: inherit)",
        ),
        Setting(
            "rlimit_cpu", 0, integer(0, 2**31), "CPU time limit in seconds (0: inherit)"
        ),
        Setting(
            "rlimit_nofile",
            0,
            integer(0, 1 << 20),
            "open file limit (0: inherit)",
        ),
        Setting("nice", 0, integer(0, 19), "scheduling niceness, 1 to 19 (0: inherit)"),
        Setting(
            "kill_grace",
            5.0,
            number(0.01, 3600),
            "seconds between SIGTERM and SIGKILL when netd ends a program",
        ),
        Setting(
            "stderr_lines",
            100,
            integer(0, 1_000_000),
            "most stderr lines logged per program (the rest is discarded)",
        ),
    ),
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=buildDatagramProtocol,
    buildServices=buildServices,
    checkConfig=checkConfig,
    checkNotes=checkNotes,
    buildHeldService=buildHeldService,
    perProcess=True,
)
