# -*- test-case-name: tests.test_probe -*-
"""
Tests for L{netd.probe} and C{twistd netd --check --probe}: the probes run
in a thread against a netd running in the test's reactor.
"""

from __future__ import annotations

import io
import json
import os

import attrs
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

import netd.services
from netd.config import parseConfig
from netd.services import serviceTypes
from netd.daemon import NetdService
from netd.probe import (
    ProbeFailed,
    ProbeTarget,
    connectProbe,
    probeConfig,
    probeFor,
    targetFor,
)
from netd.tap import EX_UNAVAILABLE, Options
from netd.tls import ServerTLS
from tests.support import escape, writeSelfSignedCertificate
from tests.test_endtoend import freePorts


def runOptions(*args: str) -> tuple[int, str, str]:
    """
    Parse C{netd} options (which run the probe and exit). Blocking: run it
    in a thread.

    As root (CI), C{--allow-root} is added: these files name no user, and
    C{--check} refuses root without one, as start-up does.

    @param args: The command line.
    @return: The exit status, standard output and standard error.
    """
    options = Options()
    options.stdout, options.stderr = io.StringIO(), io.StringIO()
    extra = ["--allow-root"] if os.geteuid() == 0 else []
    try:
        options.parseOptions(extra + list(args))
    except SystemExit as e:
        return int(e.code or 0), options.stdout.getvalue(), options.stderr.getvalue()
    raise AssertionError("no exit")


def servicesText(echo: int, discard: int) -> str:
    """
    @param echo: The TCP and UDP port of echo.
    @param discard: The TCP and UDP port of discard.
    @return: A configuration of both on loopback.
    """
    return (
        f'[services.echo]\ntype = "echo"\nlisten = ["tcp:{echo}:interface=127.0.0.1", '
        f'"udp:{echo}:interface=127.0.0.1"]\n'
        f'[services.discard]\ntype = "discard"\nlisten = ["tcp:{discard}:interface=127.0.0.1", '
        f'"udp:{discard}:interface=127.0.0.1"]\n'
    )


class ProbeTests(TestCase):
    """
    Probing a running netd.
    """

    def startNetd(self, text: str) -> NetdService:
        """
        @param text: A configuration.
        @return: A netd running it, stopped after the test.
        """
        root = NetdService(parseConfig(serviceTypes(), text, "<test>"))
        self.addCleanup(root.stopService)
        root.startService()
        return root

    def writeConfig(self, text: str) -> str:
        """
        @param text: A configuration.
        @return: A file holding it.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    async def test_allOk(self) -> None:
        """
        C{--check --probe} against a running netd: echo echoes and discard
        swallows, over TCP and UDP; exit status 0.
        """
        echo, discard = freePorts(2)
        text = servicesText(echo, discard)
        self.startNetd(text)
        code, out, err = await deferToThread(
            runOptions, "--check", "--probe", "--config", self.writeConfig(text)
        )
        self.assertEqual(code, 0, out + err)
        lines = [line for line in out.splitlines() if "probe ok" in line]
        self.assertEqual(len(lines), 4, out)
        self.assertIn(f"probe ok echo on udp:{echo}:interface=127.0.0.1: echoed", out)
        self.assertIn(
            f"probe ok discard on tcp:{discard}:interface=127.0.0.1: swallowed", out
        )
        self.assertIn("probe: 4 ok, 0 failed, 0 skipped", out)

    async def test_failureNamesListener(self) -> None:
        """
        A listener nobody serves fails the probe, which names it; exit status
        69.
        """
        (port,) = freePorts(1)
        text = f'[services.echo]\ntype = "echo"\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        code, out, err = await deferToThread(
            runOptions, "--probe", "--config", self.writeConfig(text)
        )
        self.assertEqual(code, EX_UNAVAILABLE)
        self.assertIn(
            f"probe FAILED echo on tcp:{port}:interface=127.0.0.1: cannot connect: "
            "connection refused",
            out,
        )

    async def test_behaviourChecked(self) -> None:
        """
        The probe checks behaviour, not just a connection: an echo server
        configured as discard fails ("answered"), and the other way round.
        """
        echo, discard = freePorts(2)
        self.startNetd(servicesText(echo, discard))
        swapped = parseConfig(serviceTypes(), servicesText(discard, echo), "<swapped>")
        out = io.StringIO()
        failed = await deferToThread(probeConfig, swapped, out, 1.0)
        self.assertEqual(failed, 4, out.getvalue())
        self.assertIn("discard on tcp", out.getvalue())
        self.assertIn("answered", out.getvalue())


class TargetTests(SynchronousTestCase):
    """
    Tests for L{targetFor} and L{probeFor}.
    """

    def test_addresses(self) -> None:
        """
        Wildcard interfaces are probed on loopback; C{ssl:} is probed over
        TLS; UNIX sockets by path.
        """
        config = parseConfig(
            serviceTypes(),
            '[services.a]\ntype = "echo"\n'
            'listen = ["tcp:7", "tcp6:7", "tcp:8:interface=127.0.0.2", "unix:/run/a.sock"]\n',
            "<test>",
        )
        service = config.services[0]
        addresses = [
            targetFor(service, listener).address for listener in service.listeners
        ]
        self.assertEqual(
            addresses, [("127.0.0.1", 7), ("::1", 7), ("127.0.0.2", 8), "/run/a.sock"]
        )

    def test_skipped(self) -> None:
        """
        Sockets passed by systemd and ephemeral ports cannot be reached from
        outside: they are skipped, with the reason.
        """
        config = parseConfig(
            serviceTypes(),
            '[services.a]\ntype = "echo"\nlisten = ["systemd:a", "udp:0"]\n',
            "<test>",
        )
        out = io.StringIO()
        self.assertEqual(probeConfig(config, out), 0)
        self.assertIn("skipped a on systemd:a: passed by systemd", out.getvalue())
        self.assertIn("skipped a on udp:0: ephemeral port", out.getvalue())
        self.assertIn("0 ok, 0 failed, 2 skipped", out.getvalue())

    def test_pluggable(self) -> None:
        """
        A service type's own C{probe} is used; a type without one gets a
        plain connect.
        """
        types = dict(netd.services.serviceTypes())

        def mine(target: ProbeTarget) -> str:
            raise ProbeFailed("mine")

        types["echo"] = attrs.evolve(types["echo"], probe=mine)
        types["discard"] = attrs.evolve(types["discard"], probe=None)
        config = parseConfig(
            types,
            '[services.a]\ntype = "echo"\nlisten = ["tcp:7"]\n'
            '[services.b]\ntype = "discard"\nlisten = ["tcp:9"]\n',
            "<test>",
        )
        self.assertIs(probeFor(config.services[0]), mine)
        self.assertIs(probeFor(config.services[1]), connectProbe)

    def test_streamOnlyProbeSkipsDatagrams(self) -> None:
        """
        A stream-only probe (here a plain connect, for a type with no probe)
        skips datagram listeners instead of probing the TCP port of the same
        number.
        """
        types = dict(netd.services.serviceTypes())
        types["echo"] = attrs.evolve(types["echo"], probe=connectProbe)
        config = parseConfig(
            types,
            '[services.a]\ntype = "echo"\nlisten = ["udp:7:interface=127.0.0.1"]\n',
            "t",
        )
        out = io.StringIO()
        self.assertEqual(probeConfig(config, out), 0)
        self.assertIn(
            "probe skipped a on udp:7:interface=127.0.0.1: no datagram probe for echo",
            out.getvalue(),
        )


class TLSProbeTests(TestCase):
    """
    Probing C{ssl:} listeners, offering ALPN as browsers and curl do
    (issue 12).
    """

    startNetd = ProbeTests.startNetd

    def tlsConfig(self) -> tuple[str, str, str]:
        """
        @return: A configuration of http and echo on C{ssl:} listeners of
            free ports, and their two descriptions.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "root"))
        with open(os.path.join(directory, "root", "index.html"), "w") as f:
            f.write("probed\n")
        keyPath, certPath = writeSelfSignedCertificate(directory)
        web, echo = (
            f"ssl:{port}:privateKey={escape(keyPath)}:certKey={escape(certPath)}"
            ":interface=127.0.0.1"
            for port in freePorts(2)
        )
        text = (
            f'[services.web]\ntype = "http"\nlisten = [{json.dumps(web)}]\n'
            f"root = {json.dumps(os.path.join(directory, 'root'))}\n"
            f'[services.echo]\ntype = "echo"\nlisten = [{json.dumps(echo)}]\n'
        )
        return text, web, echo

    async def test_tlsOk(self) -> None:
        """
        http and echo on C{ssl:} pass the probe, which offers ALPN
        C{h2,http/1.1}: http negotiates C{h2} and the probe's C{GET /} goes
        over HTTP/2.
        """
        text, web, echo = self.tlsConfig()
        self.startNetd(text)
        out = io.StringIO()
        failed = await deferToThread(
            probeConfig, parseConfig(serviceTypes(), text, "<t>"), out
        )
        self.assertEqual(failed, 0, out.getvalue())
        self.assertIn(
            f"probe ok web on {web}: GET / over HTTP/2 answered 200", out.getvalue()
        )
        self.assertIn(f"probe ok echo on {echo}: echoed", out.getvalue())

    async def test_badALPNFails(self) -> None:
        """
        A server that answers ALPN with an empty protocol (Twisted 26.10's
        own callback, issue 12) fails the probe, as it fails curl and
        browsers, though a client offering no ALPN would get through.
        """
        self.patch(ServerTLS, "selectProtocol", lambda self, connection, offered: b"")
        text, web, echo = self.tlsConfig()
        self.startNetd(text)
        out = io.StringIO()
        failed = await deferToThread(
            probeConfig, parseConfig(serviceTypes(), text, "<t>"), out
        )
        self.assertEqual(failed, 2, out.getvalue())
        self.assertIn(f"probe FAILED web on {web}: cannot connect: ", out.getvalue())
        self.assertIn("internal error", out.getvalue())
