# -*- test-case-name: tests.test_systemd -*-
"""
systemd integration without libsystemd: readiness and status notifications
(C{sd_notify}), the watchdog, and sockets passed by socket activation.

L{Notifier} is a tiny client of the C{NOTIFY_SOCKET} protocol: one
C{AF_UNIX} datagram of C{KEY=VALUE} lines per message, to a path or, for a
name starting with C{@}, an abstract socket. Outside systemd (no
C{NOTIFY_SOCKET}) every call does nothing.

L{Watchdog} sends C{WATCHDOG=1} from the reactor at half of
C{WATCHDOG_USEC}, so a wedged reactor stops the pings and systemd restarts
the process.

L{InheritedSockets} finds the sockets systemd passed (C{LISTEN_FDS},
C{LISTEN_FDNAMES}) and checks one against what a listener expects
(L{checkSocket}): a stream listener given a datagram socket, or the other
way round, is a clear error instead of Twisted's endless accept loop.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.systemd import ListenFDs

_FAMILIES = {
    "INET": socket.AF_INET,
    "INET6": socket.AF_INET6,
    "UNIX": socket.AF_UNIX,
}
_TYPES: dict[int, str] = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "datagram"}


class Notifier:
    """
    Sends state changes to the service manager (C{sd_notify(3)}).

    @ivar address: The C{NOTIFY_SOCKET} address (a path, or an abstract name
        with a leading NUL), or L{None} when not running under systemd.
    """

    _log = Logger()

    def __init__(self, address: str | None) -> None:
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def fromEnvironment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """
        @param environ: The environment (L{os.environ} if L{None}).
        @return: A notifier for C{NOTIFY_SOCKET}, disabled if it is unset.
        """
        if environ is None:
            environ = os.environ
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """
        Whether there is a service manager to notify.
        """
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """
        Send one message of C{KEY=VALUE} assignments.

        A failure is logged once and otherwise ignored: netd must keep serving
        when the manager goes away.

        @param assignments: e.g. C{"READY=1"}, C{"STATUS=serving"}.
        @return: Whether the message was sent.
        """
        if self.address is None:
            return False
        message = "\n".join(assignments).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(message, self.address)
        except OSError as e:
            if not self._failed:
                self._failed = True
                self._log.warn(
                    "cannot notify the service manager at {address}: {error}",
                    address=self.address.replace("\0", "@"),
                    error=e.strerror or str(e),
                )
            return False
        return True

    def ready(self, status: str) -> bool:
        """
        Every listener is up (start-up or a reload is over).

        @param status: A one-line status.
        @return: Whether the message was sent.
        """
        return self.notify("READY=1", f"STATUS={_oneLine(status)}")

    def reloading(self) -> bool:
        """
        A reload starts (C{READY=1} follows when it is over).

        @return: Whether the message was sent.
        """
        usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
        return self.notify(
            "RELOADING=1",
            "STATUS=reloading the configuration",
            f"MONOTONIC_USEC={usec}",
        )

    def stopping(self, status: str) -> bool:
        """
        Shutdown has begun.

        @param status: A one-line status.
        @return: Whether the message was sent.
        """
        return self.notify("STOPPING=1", f"STATUS={_oneLine(status)}")

    def status(self, status: str) -> bool:
        """
        @param status: A one-line status.
        @return: Whether the message was sent.
        """
        return self.notify(f"STATUS={_oneLine(status)}")

    def watchdog(self) -> bool:
        """
        Tell the manager the process is alive.

        @return: Whether the message was sent.
        """
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """
        Close the socket (a later message opens a new one).
        """
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _oneLine(text: str) -> str:
    """
    @param text: Any text.
    @return: It, on one line (a newline would end the assignment).
    """
    return " ".join(text.split())


def watchdogInterval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """
    The watchdog timeout systemd expects pings within.

    @param environ: The environment (L{os.environ} if L{None}).
    @param pid: This process's id (L{os.getpid} if L{None}).
    @return: Seconds, or L{None} if no watchdog is set for this process
        (C{WATCHDOG_USEC} unset, invalid, zero, or C{WATCHDOG_PID} naming
        another process).
    """
    if environ is None:
        environ = os.environ
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watchdogPid = environ.get("WATCHDOG_PID")
    if watchdogPid:
        if watchdogPid != str(pid if pid is not None else os.getpid()):
            return None
    return usec / 1_000_000


class Watchdog(Service):
    """
    Pings the service manager at half of the watchdog timeout.

    @ivar notifier: Where the pings go.
    @ivar interval: Seconds between pings.
    """

    # Twisted's Service declares name = None, untyped, so mypy takes it as None.
    name = "systemd-watchdog"  # type: ignore[assignment]

    def __init__(self, notifier: Notifier, timeout: float, clock: Any) -> None:
        self.notifier = notifier
        self.interval = timeout / 2
        self._call = LoopingCall(notifier.watchdog)
        self._call.clock = clock

    def startService(self) -> None:
        """
        Ping now, then every L{interval} seconds.
        """
        super().startService()
        self._call.start(self.interval, now=True)

    def stopService(self) -> None:
        """
        Stop pinging.
        """
        super().stopService()
        if self._call.running:
            self._call.stop()


class SocketActivationError(Exception):
    """
    A socket systemd was to pass is missing or not what the listener needs.
    """


class InheritedSockets:
    """
    The sockets systemd passed to this process (socket activation).

    Twisted reads C{LISTEN_FDS} once, when L{twisted.internet.endpoints} is
    imported (and removes it from the environment), so netd asks the same
    record; this is the one place that reads it.

    @ivar fds: The descriptors, in order.
    @ivar names: Their C{FileDescriptorName=}s, in order.
    """

    def __init__(self, fds: list[int], names: list[str]) -> None:
        self.fds = list(fds)
        self.names = list(names)

    @classmethod
    def fromListenFDs(cls, listenFDs: ListenFDs) -> InheritedSockets:
        """
        @param listenFDs: Twisted's record.
        @return: The same sockets.
        """
        fds = listenFDs.inheritedDescriptors()
        # inheritedNamedDescriptors() is a dict, which loses all but one of
        # several sockets sharing a name (systemd's default name is the
        # .socket unit's): read the names in order from the record itself.
        names = list(getattr(listenFDs, "_names", ()))
        if len(names) != len(fds):
            names = ["unknown"] * len(fds)
        return cls(fds, names)

    @classmethod
    def fromEnvironment(cls) -> InheritedSockets:
        """
        The sockets passed to this process.

        @return: Them (none outside socket activation).
        """
        # Private Twisted API: see tests/test_twisted_canary.py.
        from twisted.internet.endpoints import _SystemdParser

        record = getattr(_SystemdParser, "_sddaemon", None)
        if not isinstance(record, ListenFDs) or not record.inheritedDescriptors():
            record = ListenFDs.fromEnvironment()
        return cls.fromListenFDs(record)

    def find(self, name: str | None, index: int | None) -> int:
        """
        Find a passed socket.

        @param name: Its C{FileDescriptorName=}, or L{None}.
        @param index: Its position, if L{name} is L{None}.
        @return: The descriptor.
        @raise SocketActivationError: If there is no such socket.
        """
        if name is not None:
            if name in self.names:
                return self.fds[self.names.index(name)]
            what = f"no socket named {name!r}"
        else:
            assert index is not None
            if 0 <= index < len(self.fds):
                return self.fds[index]
            what = f"no socket at index {index}"
        if not self.fds:
            raise SocketActivationError(
                f"{what} was passed by systemd: no sockets were passed (start "
                "netd from its .socket unit, or set FileDescriptorName= there)"
            )
        passed = ", ".join(self.names)
        raise SocketActivationError(
            f"{what} was passed by systemd (passed: {passed}; "
            "check FileDescriptorName= in the .socket unit)"
        )


def checkSocket(fd: int, transport: str, domain: str | None) -> int:
    """
    Check that a passed socket can serve a listener, and find its family.

    @param fd: The descriptor.
    @param transport: C{"stream"} or C{"datagram"}: what the listener needs.
    @param domain: C{"INET"}, C{"INET6"}, C{"UNIX"} if the listener names
        one, or L{None}.
    @return: The socket's address family.
    @raise SocketActivationError: Saying what does not match.
    """
    try:
        skt = socket.socket(fileno=os.dup(fd))
    except OSError as e:
        raise SocketActivationError(
            f"descriptor {fd} is not a usable socket ({e.strerror or e})"
        ) from None
    try:
        socketType = skt.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        family = skt.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        found = _TYPES.get(socketType, f"type {socketType}")
        if found != transport:
            hint = (
                "type=datagram (ListenDatagram= in the .socket unit)"
                if found == "datagram"
                else "type=stream (ListenStream= in the .socket unit)"
            )
            raise SocketActivationError(
                f"systemd passed a {found} socket but this listener is "
                f"{transport}: fix the listener ({hint}) or the .socket unit"
            )
        if domain is not None and _FAMILIES[domain] != family:
            raise SocketActivationError(
                f"systemd passed a socket of family {socket.AddressFamily(family).name}"
                f", not AF_{domain}"
            )
        if transport == "stream":
            if not skt.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                raise SocketActivationError(
                    "systemd passed a stream socket that is not listening "
                    "(Accept=yes in the .socket unit? netd needs Accept=no)"
                )
        elif family not in (socket.AF_INET, socket.AF_INET6):
            raise SocketActivationError(
                "only INET and INET6 datagram sockets can be adopted"
            )
        return family
    finally:
        skt.close()
