# -*- test-case-name: tests.test_endtoend -*-
"""
End-to-end tests: the real C{twistd netd} process, real clients.

Each test starts C{twistd -n --pidfile= netd ...} as a subprocess (from this
checkout, through C{PYTHONPATH}), waits for its "listening on" lines, talks
to it with plain sockets (in threads) and Twisted UDP clients, then stops it
with C{SIGTERM} and reads what it logged.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.test_listeners import (
    LOOPBACK,
    DatagramCollector,
    freePort,
    tcpExchange,
    waitFor,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX_OSERR = 71
EX_CONFIG = 78
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


def twistdCommand() -> list[str]:
    """
    How to run twistd with this Python.

    @return: The command's first words.
    """
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(twistd):
        return [twistd]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def isFree(port: int) -> bool:
    """
    The TCP probe sets C{SO_REUSEADDR}, as netd's listeners (Twisted's
    C{tcp.Port}) do: a port whose last connections are in C{TIME_WAIT} (after
    a browser session) is free for netd, and so for this probe.

    @param port: A port number.
    @return: Whether it can be bound on C{127.0.0.1} over TCP and UDP now.
    """
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


def freePorts(count: int) -> list[int]:
    """
    Find ports free over both TCP and UDP on the loopback address.

    @param count: How many.
    @return: Distinct port numbers.
    """
    ports: list[int] = []
    for _ in range(100):
        port = freePort()
        if port not in ports and isFree(port):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"could not find {count} free ports")


class Daemon:
    """
    One C{twistd ... netd ...} subprocess, with its output collected.

    @ivar args: The arguments after the twistd command.
    @ivar cwd: Its working directory.
    @ivar process: The L{subprocess.Popen}, once started.
    @ivar stdoutLines: Lines read from its standard output so far.
    @ivar stderrLines: Lines read from its standard error so far.
    @ivar env: Variables to add to (or, with value L{None}, remove from) the
        process's environment.
    @ivar command: The command before C{args} (twistd with this Python by
        default), e.g. a launcher such as C{systemd-socket-activate}.
    @ivar allowRoot: Whether to add netd's C{--allow-root} when running as
        root (as CI does): netd refuses to run as root without a user to
        switch to.
    @ivar popenArgs: Further keyword arguments for L{subprocess.Popen}
        (C{user=}, C{group=}, ...).
    """

    def __init__(
        self,
        args: list[str],
        cwd: str,
        env: dict[str, str | None] | None = None,
        command: list[str] | None = None,
        allowRoot: bool = True,
        popenArgs: dict[str, object] | None = None,
    ) -> None:
        self.args = args
        self.cwd = cwd
        self.env = env or {}
        self.command = command
        self.allowRoot = allowRoot
        self.popenArgs = popenArgs or {}
        self.process: subprocess.Popen[str] | None = None
        self.stdoutLines: list[str] = []
        self.stderrLines: list[str] = []
        self._readers: list[threading.Thread] = []

    @property
    def stdout(self) -> str:
        """
        Everything read from standard output so far.
        """
        return "".join(self.stdoutLines)

    @property
    def stderr(self) -> str:
        """
        Everything read from standard error so far.
        """
        return "".join(self.stderrLines)

    def start(self) -> None:
        """
        Start the process, with this checkout first on C{PYTHONPATH}.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO] + [p for p in [env.get("PYTHONPATH")] if p]
        )
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        args = list(self.args)
        if (
            self.allowRoot
            and os.geteuid() == 0
            and "netd" in args
            and "--allow-root" not in args
        ):
            args.insert(args.index("netd") + 1, "--allow-root")
        command = self.command if self.command is not None else twistdCommand()
        self.process = subprocess.Popen(
            command + args,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            **self.popenArgs,  # type: ignore[call-overload]
        )
        for stream, lines in (
            (self.process.stdout, self.stdoutLines),
            (self.process.stderr, self.stderrLines),
        ):
            reader = threading.Thread(target=self._read, args=(stream, lines))
            reader.daemon = True
            reader.start()
            self._readers.append(reader)

    @staticmethod
    def _read(stream: IO[str], lines: list[str]) -> None:
        """
        Collect a stream's lines until its end (in a thread).

        @param stream: The pipe.
        @param lines: Where to append them.
        """
        for line in stream:
            lines.append(line)
        stream.close()

    async def waitForOutput(
        self, pattern: str, timeout: float = START_TIMEOUT, count: int = 1
    ) -> list[str]:
        """
        Wait until standard output has C{count} lines matching C{pattern}.

        @param pattern: A regular expression, searched in each line.
        @param timeout: The most seconds to wait.
        @param count: How many matching lines to wait for.
        @return: The matching lines.
        @raise AssertionError: If the process exits or time runs out first.
        """
        assert self.process is not None
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            found = [line for line in list(self.stdoutLines) if regex.search(line)]
            if len(found) >= count:
                return found
            if self.process.poll() is not None or time.monotonic() > deadline:
                break
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(
            f"{count} lines matching {pattern!r} not seen in {timeout}s "
            f"(exit status {self.process.poll()})\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )

    async def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """
        Wait for the process to exit and its output to be read.

        @param timeout: The most seconds to wait.
        @return: Its exit status (negative: the signal that ended it).
        """
        assert self.process is not None
        code = await deferToThread(self.process.wait, timeout)
        for reader in self._readers:
            await deferToThread(reader.join, timeout)
        return int(code)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """
        Send C{SIGTERM} and wait for the process to exit.

        @param timeout: The most seconds to wait.
        @return: Its exit status.
        """
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    def kill(self) -> None:
        """
        Kill the process (by its PID) if it still runs, and reap it.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for reader in self._readers:
            reader.join(5)


class EndToEndTests(TestCase):
    """
    The real daemon, started by twistd.
    """

    timeout = 90

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def writeConfig(self, text: str, name: str = "netd.toml") -> str:
        """
        Write a configuration file in the test's directory.

        @param text: TOML text.
        @param name: The file name.
        @return: Its absolute path.
        """
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def daemon(self, *args: str) -> Daemon:
        """
        Start C{twistd <args>}; kill it after the test if it still runs.

        @param args: The arguments after the twistd command.
        @return: The running L{Daemon}.
        """
        daemon = Daemon(list(args), self.directory)
        self.addCleanup(daemon.kill)
        daemon.start()
        return daemon

    def netd(self, *args: str, logger: str | None = None) -> Daemon:
        """
        Start C{twistd -n --pidfile= netd <args>} in the foreground.

        As root (CI), L{Daemon} adds C{--allow-root}: netd refuses to run as
        root without a user to switch to (see C{tests.test_deployment}).

        @param args: The arguments after C{netd}.
        @param logger: A C{--logger} observer factory, if any.
        @return: The running L{Daemon}.
        """
        twistdArgs = ["--logger", logger] if logger else []
        return self.daemon(*twistdArgs, "-n", "--pidfile=", "netd", *args)

    def servicesConfig(self, echoPort: int, discardPort: int) -> str:
        """
        @param echoPort: The TCP and UDP port of echo.
        @param discardPort: The TCP and UDP port of discard.
        @return: A configuration of echo and discard on the loopback address.
        """
        return (
            "[services.echo]\n"
            'type = "echo"\n'
            f'listen = ["tcp:{echoPort}:interface=127.0.0.1", '
            f'"udp:{echoPort}:interface=127.0.0.1"]\n'
            "[services.discard]\n"
            'type = "discard"\n'
            f'listen = ["tcp:{discardPort}:interface=127.0.0.1", '
            f'"udp:{discardPort}:interface=127.0.0.1"]\n'
        )

    def udpClient(self) -> DatagramCollector:
        """
        @return: A bound UDP client that records what it receives.
        """
        client = DatagramCollector()
        port = reactor.listenUDP(0, client, interface=LOOPBACK)
        self.addCleanup(port.stopListening)
        return client

    def assertStoppedCleanly(self, daemon: Daemon, code: int) -> None:
        """
        Assert that a daemon stopped by C{SIGTERM} shut down in order.

        twistd ends with status 0 or, since Twisted 22.8, by re-raising the
        signal that stopped it (status C{-SIGTERM}); either way it must have
        run its shutdown to the end, without a traceback.

        @param daemon: The stopped daemon.
        @param code: Its exit status.
        """
        output = daemon.stdout + daemon.stderr
        self.assertIn(code, (0, -signal.SIGTERM), output)
        self.assertIn("Server Shut Down.", daemon.stdout)
        self.assertNotIn("Traceback", output)
        self.assertEqual(daemon.stderr, "")

    async def test_servesAndStops(self) -> None:
        """
        The daemon serves echo and discard over TCP and UDP: 10 MB of random
        bytes come back identical from TCP echo, a 1400-byte datagram comes
        back intact from UDP echo, discard returns nothing over either; on
        C{SIGTERM} it shuts down cleanly and has logged a session event for
        each TCP session and the UDP counters of discard.
        """
        echoPort, discardPort = freePorts(2)
        config = self.writeConfig(self.servicesConfig(echoPort, discardPort))
        daemon = self.netd("--config", config)
        listening = await daemon.waitForOutput(r" listening on ", count=4)
        self.assertEqual(
            sorted(re.search(r"\] (.*)$", line).group(1) for line in listening),
            sorted(
                [
                    f"echo listening on tcp:127.0.0.1:{echoPort}",
                    f"echo listening on udp:127.0.0.1:{echoPort}",
                    f"discard listening on tcp:127.0.0.1:{discardPort}",
                    f"discard listening on udp:127.0.0.1:{discardPort}",
                ]
            ),
        )

        payload = os.urandom(10 << 20)
        echoed = await deferToThread(tcpExchange, LOOPBACK, echoPort, payload)
        self.assertEqual(len(echoed.received), len(payload))
        self.assertTrue(echoed.received == payload, "echoed bytes differ")
        self.assertFalse(echoed.reset)

        discarded = await deferToThread(
            tcpExchange, LOOPBACK, discardPort, b"d" * 100_000
        )
        self.assertEqual(discarded.sent, 100_000)
        self.assertEqual(discarded.received, b"")

        echoClient = self.udpClient()
        datagram = os.urandom(1400)
        echoClient.transport.write(datagram, (LOOPBACK, echoPort))
        await waitFor(lambda: echoClient.received, 10, "UDP echo reply")
        self.assertEqual(echoClient.received, [(datagram, (LOOPBACK, echoPort))])

        discardClient = self.udpClient()
        discardClient.transport.write(b"q" * 1400, (LOOPBACK, discardPort))
        await deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(discardClient.received, [])

        code = await daemon.stop()
        self.assertStoppedCleanly(daemon, code)
        stdout = daemon.stdout
        self.assertRegex(
            stdout,
            r"echo session from 127\.0\.0\.1:\d+ on \S+ ended after [\d.]+s: "
            rf"{len(payload)} bytes in, {len(payload)} bytes out \(closed\)",
        )
        self.assertRegex(
            stdout,
            r"discard session from 127\.0\.0\.1:\d+ on \S+ ended after [\d.]+s: "
            r"100000 bytes in, 0 bytes out",
        )
        self.assertRegex(
            stdout, r"discard udp: 1 datagrams \(1400 bytes\) in, 0 \(0 bytes\) out"
        )

    async def test_jsonLogger(self) -> None:
        """
        With C{--logger netd.logs.json}, standard output is JSON, one object
        per line, and a TCP session's event carries its fields as keys.
        """
        echoPort, discardPort = freePorts(2)
        config = self.writeConfig(self.servicesConfig(echoPort, discardPort))
        daemon = self.netd("--config", config, logger="netd.logs.json")
        await daemon.waitForOutput(r'"text": "echo listening on tcp:', count=1)
        exchange = await deferToThread(tcpExchange, LOOPBACK, echoPort, b"json!")
        self.assertEqual(exchange.received, b"json!")
        await daemon.waitForOutput(r'"bytesIn"', 10)
        code = await daemon.stop()
        self.assertStoppedCleanly(daemon, code)
        records = [json.loads(line) for line in daemon.stdoutLines]
        self.assertGreater(len(records), 3)
        sessions = [r for r in records if "bytesIn" in r]
        self.assertEqual(len(sessions), 1)
        session = sessions[0]
        for key in ("service", "peer", "bytesIn", "bytesOut", "duration", "reason"):
            self.assertIn(key, session)
        self.assertEqual(session["service"], "echo")
        self.assertEqual((session["bytesIn"], session["bytesOut"]), (5, 5))
        self.assertEqual(session["reason"], "closed")
        self.assertRegex(session["peer"], r"^127\.0\.0\.1:\d+$")
        self.assertIsInstance(session["duration"], float)

    async def test_embeddedDefault(self) -> None:
        """
        Without C{--config} the daemon serves the embedded default: echo on
        C{127.0.0.1:10007}.
        """
        ports = (10007, 10009, 8080, 10023)
        for _ in range(100):
            busy = [port for port in ports if not isFree(port)]
            if not busy:
                break
            await deferLater(reactor, 0.1, lambda: None)
        else:
            raise self.skipTest(f"ports {busy} stayed busy for 10s")
        daemon = self.netd()
        await daemon.waitForOutput(r"echo listening on tcp:127\.0\.0\.1:10007")
        exchange = await deferToThread(tcpExchange, LOOPBACK, 10007, b"default")
        self.assertEqual(exchange.received, b"default")
        code = await daemon.stop()
        self.assertStoppedCleanly(daemon, code)

    async def test_brokenConfig(self) -> None:
        """
        A broken configuration file ends the process with status 78 and one
        line per problem on standard error, naming the file and key, and no
        traceback; nothing is started.
        """
        config = self.writeConfig(
            "[netd]\nbogus = 1\n"
            '[services.echo]\ntype = "echo"\n'
            'listen = ["tcp:99999:interface=127.0.0.1"]\n'
        )
        daemon = self.netd("--config", config)
        code = await daemon.wait(30)
        output = daemon.stdout + daemon.stderr
        self.assertEqual(code, EX_CONFIG, output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn("listening on", output)
        lines = daemon.stderr.splitlines()
        self.assertEqual(len(lines), 3, lines)
        self.assertTrue(lines[0].startswith(f"netd: {config}: netd.bogus: "), lines)
        self.assertIn("unknown key", lines[0])
        self.assertTrue(
            lines[1].startswith(f"netd: {config}: services.echo.listen[0]: "), lines
        )
        self.assertIn("out of range", lines[1])
        self.assertIn("2 problems", lines[2])

    async def test_checkGood(self) -> None:
        """
        C{--check} on a valid file exits 0 with a summary of its services and
        listeners, and starts nothing.
        """
        echoPort, discardPort = freePorts(2)
        config = self.writeConfig(self.servicesConfig(echoPort, discardPort))
        daemon = self.netd("--check", "--config", config)
        code = await daemon.wait(30)
        self.assertEqual(code, 0, daemon.stdout + daemon.stderr)
        self.assertIn(f"netd: {config}: configuration is valid", daemon.stdout)
        self.assertIn("(2 services, 4 listeners)", daemon.stdout)
        self.assertNotIn("listening on", daemon.stdout)

    async def test_checkBad(self) -> None:
        """
        C{--check} on an invalid file exits 78 with the problem on standard
        error and no traceback.
        """
        config = self.writeConfig('[services.echo]\ntype = "nosuch"\nlisten = []\n')
        daemon = self.netd("--check", "--config", config)
        code = await daemon.wait(30)
        self.assertEqual(code, EX_CONFIG, daemon.stdout + daemon.stderr)
        self.assertIn(
            "services.echo.type: unknown service type 'nosuch'", daemon.stderr
        )
        self.assertNotIn("Traceback", daemon.stdout + daemon.stderr)
        self.assertNotIn("configuration is valid", daemon.stdout)

    async def test_exampleConfigChecks(self) -> None:
        """
        The shipped example, C{etc/netd.toml}, passes C{--check}.
        """
        example = os.path.join(REPO, "etc", "netd.toml")
        if not os.path.exists(example):
            raise self.skipTest("etc/netd.toml does not exist")
        daemon = self.netd("--check", "--config", example)
        code = await daemon.wait(30)
        self.assertEqual(code, 0, daemon.stdout + daemon.stderr)
        self.assertIn("configuration is valid", daemon.stdout)

    async def test_busyPort(self) -> None:
        """
        A port another socket listens on makes the daemon exit with status 71
        and exactly one line on standard error naming the service, the
        listener and "address already in use", with no traceback.
        """
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind((LOOPBACK, 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        (free,) = freePorts(1)
        description = f"tcp:{busy}:interface=127.0.0.1"
        config = self.writeConfig(
            "[services.echo]\n"
            'type = "echo"\n'
            f'listen = ["udp:{free}:interface=127.0.0.1", "{description}"]\n'
        )
        daemon = self.netd("--config", config)
        code = await daemon.wait(30)
        output = daemon.stdout + daemon.stderr
        self.assertEqual(code, EX_OSERR, output)
        self.assertNotIn("Traceback", output)
        lines = daemon.stderr.splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(
            lines[0].startswith(f"netd: echo cannot listen on {description}: "), lines
        )
        self.assertIn("address already in use", lines[0])


class IsFreeTests(TestCase):
    """
    L{isFree} probes the way netd binds.
    """

    def test_timeWaitIsFree(self) -> None:
        """
        A port whose only connection is in C{TIME_WAIT} (closed by the
        server side first) is free, as it is for netd's listener.
        """
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((LOOPBACK, 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection((LOOPBACK, port))
        accepted, _ = server.accept()
        accepted.close()
        server.close()
        client.close()
        self.assertTrue(isFree(port))
