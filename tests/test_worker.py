# -*- test-case-name: tests.test_worker -*-
"""
Tests for the worker side (L{netd.workers.child}): adopting sockets passed by the
main process on loopback, reloading in place, the event pipe, the control
pipe; and sockets passed by systemd getting netd's own port classes.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import Logger, eventFromJSON, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd import listeners
from netd.config import parseConfig
from netd.services import serviceTypes
from netd.daemon import NetdService
from netd.sockets import SharedTCPPort, TCPPort, UDPPort
from netd.systemd import InheritedSockets
from netd.transport import WriteThroughServer
from netd.services.exec import buildProgram, supervisorFor
from netd.servicetype import heldDescriptorFor, isHeld, setHeldDescriptors
from netd.spawn.client import DoorSpawner
from netd.workers.child import (
    ControlReader,
    EventPipe,
    Worker,
    keepHeld,
    servedConfig,
    workerService,
)
from tests.test_listeners import (
    LOOPBACK,
    DatagramCollector,
    tcpExchange,
    waitFor,
)

TCP = "echo/tcp:0:interface=127.0.0.1"
UDP = "echo/udp:0:interface=127.0.0.1"
CONFIG = (
    '[services.echo]\ntype = "echo"\n'
    'listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]\n'
)
CHAT = '[services.chat]\ntype = "chat"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'


def boundSocket(kind: int) -> socket.socket:
    """
    @param kind: C{SOCK_STREAM} or C{SOCK_DGRAM}.
    @return: A non-blocking socket on loopback, as the main process binds
        them (listening, if a stream one).
    """
    skt = socket.socket(socket.AF_INET, kind)
    skt.bind((LOOPBACK, 0))
    if kind == socket.SOCK_STREAM:
        skt.listen(50)
    skt.setblocking(False)
    return skt


class AnswerRecorder:
    """
    Stands for a worker's event pipe: keeps the messages sent.
    """

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages

    def send(self, message: dict[str, Any]) -> None:
        """
        @param message: A message for the main process.
        """
        self.messages.append(message)


class AdoptionTests(TestCase):
    """
    A worker's root service (L{workerService}) serving sockets bound by
    someone else, as a worker
    serves the main process's.
    """

    def setUp(self) -> None:
        self.tcp = boundSocket(socket.SOCK_STREAM)
        self.udp = boundSocket(socket.SOCK_DGRAM)
        self.addCleanup(self.tcp.close)
        self.addCleanup(self.udp.close)

    def worker(self, text: str = CONFIG, **sockets: int) -> NetdService:
        """
        Start a worker on duplicates of the test's sockets (a worker closes
        its inherited descriptors when it stops).

        @param text: The configuration.
        @param sockets: More listener names and descriptors.
        @return: The started service.
        """
        given = {TCP: os.dup(self.tcp.fileno()), UDP: os.dup(self.udp.fileno())}
        given.update(sockets)
        service = workerService(
            parseConfig(serviceTypes(), text, "netd.toml"),
            reactor,
            None,
            index=1,
            sockets=given,
        )
        self.addCleanup(service.stopService)
        service.startService()
        return service

    async def test_tcpEcho(self) -> None:
        """
        A passed TCP socket is served through a L{SharedTCPPort} (it
        accepts one connection at a time, so that the workers share them),
        whose connections are L{WriteThroughServer}s; it is never bound
        again.
        """
        service = self.worker()
        [instance] = service.served.serviceInstances()
        tcpListener = [l for l in instance.listenerServices() if l.name == TCP][0]
        self.assertIsInstance(tcpListener.port, SharedTCPPort)
        self.assertIs(tcpListener.port.transport, WriteThroughServer)
        # One accept per readiness event, whatever Twisted would adapt to.
        self.assertEqual(tcpListener.port.numberAccepts, 1)
        tcpListener.port.numberAccepts = 120
        self.assertEqual(tcpListener.port.numberAccepts, 1)
        port = self.tcp.getsockname()[1]
        self.assertEqual(tcpListener.boundPortNumber(), port)
        result = await deferToThread(tcpExchange, LOOPBACK, port, b"adopted" * 100)
        self.assertEqual(result.received, b"adopted" * 100)

    async def test_udpEcho(self) -> None:
        """
        A passed UDP socket is served through a L{UDPPort}.
        """
        service = self.worker()
        [instance] = service.served.serviceInstances()
        udpListener = [l for l in instance.listenerServices() if l.name == UDP][0]
        self.assertIsInstance(udpListener.port, UDPPort)
        client = DatagramCollector()
        clientPort = reactor.listenUDP(0, client, interface=LOOPBACK)
        self.addCleanup(clientPort.stopListening)
        client.transport.write(b"datagram", (LOOPBACK, self.udp.getsockname()[1]))
        await waitFor(lambda: client.received, what="UDP echo")
        self.assertEqual(client.received[0][0], b"datagram")

    async def test_onlyGivenServices(self) -> None:
        """
        A worker builds only the services it was given every socket of: a
        worker other than 0 does not run chat.
        """
        service = self.worker(CONFIG + CHAT)
        self.assertEqual([i.name for i in service.served.serviceInstances()], ["echo"])
        self.assertEqual([s.name for s in service.config.services], ["echo"])

    async def test_reloadInPlace(self) -> None:
        """
        A reload from the main process applies the new settings on the same
        sockets, without binding.
        """
        service = self.worker()
        answers: list[dict[str, Any]] = []
        worker = Worker(1, service, AnswerRecorder(answers))
        port = self.tcp.getsockname()[1]
        result = await worker.reloadFrom(
            {
                "text": CONFIG + "[services.echo.limits]\nmax_sessions = 7\n",
                "source": "netd.toml",
                "sockets": dict(service.served.sockets),
                "ownPorts": [port],
            }
        )
        self.assertTrue(result.applied)
        self.assertEqual(
            answers,
            [{"netdWorker": "reloaded", "applied": True, "summary": result.summary}],
        )
        [instance] = service.served.serviceInstances()
        self.assertEqual(instance.context.policy.limits.maxSessions, 7)
        self.assertIn(port, service.served.ownPorts)
        result = await deferToThread(tcpExchange, LOOPBACK, port, b"after reload")
        self.assertEqual(result.received, b"after reload")

    async def test_reloadRefused(self) -> None:
        """
        A configuration the worker cannot read is refused, and the refusal
        is answered with its first problem.
        """
        service = self.worker()
        answers: list[dict[str, Any]] = []
        worker = Worker(1, service, AnswerRecorder(answers))
        result = await worker.reloadFrom(
            {"text": "[services.x]\ntype = 'nosuch'\n", "source": "netd.toml"}
        )
        self.assertFalse(result.applied)
        self.assertEqual(answers[0]["applied"], False)
        self.assertIn("nosuch", answers[0]["summary"])

    async def test_stopClosesInherited(self) -> None:
        """
        Stopping closes the inherited descriptors too, so that the socket is
        closed once every process let go of it.
        """
        service = self.worker()
        inherited = {fd: os.fstat(fd).st_ino for fd in service.served.sockets.values()}
        await service.stopService()
        self.assertEqual(service.served.sockets, {})
        for fd, inode in inherited.items():
            try:
                now = os.fstat(fd).st_ino
            except OSError:
                continue
            # The number was reused by something else.
            self.assertNotEqual(now, inode)

    async def test_systemdSocketGetsTCPPort(self) -> None:
        """
        A stream socket passed by systemd is served through a L{TCPPort}
        too (Twisted's C{adoptStreamPort} would make a plain C{tcp.Port}).
        """
        inherited = InheritedSockets([self.tcp.fileno()], ["e-tcp"])
        self.patch(listeners, "inheritedSockets", lambda: inherited)
        service = NetdService(
            parseConfig(
                serviceTypes(),
                '[services.echo]\ntype = "echo"\nlisten = ["systemd:e-tcp"]\n',
                "x",
            )
        )
        self.addCleanup(service.stopService)
        service.startService()
        [listener] = service.served.serviceInstances()[0].listenerServices()
        self.assertIs(type(listener.port), TCPPort)
        result = await deferToThread(
            tcpExchange, LOOPBACK, self.tcp.getsockname()[1], b"systemd"
        )
        self.assertEqual(result.received, b"systemd")


class HeldSpawnerTests(TestCase):
    """
    Worker 0 with the door of an exec service's door keeper (forked by the
    main process, here by the test): its supervisor asks the door for a
    spawner instead of forking one, also after a reload in place, until
    the main process stops naming the door.
    """

    timeout = 30

    def setUp(self) -> None:
        self.tcp = boundSocket(socket.SOCK_STREAM)
        self.addCleanup(self.tcp.close)
        self.port = self.tcp.getsockname()[1]
        self.user = 'user = "daemon"\n' if os.geteuid() == 0 else ""
        self.text = (
            '[services.x]\ntype = "exec"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
            f'command = ["/usr/bin/id", "-u"]\n{self.user}'
        )
        config = parseConfig(serviceTypes(), self.text, "netd.toml")
        self.keeper = DoorSpawner(
            buildProgram("x", config.services[0].settings), reactor, "x"
        )
        self.keeper.start()
        self.addCleanup(self.keeper.stop)
        self.door = os.dup(self.keeper.doorFileno())
        self.addCleanup(setHeldDescriptors, setHeldDescriptors({"x": self.door}))

    def expectedUid(self) -> int:
        """
        @return: The uid the programs run as.
        """
        return pwd.getpwnam("daemon").pw_uid if self.user else os.geteuid()

    async def uid(self) -> int:
        """
        @return: What the program printed to a client.
        """

        def read() -> bytes:
            with socket.create_connection((LOOPBACK, self.port), timeout=10) as s:
                chunks = []
                while chunk := s.recv(100):
                    chunks.append(chunk)
                return b"".join(chunks)

        return int(await deferToThread(read))

    async def test_spawnerThroughDoor(self) -> None:
        """
        The exec service's spawner comes through the door (no fork of its
        own), and its programs run as the service's user; a reload in place
        that changes the service gets a new spawner through the same door;
        one that no longer names the door closes it.
        """
        given = {"x/tcp:0:interface=127.0.0.1": os.dup(self.tcp.fileno())}
        service = workerService(
            parseConfig(serviceTypes(), self.text, "netd.toml"),
            reactor,
            None,
            index=0,
            sockets=given,
        )
        self.addCleanup(service.stopService)
        service.startService()
        [instance] = service.served.serviceInstances()
        supervisor = supervisorFor(instance.context)
        self.assertEqual(supervisor.spawner.door, self.door)
        self.assertIsNone(supervisor.spawner.pid)
        self.assertEqual(await supervisor.spawner.ready, self.expectedUid())
        self.assertEqual(await self.uid(), self.expectedUid())

        worker = Worker(0, service, AnswerRecorder([]))
        message = {
            "source": "netd.toml",
            "sockets": dict(given),
            "ownPorts": [self.port],
        }
        result = await worker.reloadFrom(
            {
                **message,
                "text": self.text + "[services.x.limits]\nmax_sessions = 3\n",
                "held": {"x": 99},
                "heldNames": ["x"],
            }
        )
        self.assertTrue(result.applied, result.summary)
        [instance] = service.served.serviceInstances()
        reloaded = supervisorFor(instance.context)
        self.assertIsNot(reloaded, supervisor)
        # The inherited descriptor, not the number of a fresh worker.
        self.assertEqual(reloaded.spawner.door, self.door)
        self.assertEqual(await self.uid(), self.expectedUid())

        result = await worker.reloadFrom(
            {
                **message,
                "text": self.text + "[services.x.limits]\nmax_sessions = 3\n",
                "held": {},
                "heldNames": [],
            }
        )
        self.assertIsNone(heldDescriptorFor("x"))
        self.assertFalse(isHeld("x"))
        # Unchanged: the instance keeps the spawner it has.
        self.assertTrue(result.applied, result.summary)
        [instance] = service.served.serviceInstances()
        self.assertIs(supervisorFor(instance.context), reloaded)


class KeepHeldTests(SynchronousTestCase):
    """
    L{keepHeld}: on a reload, the held descriptors the main process no
    longer names are closed.
    """

    def test_keepHeld(self) -> None:
        """
        Named ones stay (with their inherited numbers), others are closed;
        the services other workers serve are remembered as held.
        """
        kept, dropped = os.open(os.devnull, os.O_RDONLY), os.open(
            os.devnull, os.O_RDONLY
        )
        self.addCleanup(os.close, kept)
        self.addCleanup(
            setHeldDescriptors, setHeldDescriptors({"a": kept, "b": dropped})
        )
        keepHeld({"a": 4}, ["a", "c"])
        self.assertEqual(heldDescriptorFor("a"), kept)
        self.assertIsNone(heldDescriptorFor("b"))
        self.assertTrue(isHeld("c"))
        self.assertFalse(isHeld("b"))
        with self.assertRaises(OSError):
            os.fstat(dropped)


class ServedConfigTests(SynchronousTestCase):
    """
    L{servedConfig}.
    """

    def test_filter(self) -> None:
        """
        Only the services whose every listener has a socket remain.
        """
        config = parseConfig(serviceTypes(), CONFIG + CHAT, "x")
        self.assertEqual(
            [s.name for s in servedConfig(config, {TCP: 4, UDP: 5}).services],
            ["echo"],
        )
        self.assertEqual([s.name for s in servedConfig(config, {TCP: 4}).services], [])


class EventPipeTests(SynchronousTestCase):
    """
    L{EventPipe}: a worker's log events as JSON lines.
    """

    def test_lines(self) -> None:
        """
        Each event is one line that L{eventFromJSON} reads back; messages are
        lines too.
        """
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        pipe = EventPipe(write)
        Logger(observer=pipe).info("hello {who}", who="world\nwide")
        pipe.send({"netdWorker": "ready"})
        lines = os.read(read, 65536).split(b"\n")
        self.assertEqual(lines[2], b"")
        self.assertEqual(
            formatEvent(eventFromJSON(lines[0].decode())), "hello world\nwide"
        )
        self.assertEqual(json.loads(lines[1]), {"netdWorker": "ready"})

    def test_broken(self) -> None:
        """
        Once the main process is gone (the pipe is broken), events are
        dropped without an error.
        """
        read, write = os.pipe()
        self.addCleanup(os.close, write)
        os.close(read)
        pipe = EventPipe(write)
        Logger(observer=pipe).info("lost")
        self.assertTrue(pipe.broken)


class FakeReactor(Clock):
    """
    A clock whose L{stop} is recorded.
    """

    stopped = 0

    def stop(self) -> None:
        self.stopped += 1

    def addReader(self, reader: Any) -> None:
        pass

    def removeReader(self, reader: Any) -> None:
        pass

    def removeWriter(self, writer: Any) -> None:
        pass


class ControlTests(SynchronousTestCase):
    """
    L{ControlReader}: commands from the main process, and its end.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.service = workerService(
            parseConfig(serviceTypes(), CONFIG, "x"),
            self.reactor,
            None,
            index=0,
            sockets={TCP: 100, UDP: 101},
        )
        self.worker = Worker(0, self.service)
        self.reloads: list[Any] = []
        self.worker.reloadFrom = self.reloads.append  # type: ignore[method-assign,assignment]
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        self.control = ControlReader(read, self.worker, self.reactor)

    def test_reload(self) -> None:
        """
        A reload line, possibly in pieces, reloads the service.
        """
        self.control.dataReceived(b'{"command": "reload", "te')
        self.assertEqual(self.reloads, [])
        self.control.dataReceived(b'xt": "x"}\n')
        self.assertEqual(self.reloads, [{"command": "reload", "text": "x"}])

    def test_mainGone(self) -> None:
        """
        The end of the control pipe stops the worker (it drains).
        """
        self.service.running = True
        self.control.connectionLost(Failure(Exception("EOF")))
        self.assertEqual(self.reactor.stopped, 1)


class UNIXAdoptionTests(TestCase):
    """
    A UNIX stream socket passed by the main process.
    """

    async def test_pathKept(self) -> None:
        """
        A worker serves a passed UNIX socket, and stopping leaves its path
        in place (the main process, which bound it, removes it).
        """
        directory = tempfile.mkdtemp(prefix="netd-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "echo.sock")
        skt = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(skt.close)
        skt.bind(path)
        skt.listen(5)
        skt.setblocking(False)
        service = workerService(
            parseConfig(
                serviceTypes(),
                f'[services.echo]\ntype = "echo"\nlisten = ["unix:{path}"]\n',
                "x",
            ),
            reactor,
            None,
            index=0,
            sockets={f"echo/unix:{path}": os.dup(skt.fileno())},
        )
        service.startService()

        def exchange() -> bytes:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(10)
                client.connect(path)
                client.sendall(b"over unix")
                client.shutdown(socket.SHUT_WR)
                return b"".join(iter(lambda: client.recv(100), b""))

        self.assertEqual(await deferToThread(exchange), b"over unix")
        await service.stopService()
        self.assertTrue(os.path.exists(path))


class InstallReactorTests(SynchronousTestCase):
    """
    A worker runs the main process's kind of reactor, or says why not.
    """

    def installIn(self, name: str, first: str = "") -> tuple[str, str]:
        """
        Call L{netd.workers.child.installReactor} in a fresh interpreter.

        @param name: The reactor class to ask for.
        @param first: Code to run before (installing another reactor).
        @return: What it printed: the installed reactor's class name, or
            the L{ReactorUnavailable} message.
        """
        import subprocess
        import sys

        import netd

        code = (
            "import sys\n"
            f"{first}\n"
            "from netd.workers.child import ReactorUnavailable, installReactor\n"
            "try:\n"
            "    installReactor(sys.argv[1] or None)\n"
            "except ReactorUnavailable as e:\n"
            "    print('unavailable:', e)\n"
            "else:\n"
            "    from twisted.internet import reactor\n"
            "    print(type(reactor).__name__)\n"
        )
        env = dict(os.environ)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(netd.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([repo, env.get("PYTHONPATH", "")])
        result = subprocess.run(
            [sys.executable, "-c", code, name],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        return result.stdout.strip(), result.stderr

    def test_mainProcessReactor(self) -> None:
        """
        The reactor class the main process names is installed; netd's own
        (or no name) through Twisted's reactor plugins.
        """
        for name in ("netd.reactor.NetdEPollReactor", ""):
            installed, errors = self.installIn(name)
            self.assertEqual(installed, "NetdEPollReactor")
            self.assertEqual(errors, "")
        installed, errors = self.installIn("twisted.internet.pollreactor.PollReactor")
        self.assertEqual(installed, "PollReactor")

    def test_unknownReactorIsRefused(self) -> None:
        """
        A reactor class that cannot be built is refused, naming it: the
        worker never falls back to another reactor.
        """
        installed, errors = self.installIn("no.such.Reactor")
        self.assertIn(
            "unavailable: cannot install the no.such.Reactor reactor", installed
        )

    def test_otherReactorInstalledIsRefused(self) -> None:
        """
        If another reactor was installed first, the worker says so instead
        of running on it.
        """
        installed, errors = self.installIn(
            "netd.reactor.NetdEPollReactor",
            first="from twisted.internet import selectreactor; selectreactor.install()",
        )
        self.assertEqual(
            installed,
            "unavailable: the twisted.internet.selectreactor.SelectReactor reactor "
            "is installed, not netd.reactor.NetdEPollReactor",
        )
