# -*- test-case-name: tests.test_reload -*-
"""
Tests for reloading: L{netd.reload.planReload} and
L{NetdService.reload<netd.daemon.NetdService.reload>} on real sockets, with
real sessions open across the reload.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.ssl import KeyPair
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.config import loadConfig, parseConfig
from netd.services import serviceTypes
from netd.daemon import NetdService
from netd.instances import ServiceInstance
from netd.reload import planReload
from netd.systemd import Notifier
from tests.test_listeners import LOOPBACK, freePort, settle, tcpExchange, waitFor


def service(name: str, port: int, type: str = "echo", limits: str = "") -> str:
    """
    @param name: The service name.
    @param port: Its TCP port on loopback.
    @param type: Its type.
    @param limits: Lines of its C{limits} table.
    @return: A C{[services.NAME]} table.
    """
    return (
        f'[services.{name}]\ntype = "{type}"\n'
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        f"[services.{name}.limits]\n{limits}\n"
    )


class PlanTests(SynchronousTestCase):
    """
    Tests for L{planReload}.
    """

    def test_diff(self) -> None:
        """
        Services are compared by value: same name and same configuration is
        unchanged, a different limit or listener is changed, and names only
        on one side are added or removed.
        """
        old = parseConfig(
            serviceTypes(),
            service("same", 1001) + service("limits", 1002) + service("gone", 1003),
            "old",
        )
        new = parseConfig(
            serviceTypes(),
            service("same", 1001)
            + service("limits", 1002, limits="max_sessions = 5")
            + service("new", 1004),
            "new",
        )
        plan = planReload(old, new)
        self.assertEqual([s.name for s in plan.unchanged], ["same"])
        self.assertEqual(
            [(o.name, n.name) for o, n in plan.changed], [("limits", "limits")]
        )
        self.assertEqual([s.name for s in plan.added], ["new"])
        self.assertEqual([s.name for s in plan.removed], ["gone"])
        self.assertEqual(plan.retired, ("gone", "limits"))
        self.assertEqual(
            plan.describe(),
            "added: new; removed: gone; changed: limits; unchanged: same",
        )

    def test_listenerChange(self) -> None:
        """
        A changed listener list changes the service.
        """
        old = parseConfig(serviceTypes(), service("a", 1001), "old")
        new = parseConfig(serviceTypes(), service("a", 1002), "new")
        self.assertEqual(len(planReload(old, new).changed), 1)

    def test_statsIntervalChangesAll(self) -> None:
        """
        A new C{stats_interval} changes every service (each has a timer).
        """
        old = parseConfig(serviceTypes(), service("a", 1001), "old")
        new = parseConfig(
            serviceTypes(), "[netd]\nstats_interval = 5\n" + service("a", 1001), "new"
        )
        self.assertEqual(len(planReload(old, new).changed), 1)

    def test_restartOnly(self) -> None:
        """
        A changed C{user} is reported as needing a restart.
        """
        old = parseConfig(serviceTypes(), service("a", 1001), "old")
        new = parseConfig(
            serviceTypes(), '[netd]\nuser = "nobody"\n' + service("a", 1001), "new"
        )
        plan = planReload(old, new)
        self.assertEqual(plan.restartOnly, ("user",))
        self.assertEqual(plan.unchanged, old.services)


class Client(Protocol):
    """
    A TCP client that records what it receives.

    @ivar received: Everything received.
    @ivar lost: Whether the connection is closed.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.lost = True


class RecordingNotifier(Notifier):
    """
    A L{Notifier} that records its messages.

    @ivar messages: Each message's assignments.
    """

    def __init__(self) -> None:
        super().__init__("/nowhere")
        self.messages: list[tuple[str, ...]] = []

    def notify(self, *assignments: str) -> bool:
        self.messages.append(assignments)
        return True


class ReloadTests(TestCase):
    """
    Tests for L{NetdService.reload}.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.events: list[dict[str, Any]] = []
        self.patch(NetdService, "_log", Logger(observer=self.events.append))

    def write(self, text: str) -> None:
        """
        @param text: The new content of the configuration file.
        """
        with open(self.path, "w") as f:
            f.write(text)

    def start(self, text: str) -> NetdService:
        """
        @param text: The configuration.
        @return: A started netd on it, stopped after the test.
        """
        self.write(text)
        self.notifier = RecordingNotifier()
        root = NetdService(
            loadConfig(serviceTypes(), self.path), notifier=self.notifier
        )
        self.addCleanup(root.stopService)
        root.startService()
        return root

    async def connect(self, port: int) -> Client:
        """
        @param port: A TCP port on loopback.
        @return: A connected L{Client}, closed after the test.
        """
        client = Client()
        factory = ClientFactory.forProtocol(lambda: client)
        connector = reactor.connectTCP(LOOPBACK, port, factory)
        self.addCleanup(connector.disconnect)
        await waitFor(
            lambda: client.transport is not None and client.connected, what="connected"
        )
        return client

    async def echoes(self, client: Client, data: bytes) -> None:
        """
        Assert that an open echo session still echoes.

        @param client: The session's client.
        @param data: What to send.
        """
        before = len(client.received)
        client.transport.write(data)
        await waitFor(lambda: len(client.received) >= before + len(data), what="echo")
        self.assertEqual(client.received[before:], data)

    def instance(self, root: NetdService, name: str) -> ServiceInstance:
        """
        @return: The running instance of that name.
        """
        found = root.served.getServiceNamed(name)
        assert isinstance(found, ServiceInstance)
        return found

    def refused(self, port: int) -> bool:
        """
        @return: Whether a connection to the port is refused.
        """
        with socket.socket() as s:
            return s.connect_ex((LOOPBACK, port)) != 0

    async def test_unchangedUntouched(self) -> None:
        """
        A reload that adds a service and changes another leaves an unchanged
        service alone: the same instance, the same port, and its open
        session keeps working.
        """
        a, b, c = freePort(), freePort(), freePort()
        root = self.start(service("keep", a) + service("change", b))
        keep = self.instance(root, "keep")
        port = keep.listenerServices()[0].port
        client = await self.connect(a)
        await self.echoes(client, b"before")
        self.write(
            service("keep", a)
            + service("change", b, limits="max_sessions = 3")
            + service("added", c, type="discard")
        )
        self.assertTrue(self.successResultOf(root.reload()).applied)
        self.assertIs(self.instance(root, "keep"), keep)
        self.assertIs(keep.listenerServices()[0].port, port)
        await self.echoes(client, b"after")
        self.assertFalse(client.lost)
        swallowed = await deferToThread(tcpExchange, LOOPBACK, c, b"x" * 1000)
        self.assertEqual((swallowed.sent, swallowed.received), (1000, b""))
        self.assertEqual(root.served.ownPorts, {a, b, c})
        self.assertEqual(set(root.served.instances), {"keep", "change", "added"})
        self.assertIs(
            root.served.instances["added"], self.instance(root, "added").context
        )
        self.assertIs(
            self.instance(root, "added").context.instances, root.served.instances
        )
        self.assertEqual(
            [e["summary"] for e in self.events if "summary" in e],
            ["added: added; changed: change; unchanged: keep"],
        )

    async def test_changedKeepsSocket(self) -> None:
        """
        A changed service is rebuilt but keeps the socket of an address that
        stays (no gap, no new bind); its open session drains while new ones
        get the new limits.
        """
        a = freePort()
        root = self.start(service("echo", a))
        old = self.instance(root, "echo")
        port = old.listenerServices()[0].port
        client = await self.connect(a)
        self.write(service("echo", a, limits="max_sessions_per_peer = 1"))
        self.assertTrue(self.successResultOf(root.reload()).applied)
        new = self.instance(root, "echo")
        self.assertIsNot(new, old)
        self.assertIs(new.listenerServices()[0].port, port)
        self.assertEqual(root.served.retired, [old])
        await self.echoes(client, b"old session")
        result = await deferToThread(tcpExchange, LOOPBACK, a, b"new session")
        self.assertEqual(result.received, b"new session")
        self.assertEqual(new.context.config.limits.maxSessionsPerPeer, 1)
        self.assertEqual(new.context.counters.sessions, 1)
        client.transport.loseConnection()
        await waitFor(lambda: not root.served.retired, what="retired instance drained")

    async def test_socketOptionsOnKeptSocket(self) -> None:
        """
        A listener that differs only in C{reuse_port} keeps its socket, with
        the option set on it.
        """
        a = freePort()
        root = self.start(service("echo", a))
        port = self.instance(root, "echo").listenerServices()[0].port
        self.write(
            '[services.echo]\ntype = "echo"\n'
            f'listen = [{{ address = "tcp:{a}:interface=127.0.0.1", reuse_port = true }}]\n'
        )
        self.assertTrue(self.successResultOf(root.reload()).applied)
        self.assertIs(self.instance(root, "echo").listenerServices()[0].port, port)
        self.assertEqual(
            port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), 1
        )

    async def test_removedStopsListening(self) -> None:
        """
        A removed service stops listening at once; its open session goes on
        until it ends.
        """
        a, b = freePort(), freePort()
        root = self.start(service("stay", a) + service("go", b))
        client = await self.connect(b)
        self.write(service("stay", a))
        self.assertTrue(self.successResultOf(root.reload()).applied)
        await settle(0.05)
        self.assertTrue(self.refused(b))
        self.assertNotIn("go", root.served.instances)
        self.assertEqual(root.served.ownPorts, {a})
        await self.echoes(client, b"still here")

    async def test_invalidConfigKeepsRunning(self) -> None:
        """
        An invalid file is rejected with one error event naming the problem;
        nothing changes; systemd hears RELOADING=1 then READY=1.
        """
        a = freePort()
        root = self.start(service("echo", a))
        before = list(root)
        self.write('[services.echo]\ntype = "echo"\nlisten = ["tcp:99999"]\n')
        self.assertFalse(self.successResultOf(root.reload()).applied)
        self.assertEqual(list(root), before)
        errors = [e for e in self.events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("services.echo.listen[0]", errors[0]["problems"])
        self.assertIn("out of range", errors[0]["problems"])
        result = await deferToThread(tcpExchange, LOOPBACK, a, b"still")
        self.assertEqual(result.received, b"still")
        names = [m[0] for m in self.notifier.messages]
        after = self.notifier.messages[names.index("RELOADING=1") + 1]
        self.assertEqual(after[0], "READY=1")
        self.assertIn("reload failed", after[1])

    async def test_bindFailureRollsBack(self) -> None:
        """
        If a new listener cannot be bound, the listeners bound for the reload
        are closed again and the running configuration stays.
        """
        a, b = freePort(), freePort()
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind((LOOPBACK, 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        root = self.start(service("echo", a))
        config = root.config
        self.write(service("echo", a) + service("new", b) + service("busy", busy))
        self.assertFalse(self.successResultOf(root.reload()).applied)
        self.assertIs(root.config, config)
        self.assertEqual([i.name for i in root.served.serviceInstances()], ["echo"])
        self.assertEqual(root.served.ownPorts, {a})
        await settle(0.05)
        self.assertTrue(self.refused(b))
        errors = [e for e in self.events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("address already in use", errors[0]["error"])

    async def test_readyAfterReload(self) -> None:
        """
        A successful reload sends RELOADING=1, then READY=1 with the status.
        """
        a, b = freePort(), freePort()
        root = self.start(service("echo", a))
        await settle(0.01)
        self.write(service("echo", a) + service("more", b))
        root.reload()
        self.assertEqual(
            self.notifier.messages[-2:][0][0], "RELOADING=1", self.notifier.messages
        )
        self.assertEqual(
            self.notifier.messages[-1],
            ("READY=1", "STATUS=serving 2 services on 2 listeners"),
        )


def writeCertificate(path: str, name: str) -> bytes:
    """
    Write a new self-signed certificate and its key to one PEM file.

    @param path: The file.
    @param name: The certificate's common name.
    @return: The certificate, DER-encoded.
    """
    from OpenSSL import crypto

    key = KeyPair.generate(size=2048)
    certificate = key.selfSignedCert(1, commonName=name)
    with open(path, "wb") as f:
        f.write(certificate.dumpPEM())
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate.original)


def peerCertificate(port: int) -> bytes:
    """
    Connect over TLS (without verification) and fetch the server's
    certificate. Blocking: run it in a thread.

    @param port: The TLS port on loopback.
    @return: The certificate, DER-encoded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((LOOPBACK, port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            certificate = tls.getpeercert(binary_form=True)
            assert certificate is not None
            return certificate


class CertificateReloadTests(TestCase):
    """
    Reloading TLS certificates.
    """

    async def test_unchangedListenerGetsNewCertificate(self) -> None:
        """
        On reload, an unchanged C{ssl:} listener re-reads its certificate
        file: new connections get the new certificate.
        """
        pem = self.mktemp()
        first = writeCertificate(pem, "first")
        port = freePort()
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                '[services.tls]\ntype = "echo"\n'
                f'listen = ["ssl:{port}:privateKey={pem}:certKey={pem}:interface=127.0.0.1"]\n'
            )
        root = NetdService(loadConfig(serviceTypes(), path))
        self.addCleanup(root.stopService)
        root.startService()
        self.assertEqual(await deferToThread(peerCertificate, port), first)
        second = writeCertificate(pem, "second")
        self.assertTrue(self.successResultOf(root.reload()).applied)
        self.assertEqual(await deferToThread(peerCertificate, port), second)
