# -*- test-case-name: tests.test_newtype -*-
"""
A service type netd has never heard of, defined here in one module and
added to a registry in one line, is parsed, validated, documented, served
over TCP and UDP, probed and planned for workers by netd's machinery
unchanged: L{ServiceType<netd.servicetype.ServiceType>} is the only place
that knows a type (issue 13).
"""

from __future__ import annotations

import io
import socket
from collections.abc import Mapping
from functools import partial
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.config import ConfigError, parseConfig
from netd.configreference import render
from netd.daemon import NetdService
from netd.probe import ProbeFailed, ProbeTarget, probeConfig, receiveExactly
from netd.reflection import guardedReplies, guardSettings
from netd.services import serviceTypes
from netd.servicetype import ServiceContext, ServiceType
from netd.settings import Setting, describe
from netd.workers.plan import workerSockets
from tests.test_listeners import LOOPBACK, freePort, tcpExchange


def quoteText(value: Any) -> str:
    """
    @param value: The raw C{quote} setting.
    @return: It, if it is one printable line.
    @raise ValueError: Otherwise.
    """
    if not isinstance(value, str) or not value.isprintable() or not value:
        raise ValueError(f"expected one printable line, got {describe(value)}")
    return value


class Quote(Protocol):
    """
    Sends the quote of the day, then closes.
    """

    transport: Any

    def __init__(self, line: bytes) -> None:
        self.line = line

    def connectionMade(self) -> None:
        self.transport.write(self.line)
        self.transport.loseConnection()


def quoteLine(context: ServiceContext) -> bytes:
    """
    @param context: The service instance.
    @return: Its quote, as a line.
    """
    return context.settings["quote"].encode("utf-8") + b"\r\n"


def buildStreamFactory(context: ServiceContext) -> IProtocolFactory:
    """
    @param context: The service instance.
    @return: A factory of L{Quote}s.
    """
    factory = Factory()
    factory.protocol = partial(Quote, quoteLine(context))
    factory.noisy = False
    return factory


def quoteProbe(target: ProbeTarget) -> str:
    """
    @param target: A listener.
    @return: What it said.
    @raise ProbeFailed: If it is not a line.
    """
    if target.transport == "datagram":
        reply = target.askDatagram(b"?")
    else:
        with target.connect() as skt:
            reply = receiveExactly(skt, len(b"carpe diem\r\n"))
    if not reply.endswith(b"\r\n"):
        raise ProbeFailed(f"sent {reply!r}")
    return f"sent {reply.strip().decode()!r}"


quote = ServiceType(
    name="quote",
    description="the quote of the day (RFC 865), over TCP and UDP",
    settings=guardSettings()
    + (Setting("quote", "carpe diem", quoteText, "what to say"),),
    buildStreamFactory=buildStreamFactory,
    buildDatagramProtocol=guardedReplies(
        lambda context: lambda data: quoteLine(context)
    ),
    probe=quoteProbe,
)


def registry() -> Mapping[str, ServiceType]:
    """
    @return: netd's registry and the new type: the one line a new type adds.
    """
    return {**serviceTypes(), "quote": quote}


class ConfigurationTests(SynchronousTestCase):
    """
    The new type's settings, validated and documented by netd's own code.
    """

    def test_settings(self) -> None:
        """
        Its settings are read with their defaults and checked, the error
        naming the file and the key.
        """
        config = parseConfig(
            registry(),
            '[services.q]\ntype = "quote"\nlisten = ["tcp:17"]\n',
            "netd.toml",
        )
        [service] = config.services
        self.assertIs(service.serviceType, quote)
        self.assertEqual(service.settings["quote"], "carpe diem")
        with self.assertRaises(ConfigError) as raised:
            parseConfig(
                registry(),
                '[services.q]\ntype = "quote"\nlisten = ["tcp:17"]\nquote = 3\n',
                "netd.toml",
            )
        self.assertEqual(
            raised.exception.lines(),
            [
                "netd.toml: services.q.quote: expected one printable line, got an integer"
            ],
        )

    def test_reference(self) -> None:
        """
        The configuration reference documents it from its own descriptions.
        """
        text = render(types=registry())
        self.assertIn("`quote`", text)
        self.assertIn("what to say", text)

    def test_everyWorker(self) -> None:
        """
        With workers, it runs in every worker (it declares no per-process
        state).
        """
        config = parseConfig(
            registry(),
            '[netd]\nworkers = 2\n[services.q]\ntype = "quote"\nlisten = ["tcp:17"]\n',
            "netd.toml",
        )
        self.assertEqual(
            [[name for name, _, _ in sockets] for sockets in workerSockets(config, 2)],
            [["q"], ["q"]],
        )


class ServingTests(TestCase):
    """
    The new type served by a real netd service tree on loopback.
    """

    async def test_tcpUdpAndProbe(self) -> None:
        """
        It answers over TCP and UDP, and C{--check --probe} uses its probe.
        """
        tcp, udp = freePort(), freePort(socket.SOCK_DGRAM)
        config = parseConfig(
            registry(),
            '[services.q]\ntype = "quote"\n'
            f'listen = ["tcp:{tcp}:interface={LOOPBACK}", '
            f'"udp:{udp}:interface={LOOPBACK}"]\n',
            "netd.toml",
        )
        root = NetdService(config, reactor)
        root.startService()
        self.addCleanup(root.stopService)
        result = await deferToThread(tcpExchange, LOOPBACK, tcp, b"")
        self.assertEqual(result.received, b"carpe diem\r\n")

        def probe() -> str:
            out = io.StringIO()
            probeConfig(config, out, timeout=5)
            return out.getvalue()

        report = await deferToThread(probe)
        self.assertIn(
            f"probe ok q on tcp:{tcp}:interface={LOOPBACK}: sent 'carpe diem'", report
        )
        self.assertIn(
            f"probe ok q on udp:{udp}:interface={LOOPBACK}: sent 'carpe diem'", report
        )
        self.assertIn("probe: 2 ok, 0 failed, 0 skipped", report)
