# -*- test-case-name: tests.test_chat -*-
"""
Helpers shared by the chat tests: in-memory clients, and the real
C{twistd netd} in a subprocess.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from netd.chat.commands import ChatServer
from netd.chat.tcp import ChatLineProtocol
from netd.limits import Limits
from netd.services.chat import buildStreamFactory, serverFor
from netd.sessions import Session, SessionFactory
from netd.servicetype import ServiceContext
from tests.support import makeContext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClient:
    """
    One in-memory TCP chat client: a L{StringTransport} under the real
    session wrapper and line protocol.

    @ivar session: The L{Session} wrapper.
    @ivar transport: The transport.
    @ivar protocol: The L{ChatLineProtocol}.
    """

    def __init__(
        self, session: Session, transport: StringTransport, clock: Any
    ) -> None:
        self.session = session
        self.transport = transport
        self.clock = clock
        self.protocol: ChatLineProtocol = session.wrappedProtocol

    def send(self, data: bytes | str) -> None:
        """
        Deliver bytes from the client.

        @param data: Bytes, or text (encoded as UTF-8).
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.session.dataReceived(data)
        # The rest of the reactor iteration: queued output is written.
        self.clock.advance(0)

    def say(self, *lines: str) -> None:
        """
        Send lines, each ending in C{\\n}.

        @param lines: The lines.
        """
        self.send("".join(line + "\n" for line in lines))

    def received(self) -> list[str]:
        """
        What the client has been sent since the last call, as lines.

        @return: The lines, decoded, without line endings.
        """
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return data.decode("utf-8").splitlines()

    @property
    def closed(self) -> bool:
        """
        Whether netd closed (or is closing) the connection.
        """
        return bool(self.transport.disconnecting)


class ChatHarness:
    """
    A chat service on a fake clock, with in-memory clients.

    @ivar clock: The clock.
    @ivar context: The service's context.
    @ivar server: Its L{ChatServer}.
    @ivar factory: The session-wrapped factory, as a listener would build.
    @ivar events: Chat log events.
    """

    def __init__(
        self,
        testCase: Any,
        limits: Limits | None = None,
        **settings: Any,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.events: list[dict[str, Any]] = []
        testCase.patch(ChatServer, "_log", Logger(observer=self.events.append))
        testCase.patch(Session, "_log", Logger(observer=lambda event: None))
        self.context: ServiceContext = makeContext(
            "chat", limits=limits, settings=settings, reactor=self.clock
        )
        self.server = serverFor(self.context)
        self.factory = SessionFactory(
            buildStreamFactory(self.context), self.context, "tcp:10023"
        )
        self._port = 40000
        self.clients: list[FakeClient] = []

    def connect(self, host: str = "192.0.2.1") -> FakeClient:
        """
        Connect a client.

        @param host: Its address.
        @return: The client.
        """
        self._port += 1
        peer = IPv4Address("TCP", host, self._port)
        session = self.factory.buildProtocol(peer)
        assert session is not None, "refused"
        transport = StringTransport(peerAddress=peer)
        session.makeConnection(transport)
        self.clock.advance(0)
        client = FakeClient(session, transport, self.clock)
        self.clients.append(client)
        return client

    def join(self, nick: str, host: str = "192.0.2.1") -> FakeClient:
        """
        Connect a client and set its nickname; then forget what every
        client was told so far.

        @param nick: Its nickname.
        @param host: Its address.
        @return: The client, in the default room.
        """
        client = self.connect(host)
        client.say(nick)
        for each in self.clients:
            each.transport.clear()
        return client

    def chatEvents(self, kind: str) -> list[dict[str, Any]]:
        """
        @param kind: A C{chatEvent} value (C{"join"}, C{"kick"}, ...).
        @return: The log events of that kind.
        """
        return [e for e in self.events if e.get("chatEvent") == kind]


class Netd:
    """
    The real C{twistd -n --pidfile= netd --config FILE}, in a subprocess.

    @ivar process: The subprocess.
    @ivar addresses: What it listens on, from its log: C{(service, kind)}
        to port, e.g. C{("chat", "tcp")}.
    @ivar output: Everything it logged so far.
    """

    def __init__(self, config: str, directory: str | None = None) -> None:
        self.directory = directory or tempfile.mkdtemp(prefix="netd-chat-")
        path = os.path.join(self.directory, "netd.toml")
        with open(path, "w") as f:
            f.write(config)
        environment = dict(os.environ)
        environment["PYTHONPATH"] = (
            REPO + os.pathsep + environment.get("PYTHONPATH", "")
        )
        self.logPath = os.path.join(self.directory, "netd.log")
        self._log = open(self.logPath, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "netd",
                "--config",
                path,
            ]
            # netd refuses to run as root (as CI does) unless told to.
            + (["--allow-root"] if os.geteuid() == 0 else []),
            cwd=self.directory,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.addresses: dict[tuple[str, str], int] = {}

    @property
    def output(self) -> str:
        """
        The log so far.
        """
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def waitListening(self, count: int, timeout: float = 20.0) -> None:
        """
        Wait for C{count} "listening on" lines.

        @param count: How many listeners to expect.
        @param timeout: Seconds to wait.
        @raise AssertionError: If they do not all appear in time.
        """
        deadline = time.monotonic() + timeout
        pattern = re.compile(r"(\S+) listening on (\w+6?):(\[[^\]]*\]|[^:\s]+):(\d+)")
        while time.monotonic() < deadline:
            found = pattern.findall(self.output)
            if len(found) >= count:
                for service, kind, _, port in found:
                    self.addresses[(service, kind)] = int(port)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"netd did not start:\n{self.output}")

    def rss(self) -> int:
        """
        @return: The process's resident set size, in bytes.
        """
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self, timeout: float = 15.0) -> int:
        """
        Stop it with SIGTERM (only this process, by its PID) and wait.

        @param timeout: Seconds before it is killed.
        @return: Its exit status.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class LineClient:
    """
    A blocking, nc-like TCP (or UDP) client for end-to-end tests.
    """

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        receiveBuffer: int | None = None,
    ) -> None:
        """
        @param port: The server's port.
        @param host: Its address.
        @param timeout: Seconds a blocking call may take.
        @param receiveBuffer: A socket receive buffer size to ask for (past
            the system's maximum when allowed to).
        """
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receiveBuffer is not None:
            force = getattr(socket, "SO_RCVBUFFORCE", None)
            try:
                if force is None:
                    raise PermissionError
                self.sock.setsockopt(socket.SOL_SOCKET, force, receiveBuffer)
            except PermissionError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buffer = b""

    def send(self, *lines: str) -> None:
        """
        Send lines.

        @param lines: Each is sent with C{\\n}.
        """
        self.sock.sendall("".join(line + "\n" for line in lines).encode("utf-8"))

    def expect(self, pattern: str, timeout: float = 10.0) -> list[str]:
        """
        Read lines until one matches.

        @param pattern: A regular expression searched in each line.
        @param timeout: Seconds to wait.
        @return: The lines read, the matching one last.
        @raise AssertionError: If no line matches in time.
        """
        regex = re.compile(pattern)
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                seen.append(line)
                if regex.search(line):
                    return seen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {seen!r}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise AssertionError(
                    f"connection closed waiting for {pattern!r}: {seen!r}"
                )
            self.buffer += data

    def close(self) -> None:
        """
        Close the socket.
        """
        self.sock.close()


def settingsText(settings: Mapping[str, Any]) -> str:
    """
    @param settings: TOML key/value pairs (strings, numbers, booleans).
    @return: TOML lines.
    """
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = '"' + value + '"'
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines)
