# -*- test-case-name: tests.test_chat_net -*-
"""
The chat service on real sockets on 127.0.0.1, in this process: TLS, and
UDP members in the same room as TCP clients.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from netd.chat.commands import ChatServer
from netd.config import parseConfig
from netd.services import serviceTypes
from netd.instances import ServiceInstance
from tests.support import writeSelfSignedCertificate
from tests.test_chat_web import Expecting, LineClient


class DatagramClient(DatagramProtocol, Expecting):
    """
    A UDP chat client: records what it is sent.
    """

    def __init__(self) -> None:
        Expecting.__init__(self)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        for line in data.decode("utf-8").splitlines():
            self.got(line)

    def send(self, text: str, port: int) -> None:
        """
        @param text: One line (padded: a member is sent at most what it
            sent).
        @param port: The server's port.
        """
        self.transport.write((text + " " * 300 + "\n").encode(), ("127.0.0.1", port))


class NetworkTests(TestCase):
    """
    A chat service started from a configuration, as netd would.
    """

    timeout = 30

    def startChat(self, listen: str, **extra: str) -> dict[str, int]:
        """
        Start a chat service instance.

        @param listen: The TOML array of listeners.
        @param extra: Extra TOML lines.
        @return: Its bound ports, by listener kind.
        """
        self.events: list[dict[str, Any]] = []
        self.patch(ChatServer, "_log", Logger(observer=self.events.append))
        text = f'[services.chat]\ntype = "chat"\nlisten = {listen}\n'
        config = parseConfig(serviceTypes(), text, "test")
        instance = ServiceInstance(config.services[0], set(), 3600.0, reactor)
        instance.startService()
        self.addCleanup(instance.stopService)
        return {
            child.listener.kind: child.boundPortNumber()
            for child in instance.listenerServices()
        }

    @inlineCallbacks
    def connectLine(self, port: int, tls: bytes | None = None) -> Any:
        """
        Connect a line client, over TLS if given the server's certificate.

        @param port: The port.
        @param tls: The certificate to trust, or L{None} for plain TCP.
        @return: A L{Deferred} firing with the connected L{LineClient}.
        """
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if tls is not None:
            options = optionsForClientTLS(
                "localhost", trustRoot=Certificate.loadPEM(tls)
            )
            endpoint = wrapClientTLS(options, endpoint)
        client = LineClient()
        yield connectProtocol(endpoint, client)
        self.addCleanup(self._close, client)
        return client

    def _close(self, client: LineClient) -> Any:
        if not client.lost.called:
            client.transport.loseConnection()
        return client.lost

    @inlineCallbacks
    def test_tls(self) -> Any:
        """
        The chat service runs on an C{ssl:} listener (a self-signed
        certificate made here), in the same rooms as its TCP listener; TLS
        clients are logged as such.
        """
        keyPath, certPath = writeSelfSignedCertificate(_tempdir(self))
        with open(certPath, "rb") as f:
            pem = f.read()
        ports = self.startChat(
            f'["ssl:0:privateKey={keyPath}:certKey={certPath}:interface=127.0.0.1", '
            '"tcp:0:interface=127.0.0.1"]'
        )
        secure = yield self.connectLine(ports["ssl"], tls=pem)
        yield secure.expect("Welcome")
        secure.say("secure")
        yield secure.expect(r"secure joined #lobby")
        plain = yield self.connectLine(ports["tcp"])
        plain.say("plain")
        yield secure.expect(r"^\*\*\* plain joined #lobby$")
        secure.say("over \x1b[1mTLS")
        yield plain.expect(r"^<secure> over TLS$")
        plain.say("over TCP")
        yield secure.expect(r"^<plain> over TCP$")
        joins = [(e["nick"], e["via"]) for e in self.events if e["chatEvent"] == "join"]
        self.assertEqual(joins, [("secure", "tls"), ("plain", "tcp")])

    @inlineCallbacks
    def test_udpAndTcpInOneRoom(self) -> Any:
        """
        A UDP member and a TCP client in the same room exchange messages
        over real sockets.
        """
        ports = self.startChat(
            '["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]'
        )
        tcp = yield self.connectLine(ports["tcp"])
        tcp.say("alice")
        yield tcp.expect("alice joined")
        udp = DatagramClient()
        udpPort = reactor.listenUDP(0, udp, interface="127.0.0.1")
        self.addCleanup(udpPort.stopListening)
        udp.send("/nick carol", ports["udp"])
        yield tcp.expect(r"^\*\*\* carol joined #lobby$")
        yield udp.expect(r"^\*\*\* carol joined #lobby$")
        udp.send("hello from udp", ports["udp"])
        line = yield tcp.expect(r"^<carol>")
        self.assertEqual(line.rstrip(), "<carol> hello from udp")
        tcp.say("hello from tcp")
        yield udp.expect(r"^<alice> hello from tcp$")


def _tempdir(testCase: TestCase) -> str:
    """
    @param testCase: The test.
    @return: A new directory for its files.
    """
    path = os.path.abspath(testCase.mktemp())
    os.makedirs(path)
    return path
