# -*- test-case-name: tests.test_deployment -*-
"""
Deployment, end to end: the real C{twistd -n --pidfile= netd} process (see
L{tests.test_endtoend.Daemon}) as root dropping to C{nobody}, as a user
without privileges, under C{systemd-socket-activate} with a test
C{NOTIFY_SOCKET}, reloaded with SIGHUP and stopped with SIGTERM while
sessions are in flight; the systemd units checked by C{systemd-analyze}.
"""

from __future__ import annotations

import io
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.tap import EX_CONFIG, EX_UNAVAILABLE, Options
from tests.test_endtoend import (
    REPO,
    Daemon,
    freePorts,
    isFree,
    twistdCommand,
)
from tests.test_listeners import LOOPBACK, DatagramCollector, tcpExchange, waitFor

EX_OSERR = 71
UNITS = os.path.join(REPO, "etc", "systemd")


def echoConfig(port: int, netd: str = "", udp: bool = True) -> str:
    """
    @param port: The TCP (and UDP) port of echo on loopback.
    @param netd: Lines of the C{[netd]} table.
    @param udp: Whether to listen on UDP too.
    @return: The configuration.
    """
    listen = f'"tcp:{port}:interface=127.0.0.1"'
    if udp:
        listen += f', "udp:{port}:interface=127.0.0.1"'
    return f'[netd]\n{netd}\n[services.echo]\ntype = "echo"\nlisten = [{listen}]\n'


def procStatus(pid: int) -> dict[str, str]:
    """
    @param pid: A process id.
    @return: The fields of C{/proc/PID/status}.
    """
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


class NotifyServer:
    """
    A stand-in for systemd's notification socket, at a path.

    @ivar path: The C{NOTIFY_SOCKET} value.
    @ivar messages: Every message received so far.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(path)
        self.socket.setblocking(False)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        """
        @return: Every message received so far.
        """
        while True:
            try:
                self.messages.append(self.socket.recv(4096).decode("utf-8"))
            except BlockingIOError:
                return self.messages

    def close(self) -> None:
        """
        Close the socket.
        """
        self.socket.close()


class SlowClient(threading.Thread):
    """
    An echo client in mid-transfer: sends C{chunks} pieces of random bytes
    with a pause between them, reading the echo all along, then half-closes
    and reads to the end.

    @ivar sent: Everything sent.
    @ivar received: Everything received.
    @ivar error: What went wrong, if anything.
    """

    def __init__(self, port: int, chunks: int, size: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.chunks = [os.urandom(size) for _ in range(chunks)]
        self.pause = pause
        self.sent = b"".join(self.chunks)
        self.received = b""
        self.error: BaseException | None = None
        self.socket = socket.create_connection((LOOPBACK, port), timeout=30)

    def _send(self) -> None:
        for chunk in self.chunks:
            self.socket.sendall(chunk)
            time.sleep(self.pause)
        self.socket.shutdown(socket.SHUT_WR)

    def run(self) -> None:
        sender = threading.Thread(target=self._send, daemon=True)
        sender.start()
        try:
            while True:
                data = self.socket.recv(65536)
                if not data:
                    break
                self.received += data
        except BaseException as e:
            self.error = e
        finally:
            sender.join(30)
            self.socket.close()


class DeploymentTests(TestCase):
    """
    The daemon as deployed.
    """

    timeout = 60

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        os.chmod(self.directory, 0o755)

    def writeConfig(self, text: str, name: str = "netd.toml") -> str:
        """
        @param text: TOML text.
        @param name: The file name.
        @return: The file's absolute path (readable by anyone).
        """
        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def daemon(self, args: list[str], **kwargs: Any) -> Daemon:
        """
        Start a process; kill it after the test if it still runs.

        @param args: The arguments after the command.
        @param kwargs: For L{Daemon}.
        @return: The started L{Daemon}.
        """
        daemon = Daemon(args, self.directory, **kwargs)
        self.addCleanup(daemon.kill)
        daemon.start()
        return daemon

    def netd(self, config: str, *args: str, **kwargs: Any) -> Daemon:
        """
        Start C{twistd -n --pidfile= netd --config CONFIG}.

        @param config: The configuration file.
        @param args: More arguments after C{netd}.
        @param kwargs: For L{Daemon}.
        @return: The started L{Daemon}.
        """
        return self.daemon(
            ["-n", "--pidfile=", "netd", *args, "--config", config], **kwargs
        )

    def notifyServer(self) -> NotifyServer:
        """
        @return: A notification socket, closed after the test.
        """
        # A short directory: socket paths are limited to 107 bytes.
        directory = tempfile.mkdtemp(prefix="netd-")
        self.addCleanup(shutil.rmtree, directory, True)
        server = NotifyServer(os.path.join(directory, "notify"))
        self.addCleanup(server.close)
        return server

    async def udpEcho(self, port: int, payload: bytes) -> None:
        """
        Assert that UDP echo answers on a port.

        @param port: The port.
        @param payload: The datagram.
        """
        client = DatagramCollector()
        udp = reactor.listenUDP(0, client, interface=LOOPBACK)
        self.addCleanup(udp.stopListening)
        client.transport.write(payload, (LOOPBACK, port))
        await waitFor(lambda: client.received, 10, f"UDP echo on {port}")
        self.assertEqual(client.received[0][0], payload)

    async def test_rootDropsToNobody(self) -> None:
        """
        As root, with echo on TCP and UDP port 7 and discard on port 9 and
        C{user = "nobody"}: netd binds, then every uid and gid is nobody's,
        the only supplementary groups are nobody's, no capability is left and
        C{NoNewPrivs} is set; ports 7 and 9 answer; the JSON log file, opened
        as root, belongs to nobody and keeps being written.
        """
        if os.geteuid() != 0:
            raise self.skipTest("needs root (CI runs as root)")
        if not (isFree(7) and isFree(9)):
            raise self.skipTest("port 7 or 9 is busy")
        nobody = pwd.getpwnam("nobody")
        log = os.path.join(self.directory, "netd.log")
        config = self.writeConfig(
            f'[netd]\nuser = "nobody"\nlog_file = "{log}"\nlog_format = "json"\n'
            '[services.echo]\ntype = "echo"\n'
            'listen = ["tcp:7:interface=127.0.0.1", "udp:7:interface=127.0.0.1"]\n'
            '[services.discard]\ntype = "discard"\n'
            'listen = ["tcp:9:interface=127.0.0.1", "udp:9:interface=127.0.0.1"]\n'
        )
        daemon = self.netd(config, allowRoot=False)
        await daemon.waitForOutput(r"running as nobody .*no way back to root")
        assert daemon.process is not None
        status = procStatus(daemon.process.pid)
        uid, gid = str(nobody.pw_uid), str(nobody.pw_gid)
        self.assertEqual(status["Uid"].split(), [uid] * 4)
        self.assertEqual(status["Gid"].split(), [gid] * 4)
        self.assertEqual(
            sorted(status["Groups"].split()),
            sorted(str(g) for g in os.getgrouplist("nobody", nobody.pw_gid)),
        )
        for capabilities in ("CapEff", "CapPrm", "CapAmb"):
            self.assertEqual(int(status[capabilities], 16), 0, capabilities)
        self.assertEqual(status["NoNewPrivs"], "1")

        echoed = await deferToThread(tcpExchange, LOOPBACK, 7, b"seven" * 1000)
        self.assertEqual(echoed.received, b"seven" * 1000)
        await self.udpEcho(7, b"datagram on seven")
        swallowed = await deferToThread(tcpExchange, LOOPBACK, 9, b"nine" * 1000)
        self.assertEqual((swallowed.sent, swallowed.received), (4000, b""))

        self.assertEqual(os.stat(log).st_uid, nobody.pw_uid)
        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stdout + daemon.stderr)
        with open(log) as f:
            text = f.read()
        self.assertIn('"bytesIn": 5000', text)
        self.assertIn('"text": "discard session from', text)

    async def test_nonRootPrivilegedPort(self) -> None:
        """
        Started as a user without privileges, a listener on a port below
        1024 ends start-up with status 71 and at most three lines on stderr
        naming the listener and the fixes.
        """
        interpreter = findInterpreterFor("nobody")
        if interpreter is None:
            raise self.skipTest("no Python that nobody can run with these packages")
        python, pythonpath = interpreter
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            unprivilegedStart = int(f.read())
        ports = [p for p in range(1, min(unprivilegedStart, 1024)) if isFree(p)]
        if not ports:
            raise self.skipTest("ports below 1024 are not privileged here")
        nobody = pwd.getpwnam("nobody")
        # trial's own directories are private: use one nobody can enter.
        self.directory = tempfile.mkdtemp(prefix="netd-nonroot-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        os.chmod(self.directory, 0o755)
        config = self.writeConfig(echoConfig(ports[0], udp=False))
        daemon = self.netd(
            config,
            command=[python, "-c", "from twisted.scripts.twistd import run; run()"],
            env={"PYTHONPATH": pythonpath},
            allowRoot=False,
            popenArgs={
                "user": nobody.pw_uid,
                "group": nobody.pw_gid,
                "extra_groups": [],
            },
        )
        code = await daemon.wait(30)
        self.assertEqual(code, EX_OSERR, daemon.stdout + daemon.stderr)
        lines = daemon.stderr.splitlines()
        self.assertTrue(1 <= len(lines) <= 3, lines)
        message = daemon.stderr
        self.assertIn(
            f"echo cannot listen on tcp:{ports[0]}:interface=127.0.0.1", message
        )
        self.assertIn("permission denied", message)
        for fix in ('user = "NAME"', "socket activation", "CAP_NET_BIND_SERVICE"):
            self.assertIn(fix, message)

    async def test_capabilityLowPort(self) -> None:
        """
        Not root but holding C{CAP_NET_BIND_SERVICE} (as under the systemd
        unit's C{AmbientCapabilities=}): a port below 1024 just works, with
        no user configured and nothing refused.
        """
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            raise self.skipTest("needs root and setpriv to hand out the capability")
        interpreter = findInterpreterFor("nobody")
        if interpreter is None:
            raise self.skipTest("no Python that nobody can run with these packages")
        python, pythonpath = interpreter
        ports = [p for p in range(1, 1024) if isFree(p)]
        if not ports:
            raise self.skipTest("no free port below 1024")
        port = ports[-1]
        self.directory = tempfile.mkdtemp(prefix="netd-cap-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        os.chmod(self.directory, 0o755)
        nobody = pwd.getpwnam("nobody")
        config = self.writeConfig(echoConfig(port))
        daemon = self.netd(
            config,
            command=[
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                "--inh-caps=+net_bind_service",
                "--ambient-caps=+net_bind_service",
                python,
                "-c",
                "from twisted.scripts.twistd import run; run()",
            ],
            env={"PYTHONPATH": pythonpath},
            allowRoot=False,
        )
        await daemon.waitForOutput(rf"echo listening on udp:127\.0\.0\.1:{port}")
        assert daemon.process is not None
        status = procStatus(daemon.process.pid)
        self.assertEqual(status["Uid"].split(), [str(nobody.pw_uid)] * 4)
        self.assertEqual(status["NoNewPrivs"], "1")
        echoed = await deferToThread(tcpExchange, LOOPBACK, port, b"low port")
        self.assertEqual(echoed.received, b"low port")
        await self.udpEcho(port, b"low udp")
        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stdout + daemon.stderr)

    async def test_rootWithoutUserRefused(self) -> None:
        """
        As root with no user to switch to, netd refuses to start: status 78,
        at most three lines on stderr, nothing bound.
        """
        if os.geteuid() != 0:
            raise self.skipTest("needs root")
        (port,) = freePorts(1)
        daemon = self.netd(self.writeConfig(echoConfig(port)), allowRoot=False)
        code = await daemon.wait(30)
        self.assertEqual(code, EX_CONFIG, daemon.stdout + daemon.stderr)
        lines = daemon.stderr.splitlines()
        self.assertTrue(1 <= len(lines) <= 3, lines)
        self.assertIn("refusing to run as root", lines[0])
        self.assertNotIn("listening on", daemon.stdout)

    def socketActivate(
        self, tcp: tuple[int, str], udp: tuple[int, str], args: list[str], **kw: Any
    ) -> Daemon:
        """
        Start netd under two chained C{systemd-socket-activate}: the first
        passes a TCP socket, the second adds a UDP one (one invocation
        cannot mix socket types) and names both.

        @param tcp: The TCP port and its name, or the port and C{"-d"} to
            make the outer socket a datagram one.
        @param udp: The UDP port and its name.
        @param args: The arguments after twistd.
        @param kw: For L{Daemon}.
        @return: The started L{Daemon}.
        """
        if shutil.which("systemd-socket-activate") is None:
            raise self.skipTest("systemd-socket-activate is not installed")
        passEnv = ["-E", "PYTHONPATH", "-E", "NOTIFY_SOCKET"]
        outerPort, outerName = tcp
        outer = ["systemd-socket-activate"]
        if outerName == "-d":
            outer.append("-d")
            outerName = "echo-tcp"
        command = [
            *outer,
            "-l",
            f"127.0.0.1:{outerPort}",
            f"--fdname={outerName}",
            *passEnv,
            "systemd-socket-activate",
            "-d",
            "-l",
            f"127.0.0.1:{udp[0]}",
            f"--fdname={outerName}:{udp[1]}",
            *passEnv,
            *twistdCommand(),
        ]
        return self.daemon(args, command=command, **kw)

    async def test_socketActivation(self) -> None:
        """
        Under C{systemd-socket-activate} with one TCP and one UDP socket,
        netd serves both from the passed sockets (the connection that
        triggered the activation included) and sends C{READY=1} to
        C{NOTIFY_SOCKET}.
        """
        tcpPort, udpPort = freePorts(2)
        notify = self.notifyServer()
        config = self.writeConfig(
            '[services.echo]\ntype = "echo"\n'
            'listen = ["systemd:echo-tcp", "systemd:echo-udp:type=datagram"]\n'
        )
        daemon = self.socketActivate(
            (tcpPort, "echo-tcp"),
            (udpPort, "echo-udp"),
            ["-n", "--pidfile=", "netd", "--config", config],
            env={"NOTIFY_SOCKET": notify.path},
        )
        first = await deferToThread(connectWhenListening, tcpPort)
        self.addCleanup(first.close)
        await waitFor(lambda: any("READY=1" in m for m in notify.poll()), 20, "READY=1")
        ready = [m for m in notify.messages if "READY=1" in m][0]
        self.assertIn("STATUS=serving 1 service on 2 listeners", ready)
        first.sendall(b"first")
        self.assertEqual(await deferToThread(first.recv, 100), b"first")
        echoed = await deferToThread(tcpExchange, LOOPBACK, tcpPort, b"passed tcp")
        self.assertEqual(echoed.received, b"passed tcp")
        await self.udpEcho(udpPort, b"passed udp")
        self.assertIn(
            f"tcp:127.0.0.1:{tcpPort} (systemd socket echo-tcp)", daemon.stdout
        )
        self.assertIn(
            f"udp:127.0.0.1:{udpPort} (systemd socket echo-udp)", daemon.stdout
        )
        first.close()
        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stdout + daemon.stderr)
        self.assertTrue(any(m.startswith("STOPPING=1") for m in notify.poll()))

    async def test_socketTypeMismatch(self) -> None:
        """
        A datagram socket passed where the configuration expects a stream
        one ends start-up at once with status 71 and a line saying so (no
        endless accept loop).
        """
        tcpPort, udpPort = freePorts(2)
        config = self.writeConfig(
            '[services.echo]\ntype = "echo"\nlisten = ["systemd:echo-tcp"]\n'
        )
        daemon = self.socketActivate(
            (tcpPort, "-d"),
            (udpPort, "echo-udp"),
            ["-n", "--pidfile=", "netd", "--config", config],
        )
        await deferToThread(triggerDatagram, tcpPort)
        started = time.monotonic()
        code = await daemon.wait(30)
        self.assertLess(time.monotonic() - started, 15)
        self.assertEqual(code, EX_OSERR, daemon.stdout + daemon.stderr)
        lines = [
            line for line in daemon.stderr.splitlines() if line.startswith("netd:")
        ]
        self.assertEqual(len(lines), 1, daemon.stderr)
        self.assertIn("echo cannot listen on systemd:echo-tcp", lines[0])
        self.assertIn("passed a datagram socket but this listener is stream", lines[0])

    async def test_reloadKeepsSessions(self) -> None:
        """
        SIGHUP with a new valid configuration: the new service is served, 50
        sessions open on the unchanged service go on, and systemd hears
        RELOADING=1 then READY=1.
        """
        echoPort, discardPort = freePorts(2)
        notify = self.notifyServer()
        config = self.writeConfig(echoConfig(echoPort))
        daemon = self.netd(config, env={"NOTIFY_SOCKET": notify.path})
        await daemon.waitForOutput(r"echo listening on udp:")
        sessions = await deferToThread(openSessions, echoPort, 50)
        self.addCleanup(lambda: [s.close() for s in sessions])
        self.writeConfig(
            echoConfig(echoPort) + '[services.discard]\ntype = "discard"\n'
            f'listen = ["tcp:{discardPort}:interface=127.0.0.1"]\n'
        )
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(
            rf"discard listening on tcp:127\.0\.0\.1:{discardPort}", 20
        )
        await daemon.waitForOutput(r"reloaded .*: added: discard; unchanged: echo", 20)
        swallowed = await deferToThread(tcpExchange, LOOPBACK, discardPort, b"new")
        self.assertEqual((swallowed.sent, swallowed.received), (3, b""))
        self.assertEqual(await deferToThread(exchangeAll, sessions, b"after"), 50)
        messages = notify.poll()
        reloading = [i for i, m in enumerate(messages) if m.startswith("RELOADING=1")]
        self.assertEqual(len(reloading), 1, messages)
        self.assertTrue(messages[reloading[0] + 1].startswith("READY=1"), messages)
        self.assertNotIn("echo session from", daemon.stdout)
        for s in sessions:
            s.close()
        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stdout + daemon.stderr)

    async def test_reloadBrokenConfig(self) -> None:
        """
        SIGHUP with a broken configuration: one error line, and the previous
        configuration keeps serving.
        """
        (port,) = freePorts(1)
        config = self.writeConfig(echoConfig(port))
        daemon = self.netd(config)
        await daemon.waitForOutput(r"echo listening on udp:")
        self.writeConfig(echoConfig(port) + "[services.bad]\ntype = 'nosuch'\n")
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(r"reload failed", 20)
        echoed = await deferToThread(tcpExchange, LOOPBACK, port, b"still here")
        self.assertEqual(echoed.received, b"still here")
        await self.udpEcho(port, b"udp still here")
        self.assertIsNone(daemon.process.poll())
        errors = [
            line
            for line in daemon.stdout.splitlines()
            if "#error]" in line or "#critical]" in line or "Traceback" in line
        ]
        self.assertEqual(len(errors), 1, daemon.stdout)
        self.assertIn("services.bad.type: unknown service type 'nosuch'", errors[0])
        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stdout + daemon.stderr)

    async def test_sigtermDrains(self) -> None:
        """
        SIGTERM during 10 echo transfers in flight: new connections are
        refused within 100 ms, every transfer completes with the right bytes
        inside the drain deadline, and the process exits with status 0.
        """
        (port,) = freePorts(1)
        config = self.writeConfig(
            echoConfig(port, netd="drain_timeout = 15", udp=False)
        )
        daemon = self.netd(config)
        await daemon.waitForOutput(r"echo listening on tcp:")
        clients = [
            SlowClient(port, chunks=12, size=32 * 1024, pause=0.1) for _ in range(10)
        ]
        for client in clients:
            client.start()
        await waitFor(
            lambda: all(c.received for c in clients), 10, "transfers under way"
        )
        assert daemon.process is not None
        signalled = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        refusedAfter = await deferToThread(secondsUntilRefused, port, signalled)
        self.assertLess(refusedAfter, 0.1)
        await waitFor(
            lambda: not any(c.is_alive() for c in clients), 20, "transfers done"
        )
        drained = time.monotonic() - signalled
        for client in clients:
            self.assertIsNone(client.error)
            self.assertEqual(len(client.received), len(client.sent))
            self.assertTrue(client.received == client.sent, "echoed bytes differ")
        code = await daemon.wait(20)
        self.assertEqual(code, 0, daemon.stdout + daemon.stderr)
        self.assertLess(drained, 15)
        self.assertIn("waiting up to 15s for", daemon.stdout)
        self.assertNotIn("drain deadline reached", daemon.stdout)
        self.assertEqual(daemon.stderr, "")

    async def test_sigtermDrainsDownloadsAndChat(self) -> None:
        """
        SIGTERM during 10 slow http downloads (a throttled reader) and with 10
        chat sessions open: new connections are refused within 100 ms, every
        download completes with the right bytes inside the drain deadline,
        the chat sessions are closed at the deadline, and the process exits
        with status 0.
        """
        httpPort, chatPort = freePorts(2)
        root = os.path.join(self.directory, "www")
        os.makedirs(root)
        body = os.urandom(2 << 20)
        with open(os.path.join(root, "big.bin"), "wb") as f:
            f.write(body)
        config = self.writeConfig(
            "[netd]\ndrain_timeout = 4\n"
            f'[services.www]\ntype = "http"\nroot = "{root}"\n'
            f'listen = ["tcp:{httpPort}:interface=127.0.0.1"]\n'
            f'[services.chat]\ntype = "chat"\n'
            f'listen = ["tcp:{chatPort}:interface=127.0.0.1"]\n'
        )
        daemon = self.netd(config)
        await daemon.waitForOutput(r"chat listening on tcp:")
        await daemon.waitForOutput(r"www listening on tcp:")
        chats = await deferToThread(openChats, chatPort, 10)
        self.addCleanup(lambda: [c.close() for c in chats])
        downloads = [SlowDownload(httpPort, "/big.bin") for _ in range(10)]
        for download in downloads:
            download.start()
        await waitFor(
            lambda: all(len(d.received) > 65536 for d in downloads), 10, "downloads"
        )
        assert daemon.process is not None
        signalled = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        refusedAfter = await deferToThread(secondsUntilRefused, httpPort, signalled)
        self.assertLess(refusedAfter, 0.1)
        await waitFor(lambda: not any(d.is_alive() for d in downloads), 20, "downloads")
        downloaded = time.monotonic() - signalled
        self.assertLess(downloaded, 4)
        for download in downloads:
            self.assertIsNone(download.error)
            status, headers, content = download.response()
            self.assertEqual(status, 200)
            self.assertEqual(len(content), len(body))
            self.assertTrue(content == body, "downloaded bytes differ")
        code = await daemon.wait(20)
        self.assertEqual(code, 0, daemon.stdout + daemon.stderr)
        closed = await deferToThread(lambda: [chatClosed(c) for c in chats])
        self.assertEqual(closed, [True] * 10)
        self.assertEqual(daemon.stdout.count("(drain deadline reached)"), 10)

    async def test_probeCommand(self) -> None:
        """
        C{twistd netd --check --probe} exits 0 against a running netd, and
        69 naming a listener once netd is gone.
        """
        echoPort, discardPort = freePorts(2)
        config = self.writeConfig(
            echoConfig(echoPort) + '[services.discard]\ntype = "discard"\n'
            f'listen = ["tcp:{discardPort}:interface=127.0.0.1"]\n'
        )
        daemon = self.netd(config)
        await daemon.waitForOutput(r"discard listening on tcp:")
        probe = self.daemon(["netd", "--check", "--probe", "--config", config])
        self.assertEqual(await probe.wait(30), 0, probe.stdout + probe.stderr)
        self.assertIn("probe: 3 ok, 0 failed, 0 skipped", probe.stdout)
        await daemon.stop()
        probe = self.daemon(["netd", "--check", "--probe", "--config", config])
        self.assertEqual(await probe.wait(30), EX_UNAVAILABLE, probe.stdout)
        self.assertIn(
            f"probe FAILED echo on tcp:{echoPort}:interface=127.0.0.1: cannot connect",
            probe.stdout,
        )


class SlowDownload(threading.Thread):
    """
    An HTTP client that reads its response slowly (a small receive buffer
    and a pause after every read).

    @ivar received: Everything received (head and body).
    @ivar error: What went wrong, if anything.
    """

    def __init__(self, port: int, path: str, pause: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pause = pause
        self.received = b""
        self.error: BaseException | None = None
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.socket.settimeout(30)
        self.socket.connect((LOOPBACK, port))
        self.socket.sendall(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )

    def run(self) -> None:
        try:
            while True:
                data = self.socket.recv(16384)
                if not data:
                    break
                self.received += data
                time.sleep(self.pause)
        except BaseException as e:
            self.error = e
        finally:
            self.socket.close()

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """
        @return: The status, the header fields (lower-case names) and the
            body.
        """
        head, _, body = self.received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), fields, body


def openChats(port: int, count: int) -> list[socket.socket]:
    """
    Open chat sessions, each greeted.

    @param port: The chat port.
    @param count: How many.
    @return: The connected sockets.
    """
    chats = []
    for _ in range(count):
        s = socket.create_connection((LOOPBACK, port), timeout=10)
        chats.append(s)
        greeting = s.recv(4096)
        assert greeting, "no greeting"
    return chats


def chatClosed(s: socket.socket) -> bool:
    """
    @param s: A chat session's socket.
    @return: Whether the server closed it (reading reaches the end).
    """
    s.settimeout(5)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return True


def findInterpreterFor(user: str) -> tuple[str, str] | None:
    """
    Find a Python that C{user} can run with this checkout and the packages
    of this one (a Python installed under root's home cannot be).

    @param user: A user name.
    @return: The interpreter and the C{PYTHONPATH} to give it, or L{None}.
    """
    entry = pwd.getpwnam(user)
    sitePackages = [p for p in sys.path if p.endswith("-packages") and os.path.isdir(p)]
    pythonpath = os.pathsep.join([REPO, *sitePackages])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        sys.executable,
        os.path.realpath(sys.executable),
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ]
    for candidate in dict.fromkeys(candidates):
        if not os.path.exists(candidate):
            continue
        try:
            result = subprocess.run(
                [candidate, "-c", "import twisted.scripts.twistd, attrs, netd.tap"],
                env={"PYTHONPATH": pythonpath, "PATH": os.environ.get("PATH", "")},
                user=entry.pw_uid,
                group=entry.pw_gid,
                extra_groups=[],
                cwd="/",
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if result.returncode == 0:
            return candidate, pythonpath
    return None


def connectWhenListening(port: int, timeout: float = 10.0) -> socket.socket:
    """
    Connect to a TCP port on loopback, retrying until something listens.

    @param port: The port.
    @param timeout: The most seconds to try.
    @return: The connected socket.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((LOOPBACK, port), timeout=10)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def triggerDatagram(port: int, timeout: float = 10.0) -> None:
    """
    Send datagrams to a UDP port until its socket exists (binding the same
    port fails once it does), so that C{systemd-socket-activate -d} starts
    its child.

    @param port: The port.
    @param timeout: The most seconds to try.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        while time.monotonic() < deadline:
            if not isFree(port):
                s.sendto(b"wake up", (LOOPBACK, port))
                return
            time.sleep(0.05)


def openSessions(port: int, count: int) -> list[socket.socket]:
    """
    Open echo sessions and check that each one echoes.

    @param port: The echo port.
    @param count: How many.
    @return: The connected sockets.
    """
    sessions = []
    for i in range(count):
        s = socket.create_connection((LOOPBACK, port), timeout=10)
        sessions.append(s)
    exchangeAll(sessions, b"before")
    return sessions


def exchangeAll(sessions: list[socket.socket], tag: bytes) -> int:
    """
    Send a distinct message on every session and read its echo.

    @param sessions: Connected echo sessions.
    @param tag: Part of every message.
    @return: How many sessions echoed correctly.
    @raise AssertionError: If one did not.
    """
    for i, s in enumerate(sessions):
        s.sendall(tag + b" %d\n" % (i,))
    for i, s in enumerate(sessions):
        expected = tag + b" %d\n" % (i,)
        got = b""
        while len(got) < len(expected):
            chunk = s.recv(len(expected) - len(got))
            if not chunk:
                break
            got += chunk
        assert got == expected, (i, got, expected)
    return len(sessions)


def secondsUntilRefused(port: int, since: float, timeout: float = 5.0) -> float:
    """
    Try to connect until the port refuses.

    A connection reset while connecting counts as a refusal: it was in the
    listening socket's backlog when the socket was closed, and was never
    served.

    @param port: The port.
    @param since: The L{time.monotonic} value to measure from.
    @param timeout: The most seconds to try.
    @return: Seconds from C{since} to the first refusal.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1)
            try:
                s.connect((LOOPBACK, port))
            except (ConnectionRefusedError, ConnectionResetError):
                return time.monotonic() - since
        time.sleep(0.002)
    return float("inf")


class UnitFileTests(SynchronousTestCase):
    """
    The systemd units in C{etc/systemd}, checked by C{systemd-analyze}.
    """

    def installedCopy(self) -> str:
        """
        Copy the units to a directory with C{ExecStart=} pointing at this
        checkout's twistd (C{verify} checks that the program exists).

        @return: The directory.
        """
        if shutil.which("systemd-analyze") is None:
            raise self.skipTest("systemd-analyze is not installed")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.path.exists(twistd):
            raise self.skipTest("no twistd beside this Python")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        for name in ("netd.service", "netd.socket"):
            with open(os.path.join(UNITS, name)) as f:
                text = f.read().replace("/opt/netd/bin/twistd", twistd)
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)
        return directory

    def test_verify(self) -> None:
        """
        C{systemd-analyze verify} finds nothing to say about either unit.
        """
        directory = self.installedCopy()
        result = subprocess.run(
            ["systemd-analyze", "verify", "netd.service", "netd.socket"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stderr.strip(), "")

    def test_securityScore(self) -> None:
        """
        C{systemd-analyze security --offline=true} rates the service 2.0 or
        better.
        """
        directory = self.installedCopy()
        result = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "netd.service"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
        )
        match = re.search(
            r"Overall exposure level for netd\.service: ([\d.]+)", result.stdout
        )
        self.assertIsNotNone(match, result.stdout + result.stderr)
        assert match is not None
        self.assertLessEqual(float(match.group(1)), 2.0, result.stdout)

    def test_directives(self) -> None:
        """
        The service unit has what the deployment relies on: readiness
        notification, the reload signal, the watchdog, no restart on a
        configuration error, the capability for low ports.
        """
        with open(os.path.join(UNITS, "netd.service")) as f:
            lines = {line.strip() for line in f}
        for line in (
            "Type=notify",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "RestartPreventExitStatus=78",
            "Restart=on-failure",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "SystemCallFilter=@system-service",
        ):
            self.assertIn(line, lines)
        self.assertTrue(any(line.startswith("WatchdogSec=") for line in lines))
        self.assertTrue(any(line.startswith("LimitNOFILE=") for line in lines))


class ConfigErrorLinesTests(SynchronousTestCase):
    """
    At most three lines on stderr for an invalid configuration.
    """

    def test_manyProblems(self) -> None:
        """
        Without C{--check}, many problems make three lines: two problems and
        a count that says how to see the rest; C{--check} lists them all.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[netd]\na = 1\nb = 2\nc = 3\nd = 4\ne = 5\n[services]\n")
        outputs = []
        for args in ([], ["--check"]):
            options = Options()
            options.stderr = io.StringIO()
            exit = self.assertRaises(
                SystemExit, options.parseOptions, ["--config", path, *args]
            )
            self.assertEqual(exit.code, EX_CONFIG)
            outputs.append(options.stderr.getvalue().splitlines())
        brief, full = outputs
        self.assertEqual(len(brief), 3, brief)
        self.assertEqual(brief[:2], full[:2])
        count = len(full) - 1
        self.assertGreater(count, 3)
        self.assertEqual(
            brief[2],
            f"netd: {count} problems ({count - 2} more not shown: twistd netd "
            "--check --config FILE lists them all); nothing was started",
        )
        self.assertEqual(full[-1], f"netd: {count} problems; nothing was started")
