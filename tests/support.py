# -*- test-case-name: tests -*-
"""
Helpers shared by netd's tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from twisted.internet.task import Clock

from netd.config import ServiceConfig
from netd.limits import Limits
from netd.descriptions import DatagramListener
from netd.drops import DropLog
from netd.policy import SessionPolicy
from netd.services import serviceTypes
from netd.servicetype import ServiceContext


def makeContext(
    type: str = "echo",
    limits: Limits | None = None,
    settings: Mapping[str, Any] | None = None,
    reactor: Any = None,
    ownPorts: set[int] | None = None,
) -> ServiceContext:
    """
    Build the shared state of a service instance, on a fake clock.

    @param type: The service type.
    @param limits: Its limits (defaults if L{None}).
    @param settings: Type-specific settings over the type's defaults.
    @param reactor: The reactor (a L{Clock} if L{None}).
    @param ownPorts: netd's own ports (empty if L{None}).
    @return: The context.
    """
    serviceType = serviceTypes()[type]
    values = {setting.key: setting.default for setting in serviceType.settings}
    values.update(settings or {})
    limits = limits if limits is not None else Limits()
    reactor = reactor if reactor is not None else Clock()
    config = ServiceConfig(type, type, (), limits, values, serviceType)
    return ServiceContext(
        config=config,
        policy=SessionPolicy(
            limits, DropLog(type, "refused a session from", reactor, 10)
        ),
        datagramDrops=DropLog(type, "dropped a datagram from", reactor, 10),
        ownPorts=ownPorts if ownPorts is not None else set(),
        reactor=reactor,
    )


class FakeDatagramTransport:
    """
    Records datagrams written, like a UDP port would send them.

    @ivar written: C{(data, addr)} pairs, in order.
    @ivar error: If set, raised by L{write}.
    """

    def __init__(self) -> None:
        self.written: list[tuple[bytes, Any]] = []
        self.error: BaseException | None = None

    def write(self, data: bytes, addr: Any) -> None:
        """
        Record a datagram, or raise L{error}.

        @param data: The payload.
        @param addr: The destination.
        """
        if self.error is not None:
            raise self.error
        self.written.append((data, addr))


def writeSelfSignedCertificate(directory: str) -> tuple[str, str]:
    """
    Write a fresh self-signed certificate for C{localhost} and C{127.0.0.1}
    and its private key, as PEM files.

    @param directory: An existing directory.
    @return: The paths of the key file and of the certificate file.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPath = os.path.join(directory, "key.pem")
    certPath = os.path.join(directory, "cert.pem")
    with open(keyPath, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(certPath, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return keyPath, certPath


def escape(path: str) -> str:
    """
    Escape a file name for an endpoint description.

    @param path: A file name.
    @return: The name with C{:} and C{=} and C{\\} backslash-escaped.
    """
    return path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def smallServiceConfig(type: str, port: int, settings: str = "") -> str:
    """
    Configuration text for one service on TCP and UDP of the loopback address.

    @param type: The service type (also the instance name).
    @param port: Its TCP and UDP port.
    @param settings: Lines of type-specific settings.
    @return: TOML text.
    """
    return (
        f'[services.{type}]\ntype = "{type}"\n'
        f'listen = ["tcp:{port}:interface=127.0.0.1", '
        f'"udp:{port}:interface=127.0.0.1"]\n{settings}\n'
    )


class GuardedRepliesMixin:
    """
    The tests every UDP service behind the reply guard shares (chargen,
    daytime, time), for a L{SynchronousTestCase} that sets L{serviceType}
    and L{ownPort}.

    @ivar serviceType: The service type's name.
    @ivar ownPort: A port of netd's own, for the fake listener.
    @ivar startTime: Where the fake clock starts.
    @ivar context: The service instance of the last L{makeProtocol}.
    """

    serviceType: str
    ownPort: int
    startTime = 0.0
    context: ServiceContext
    assertEqual: Any

    def makeProtocol(self, **settings: object) -> Any:
        """
        @param settings: Settings over the type's defaults.
        @return: The datagram protocol of a listener on L{ownPort}, on a
            L{FakeDatagramTransport} and a fake clock.
        """
        self.context = makeContext(
            self.serviceType, settings=settings, ownPorts={self.ownPort}
        )
        self.context.reactor.advance(self.startTime)
        description = f"udp:{self.ownPort}"
        listener = DatagramListener(description, self.ownPort, "127.0.0.1")
        buildDatagramProtocol = serviceTypes()[self.serviceType].buildDatagramProtocol
        assert buildDatagramProtocol is not None
        protocol = buildDatagramProtocol(self.context, listener)
        protocol.transport = FakeDatagramTransport()
        return protocol

    def test_guardRefusals(self) -> None:
        """
        No reply to a privileged source port (echo on 7, chargen on 19 of
        another host: the classic loop), to one of netd's own ports, or past
        the per-source budget until the budget refills; each refusal is
        counted by reason.
        """
        protocol = self.makeProtocol(udp_reply_rate=1.0, udp_reply_burst=2)
        protocol.datagramReceived(b"x", ("192.0.2.1", 7))
        protocol.datagramReceived(b"x", ("192.0.2.1", 19))
        protocol.datagramReceived(b"x", ("127.0.0.1", self.ownPort))
        self.assertEqual(protocol.transport.written, [])
        for port in range(40000, 40005):
            protocol.datagramReceived(b"x", ("192.0.2.9", port))
        self.assertEqual(len(protocol.transport.written), 2)
        self.context.reactor.advance(1)
        protocol.datagramReceived(b"x", ("192.0.2.9", 40000))
        self.assertEqual(len(protocol.transport.written), 3)
        self.assertEqual(
            self.context.datagramDrops.totals,
            {
                "privileged source port": 2,
                "source is a netd service port": 1,
                "reply budget exceeded": 3,
            },
        )


def keepTrialReactor(testCase: Any) -> None:
    """
    Let a test parse twistd's real options in trial's process, where trial
    has already installed its reactor: C{twistd netd} would refuse it
    (L{netd.reactor.selectReactor}, whose own tests are in
    L{tests.test_reactor}; real C{twistd netd} processes in the end-to-end
    tests run on netd's reactor).

    @param testCase: The test; the patch is undone after it.
    """
    from netd import tap

    def installed(asked: str | None) -> Any:
        from twisted.internet import reactor

        return reactor

    testCase.patch(tap, "selectReactor", installed)


def stopProcess(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """
    Stop a process this test started, by its PID: SIGTERM, then SIGKILL if
    it is still there after C{timeout} seconds. A process that already
    exited is only reaped.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
