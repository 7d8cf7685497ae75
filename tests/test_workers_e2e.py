# -*- test-case-name: tests.test_workers_e2e -*-
"""
End-to-end tests of worker processes: the real C{twistd -n netd} with
C{workers = 2}, real clients, real signals.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import tempfile
import time
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.test_deployment import (
    SlowClient,
    findInterpreterFor,
    procStatus,
    secondsUntilRefused,
)
from tests.test_endtoend import Daemon, freePorts, isFree
from tests.test_listeners import LOOPBACK, DatagramCollector, tcpExchange, waitFor


def children(pid: int) -> list[int]:
    """
    @param pid: A process.
    @return: Its child processes (from C{/proc}).
    """
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(name))
    return sorted(found)


def udpSocketInodes(port: int) -> set[int]:
    """
    @param port: A UDP port.
    @return: The inodes of the IPv4 UDP sockets bound to it, from
        C{/proc/net/udp}.
    """
    inodes = set()
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def socketInodes(pid: int) -> set[int]:
    """
    @param pid: A process.
    @return: The inodes of the sockets it has open.
    """
    inodes = set()
    directory = f"/proc/{pid}/fd"
    for name in os.listdir(directory):
        try:
            target = os.readlink(os.path.join(directory, name))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def commandLine(pid: int) -> str:
    """
    @param pid: A process.
    @return: Its command line, words separated by spaces.
    """
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def alive(pid: int) -> bool:
    """
    @param pid: A process id.
    @return: Whether it names a running (not zombie) process.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def httpGet(port: int, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    """
    One HTTP request on a new connection (blocking: run it in a thread).

    @param port: The server's port on loopback.
    @param path: The target.
    @return: The status, the headers and the body.
    """
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class WorkersEndToEndTests(TestCase):
    """
    C{twistd netd} with two workers.
    """

    timeout = 90

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        os.chmod(self.directory, 0o755)

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

    def netd(self, config: str, *twistdArgs: str, **kwargs: Any) -> Daemon:
        """
        Start C{twistd -n --pidfile= [twistdArgs] netd --config CONFIG}; kill
        it (and any worker left) after the test.

        @param config: The configuration file.
        @param twistdArgs: More twistd options.
        @param kwargs: For L{Daemon}.
        @return: The started L{Daemon}.
        """
        daemon = Daemon(
            [*twistdArgs, "-n", "--pidfile=", "netd", "--config", config],
            self.directory,
            **kwargs,
        )
        self.addCleanup(self.killAll, daemon)
        daemon.start()
        return daemon

    def killAll(self, daemon: Daemon) -> None:
        """
        Kill a daemon's workers, then the daemon, by their ids.

        @param daemon: The daemon.
        """
        if daemon.process is not None and daemon.process.poll() is None:
            for pid in children(daemon.process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        daemon.kill()

    async def workers(self, daemon: Daemon, count: int = 2) -> list[int]:
        """
        Wait until the main process has C{count} worker children.

        @param daemon: The daemon.
        @param count: How many.
        @return: Their process ids.
        """
        assert daemon.process is not None
        pid = daemon.process.pid
        await waitFor(lambda: len(children(pid)) == count, 20, f"{count} workers")
        return children(pid)

    async def udpEcho(self, port: int, payload: bytes) -> None:
        """
        Assert that UDP echo answers on a port.
        """
        from twisted.internet import reactor

        client = DatagramCollector()
        udp = reactor.listenUDP(0, client, interface=LOOPBACK)
        self.addCleanup(udp.stopListening)
        client.transport.write(payload, (LOOPBACK, port))
        await waitFor(lambda: client.received, 10, f"UDP echo on {port}")
        self.assertEqual(client.received[0][0], payload)

    async def test_serveRestartStop(self) -> None:
        """
        With C{workers = 2}: two worker processes, children of the main
        process, serve echo (TCP, UDP) and http; chat runs in worker 0 only;
        their log events reach the main process's JSON log with a C{worker}
        field; a worker killed with SIGKILL is restarted and service goes
        on; SIGTERM ends everything with status 0.
        """
        echo, www, chat = freePorts(3)
        config = self.writeConfig(
            "[netd]\nworkers = 2\ndrain_timeout = 5\n"
            f'[services.echo]\ntype = "echo"\nlisten = ["tcp:{echo}:interface=127.0.0.1",'
            f' "udp:{echo}:interface=127.0.0.1"]\n'
            f'[services.www]\ntype = "http"\nlisten = ["tcp:{www}:interface=127.0.0.1"]\n'
            f'[services.chat]\ntype = "chat"\nlisten = ["tcp:{chat}:interface=127.0.0.1"]\n'
        )
        daemon = self.netd(config, "--logger", "netd.logs.json")
        await daemon.waitForOutput(r"netd ready with 2 workers")
        assert daemon.process is not None
        main = daemon.process.pid
        first = await self.workers(daemon)
        for pid in first:
            self.assertIn("netd.workers.child", commandLine(pid))

        for n in range(6):
            echoed = await deferToThread(tcpExchange, LOOPBACK, echo, b"x%d" % n)
            self.assertEqual(echoed.received, b"x%d" % n)
        await self.udpEcho(echo, b"udp")
        status, headers, body = await deferToThread(httpGet, www)
        self.assertEqual(status, 200)
        chatted = await deferToThread(tcpExchange, LOOPBACK, chat, b"alice\n/quit\n")
        self.assertIn(b"Welcome", chatted.received)

        await daemon.waitForOutput(r"echo session from")
        events = [json.loads(line) for line in daemon.stdoutLines]
        sessions = [e for e in events if e.get("text", "").startswith("echo session")]
        self.assertTrue(sessions)
        for event in sessions:
            self.assertIn(event["worker"], (0, 1))
            self.assertIn(event["workerPid"], first)
        chatListening = [
            e for e in events if e.get("text", "").startswith("chat listening on")
        ]
        self.assertEqual(
            [e.get("worker") for e in chatListening], [None, 0], chatListening
        )

        os.kill(first[1], signal.SIGKILL)
        await daemon.waitForOutput(r"killed by SIGKILL .*restarting it in 0\.5s")
        await daemon.waitForOutput(r"worker \d ready \(pid", count=3)
        second = await self.workers(daemon)
        self.assertIn(first[0], second)
        self.assertNotIn(first[1], second)
        for n in range(6):
            echoed = await deferToThread(tcpExchange, LOOPBACK, echo, b"y%d" % n)
            self.assertEqual(echoed.received, b"y%d" % n)

        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stderr)
        for pid in second:
            self.assertFalse(alive(pid))
        self.assertEqual(children(main), [])

    async def test_udpSocketPerWorker(self) -> None:
        """
        A UDP listener with C{reuse_port} gives each worker its own socket
        on the address (so the kernel spreads datagrams across them), and
        every datagram, from many source ports, is answered.
        """
        [port] = freePorts(1)
        config = self.writeConfig(
            "[netd]\nworkers = 2\n"
            '[services.echo]\ntype = "echo"\nlisten = [\n'
            f'  {{ address = "udp:{port}:interface=127.0.0.1", reuse_port = true }},\n'
            "]\n"
        )
        daemon = self.netd(config)
        await daemon.waitForOutput(r"netd ready with 2 workers")
        pids = await self.workers(daemon)
        bound = udpSocketInodes(port)
        self.assertEqual(len(bound), 2)
        perWorker = [socketInodes(pid) & bound for pid in pids]
        self.assertEqual([len(inodes) for inodes in perWorker], [1, 1])
        self.assertNotEqual(perWorker[0], perWorker[1])
        for n in range(20):
            await self.udpEcho(port, b"datagram %d" % n)

    async def test_reload(self) -> None:
        """
        SIGHUP with a changed setting is passed on to both workers, which
        answer, and the main process says they applied it (the next
        responses carry it); SIGHUP with a new listener starts a new
        generation of workers that serves it, and the old one exits.
        """
        www, discard = freePorts(2)
        base = (
            "[netd]\nworkers = 2\ndrain_timeout = 5\n"
            f'[services.www]\ntype = "http"\nlisten = ["tcp:{www}:interface=127.0.0.1"]\n'
        )
        config = self.writeConfig(base + 'headers = { "X-Generation" = "one" }\n')
        daemon = self.netd(config)
        await daemon.waitForOutput(r"netd ready with 2 workers")
        first = await self.workers(daemon)
        status, headers, body = await deferToThread(httpGet, www)
        self.assertEqual(headers.get("X-Generation"), "one")

        self.writeConfig(base + 'headers = { "X-Generation" = "two" }\n')
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(r"\[worker \d .*reloaded .*changed: www", count=2)
        await daemon.waitForOutput(r"reloaded .*changed: www; applied by the 2 workers")
        for _ in range(8):
            status, headers, body = await deferToThread(httpGet, www)
            self.assertEqual(headers.get("X-Generation"), "two")
        self.assertEqual(await self.workers(daemon), first)

        self.writeConfig(
            base
            + f'[services.discard]\ntype = "discard"\nlisten = ["tcp:{discard}:interface=127.0.0.1"]\n'
        )
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(r"reloaded .*added: discard.*2 new workers serve it")
        swallowed = await deferToThread(tcpExchange, LOOPBACK, discard, b"new")
        self.assertEqual((swallowed.sent, swallowed.received), (3, b""))
        await waitFor(
            lambda: not any(alive(pid) for pid in first), 20, "old workers gone"
        )
        second = await self.workers(daemon)
        self.assertFalse(set(first) & set(second))
        status, headers, body = await deferToThread(httpGet, www)
        self.assertEqual(status, 200)
        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stderr)

    async def test_reloadBrokenConfig(self) -> None:
        """
        SIGHUP with an invalid file: one error line from the main process,
        and the workers keep serving.
        """
        (echo,) = freePorts(1)
        text = (
            "[netd]\nworkers = 2\n"
            f'[services.echo]\ntype = "echo"\nlisten = ["tcp:{echo}:interface=127.0.0.1"]\n'
        )
        config = self.writeConfig(text)
        daemon = self.netd(config)
        await daemon.waitForOutput(r"netd ready with 2 workers")
        first = await self.workers(daemon)
        self.writeConfig(text + "[services.bad]\ntype = 'nosuch'\n")
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(r"reload failed")
        echoed = await deferToThread(tcpExchange, LOOPBACK, echo, b"still here")
        self.assertEqual(echoed.received, b"still here")
        errors = [line for line in daemon.stdoutLines if "#error]" in line]
        self.assertEqual(len(errors), 1, daemon.stdout)
        self.assertEqual(await self.workers(daemon), first)
        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stderr)

    async def test_rootWorkersRunAsNobody(self) -> None:
        """
        As root with C{user = "nobody"}: the main process binds port 7, and
        both workers run as nobody, with C{NoNewPrivs}, and serve it.
        """
        if os.geteuid() != 0:
            raise self.skipTest("needs root (CI runs as root)")
        if not isFree(7):
            raise self.skipTest("port 7 is busy")
        # The workers are started after the switch to nobody, so nobody must
        # be able to run the interpreter (one under root's home cannot).
        interpreter = findInterpreterFor("nobody")
        if interpreter is None:
            raise self.skipTest("no Python that nobody can run with these packages")
        python, pythonpath = interpreter
        self.directory = tempfile.mkdtemp(prefix="netd-workers-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        os.chmod(self.directory, 0o755)
        nobody = pwd.getpwnam("nobody")
        config = self.writeConfig(
            '[netd]\nworkers = 2\nuser = "nobody"\n'
            '[services.echo]\ntype = "echo"\n'
            'listen = ["tcp:7:interface=127.0.0.1", "udp:7:interface=127.0.0.1"]\n'
        )
        daemon = self.netd(
            config,
            allowRoot=False,
            command=[python, "-c", "from twisted.scripts.twistd import run; run()"],
            env={"PYTHONPATH": pythonpath},
        )
        await daemon.waitForOutput(r"netd ready with 2 workers")
        workers = await self.workers(daemon)
        for pid in workers:
            status = procStatus(pid)
            self.assertEqual(status["Uid"].split(), [str(nobody.pw_uid)] * 4)
            self.assertEqual(status["Gid"].split(), [str(nobody.pw_gid)] * 4)
            self.assertEqual(int(status["CapEff"], 16), 0)
            self.assertEqual(status["NoNewPrivs"], "1")
        echoed = await deferToThread(tcpExchange, LOOPBACK, 7, b"seven")
        self.assertEqual(echoed.received, b"seven")
        await self.udpEcho(7, b"udp seven")
        code = await daemon.stop()
        self.assertEqual(code, 0, daemon.stderr)

    async def test_sigtermDrains(self) -> None:
        """
        SIGTERM during echo transfers spread over both workers: new
        connections are refused at once, every transfer completes, and the
        main process exits with status 0 once the workers have drained.
        """
        (port,) = freePorts(1)
        config = self.writeConfig(
            "[netd]\nworkers = 2\ndrain_timeout = 15\n"
            f'[services.echo]\ntype = "echo"\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        )
        daemon = self.netd(config)
        await daemon.waitForOutput(r"netd ready with 2 workers")
        workers = await self.workers(daemon)
        clients = [
            SlowClient(port, chunks=10, size=16 * 1024, pause=0.1) for _ in range(6)
        ]
        for client in clients:
            client.start()
        await waitFor(lambda: all(c.received for c in clients), 10, "transfers")
        assert daemon.process is not None
        signalled = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        refusedAfter = await deferToThread(secondsUntilRefused, port, signalled)
        self.assertLess(refusedAfter, 0.5)
        await waitFor(lambda: not any(c.is_alive() for c in clients), 20, "done")
        for client in clients:
            self.assertIsNone(client.error)
            self.assertTrue(client.received == client.sent, "echoed bytes differ")
        code = await daemon.wait(25)
        self.assertEqual(code, 0, daemon.stdout + daemon.stderr)
        self.assertNotIn("drain deadline reached", daemon.stdout)
        for pid in workers:
            self.assertFalse(alive(pid))
