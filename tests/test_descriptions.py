# -*- test-case-name: tests.test_descriptions -*-
"""
Tests for L{netd.descriptions}: listener descriptions as value objects.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from netd.descriptions import (
    DatagramListener,
    StreamListener,
    parseListener,
    splitDescription,
)
from netd.tls import sslContextFactory
from tests.support import escape, writeSelfSignedCertificate


class SplitDescriptionTests(SynchronousTestCase):
    """
    Tests for L{splitDescription}.
    """

    def test_positionalAndKeyword(self) -> None:
        """
        Fields without C{=} are positional, C{key=value} fields are keywords.
        """
        self.assertEqual(
            splitDescription("udp:7:interface=127.0.0.1"),
            (["udp", "7"], {"interface": "127.0.0.1"}),
        )

    def test_escapedColons(self) -> None:
        """
        A backslash escapes a colon, so an IPv6 address can be a value.
        """
        self.assertEqual(
            splitDescription("tcp6:7:interface=\\:\\:1"),
            (["tcp6", "7"], {"interface": "::1"}),
        )

    def test_escapedEquals(self) -> None:
        """
        An escaped C{=} does not make a keyword field.
        """
        self.assertEqual(
            splitDescription("unix:/a\\=b:mode=600"),
            (["unix", "/a=b"], {"mode": "600"}),
        )

    def test_escapedBackslash(self) -> None:
        """
        A doubled backslash is one literal backslash.
        """
        self.assertEqual(splitDescription("unix:a\\\\b"), (["unix", "a\\b"], {}))

    def test_onlyFirstEqualsSplits(self) -> None:
        """
        A keyword's value may itself contain C{=}: only the first one splits.
        """
        self.assertEqual(splitDescription("x:k=a=b"), (["x"], {"k": "a=b"}))

    def test_emptyFields(self) -> None:
        """
        Empty fields are kept as empty positional arguments.
        """
        self.assertEqual(splitDescription("tcp::"), (["tcp", "", ""], {}))

    def test_matchesTwisted(self) -> None:
        """
        The split agrees with Twisted's own endpoint-string parser.
        """
        from twisted.internet.endpoints import _parse

        for description in (
            "tcp6:7:interface=\\:\\:1",
            "unix:/a\\=b:mode=600",
            "ssl:443:privateKey=k.pem:certKey=c.pem",
        ):
            args, kwargs = splitDescription(description)
            self.assertEqual((args, kwargs), _parse(description))


class TCPTests(SynchronousTestCase):
    """
    Tests for L{parseListener} with C{tcp:} and C{tcp6:} descriptions.
    """

    def test_defaults(self) -> None:
        """
        A bare C{tcp:PORT} listens on every IPv4 address with backlog 50.
        """
        self.assertEqual(
            parseListener("tcp:7"),
            StreamListener("tcp:7", "tcp", 7, "0.0.0.0", 50, False),
        )

    def test_interfaceAndBacklog(self) -> None:
        """
        C{interface} and C{backlog} are read.
        """
        listener = parseListener("tcp:8080:interface=127.0.0.1:backlog=7")
        self.assertEqual(
            (listener.kind, listener.port, listener.interface, listener.backlog),
            ("tcp", 8080, "127.0.0.1", 7),
        )

    def test_transport(self) -> None:
        """
        A TCP listener is a stream listener.
        """
        self.assertEqual(parseListener("tcp:7").transport, "stream")

    def test_reusePort(self) -> None:
        """
        The C{reusePort} argument is recorded.
        """
        self.assertTrue(parseListener("tcp:7", reusePort=True).reusePort)
        self.assertFalse(parseListener("tcp:7").reusePort)

    def test_tcp6Defaults(self) -> None:
        """
        A bare C{tcp6:PORT} listens on every IPv6 address.
        """
        self.assertEqual(
            parseListener("tcp6:7"),
            StreamListener("tcp6:7", "tcp6", 7, "::", 50, False),
        )

    def test_tcp6EscapedInterface(self) -> None:
        """
        An escaped IPv6 interface is unescaped.
        """
        listener = parseListener("tcp6:7:interface=\\:\\:1")
        self.assertEqual((listener.kind, listener.interface), ("tcp6", "::1"))
        self.assertEqual(listener.description, "tcp6:7:interface=\\:\\:1")

    def test_tcp6InterfaceNormalised(self) -> None:
        """
        An IPv6 interface is stored in its compressed, lowercase form.
        """
        listener = parseListener(
            "tcp6:7:interface=0000\\:0000\\:0000\\:0000\\:0000\\:0000\\:0000\\:0001"
        )
        self.assertEqual(listener.interface, "::1")
        listener = parseListener("tcp6:7:interface=FE80\\:\\:A")
        self.assertEqual(listener.interface, "fe80::a")

    def test_tcp6RefusesIPv4Interface(self) -> None:
        """
        A C{tcp6:} listener must have an IPv6 interface.
        """
        e = self.assertRaises(ValueError, parseListener, "tcp6:7:interface=127.0.0.1")
        self.assertEqual(str(e), "interface '127.0.0.1' is not an IPv6 address")

    def test_tcpAcceptsIPv6Interface(self) -> None:
        """
        A C{tcp:} listener may name an IPv6 interface (Twisted binds it with
        the right family).
        """
        self.assertEqual(parseListener("tcp:7:interface=\\:\\:1").interface, "::1")

    def test_portZero(self) -> None:
        """
        Port 0 (any free port) is accepted.
        """
        self.assertEqual(parseListener("tcp:0").port, 0)

    def test_portHighest(self) -> None:
        """
        Port 65535 is accepted.
        """
        self.assertEqual(parseListener("tcp:65535").port, 65535)

    def test_portOutOfRange(self) -> None:
        """
        Port 65536 is refused.
        """
        e = self.assertRaises(ValueError, parseListener, "tcp:65536")
        self.assertEqual(str(e), "port 65536 is out of range (0 to 65535)")

    def test_portNotANumber(self) -> None:
        """
        A port that is not a number is refused.
        """
        e = self.assertRaises(ValueError, parseListener, "tcp:echo")
        self.assertEqual(str(e), "port 'echo' is not a number")

    def test_portNegative(self) -> None:
        """
        A negative port is refused as not a number.
        """
        e = self.assertRaises(ValueError, parseListener, "tcp:-1")
        self.assertEqual(str(e), "port '-1' is not a number")

    def test_portSuperscriptDigit(self) -> None:
        """
        A superscript digit (which L{str.isdigit} accepts) is not a number.
        """
        e = self.assertRaises(ValueError, parseListener, "tcp:\u00b2")
        self.assertEqual(str(e), "port '\u00b2' is not a number")

    def test_missingPort(self) -> None:
        """
        C{tcp} without a port says what is expected.
        """
        e = self.assertRaises(ValueError, parseListener, "tcp")
        self.assertEqual(str(e), "expected tcp:PORT[:interface=ADDRESS][:backlog=N]")

    def test_hostnameRefused(self) -> None:
        """
        A host name is not resolved: the interface must be an IP address.
        """
        e = self.assertRaises(ValueError, parseListener, "tcp:7:interface=localhost")
        self.assertEqual(
            str(e),
            "interface 'localhost' is not an IP address "
            "(host names are not resolved)",
        )

    def test_unknownKeyword(self) -> None:
        """
        A keyword TCP does not take is named, with the ones it does.
        """
        e = self.assertRaises(ValueError, parseListener, "tcp:7:mode=600")
        self.assertEqual(
            str(e), "unknown option 'mode' (this listener takes: interface, backlog)"
        )

    def test_backlogOutOfRange(self) -> None:
        """
        A backlog of 0, or one that is not a number, is refused.
        """
        for backlog in ("0", "65536", "many"):
            e = self.assertRaises(ValueError, parseListener, f"tcp:7:backlog={backlog}")
            self.assertEqual(str(e), f"backlog {backlog!r} must be 1 to 65535")


class UDPTests(SynchronousTestCase):
    """
    Tests for L{parseListener} with C{udp:} and C{udp6:} descriptions.
    """

    def test_defaults(self) -> None:
        """
        A bare C{udp:PORT} listens on every IPv4 address and reads datagrams
        of up to 65535 bytes.
        """
        self.assertEqual(
            parseListener("udp:7"),
            DatagramListener("udp:7", 7, "0.0.0.0", 65535, False),
        )

    def test_transportAndKind(self) -> None:
        """
        A UDP listener is a datagram listener of kind C{udp}.
        """
        listener = parseListener("udp6:7")
        self.assertEqual((listener.transport, listener.kind), ("datagram", "udp"))

    def test_udp6Defaults(self) -> None:
        """
        A bare C{udp6:PORT} listens on every IPv6 address.
        """
        self.assertEqual(
            parseListener("udp6:7"),
            DatagramListener("udp6:7", 7, "::", 65535, False),
        )

    def test_interface(self) -> None:
        """
        The interface is read and normalised.
        """
        self.assertEqual(
            parseListener("udp:7:interface=127.0.0.1").interface, "127.0.0.1"
        )
        self.assertEqual(parseListener("udp6:7:interface=\\:\\:0001").interface, "::1")

    def test_udp6RefusesIPv4Interface(self) -> None:
        """
        A C{udp6:} listener must have an IPv6 interface.
        """
        e = self.assertRaises(ValueError, parseListener, "udp6:7:interface=10.0.0.1")
        self.assertEqual(str(e), "interface '10.0.0.1' is not an IPv6 address")

    def test_hostnameRefused(self) -> None:
        """
        A UDP interface must be an IP address too.
        """
        e = self.assertRaises(ValueError, parseListener, "udp:7:interface=example.com")
        self.assertEqual(
            str(e),
            "interface 'example.com' is not an IP address "
            "(host names are not resolved)",
        )

    def test_maxPacketSize(self) -> None:
        """
        C{maxPacketSize} from 512 to 65535 is read.
        """
        self.assertEqual(parseListener("udp:7:maxPacketSize=512").maxPacketSize, 512)
        self.assertEqual(
            parseListener("udp:7:maxPacketSize=65535").maxPacketSize, 65535
        )

    def test_maxPacketSizeOutOfRange(self) -> None:
        """
        A C{maxPacketSize} outside 512 to 65535, or not a number, is refused.
        """
        for size in ("511", "65536", "big", "-1"):
            e = self.assertRaises(
                ValueError, parseListener, f"udp:7:maxPacketSize={size}"
            )
            self.assertEqual(str(e), f"maxPacketSize {size!r} must be 512 to 65535")

    def test_portOutOfRange(self) -> None:
        """
        UDP port 65536 is refused.
        """
        e = self.assertRaises(ValueError, parseListener, "udp:65536")
        self.assertEqual(str(e), "port 65536 is out of range (0 to 65535)")

    def test_portNotANumber(self) -> None:
        """
        A UDP port that is not a number is refused.
        """
        e = self.assertRaises(ValueError, parseListener, "udp6:x")
        self.assertEqual(str(e), "port 'x' is not a number")

    def test_wrongArgumentCount(self) -> None:
        """
        A UDP description without a port, or with two, says what is expected.
        """
        for description in ("udp", "udp:7:8"):
            e = self.assertRaises(ValueError, parseListener, description)
            self.assertEqual(str(e), "expected udp:PORT[:interface=ADDRESS]")

    def test_unknownKeyword(self) -> None:
        """
        C{backlog} means nothing for UDP and is refused.
        """
        e = self.assertRaises(ValueError, parseListener, "udp:7:backlog=5")
        self.assertEqual(
            str(e),
            "unknown option 'backlog' (this listener takes: interface, maxPacketSize)",
        )

    def test_reusePort(self) -> None:
        """
        The C{reusePort} argument is recorded for UDP.
        """
        self.assertTrue(parseListener("udp:7", reusePort=True).reusePort)


class OtherKindsTests(SynchronousTestCase):
    """
    Tests for L{parseListener} with C{ssl:}, C{unix:}, C{systemd:} and
    unknown descriptions.
    """

    def test_unknownType(self) -> None:
        """
        An unknown listener type is named, with the known ones.
        """
        e = self.assertRaises(ValueError, parseListener, "sctp:7")
        self.assertEqual(
            str(e),
            "unknown listener type 'sctp' "
            "(expected one of: tcp, tcp6, ssl, unix, systemd, udp, udp6)",
        )

    def test_unix(self) -> None:
        """
        A C{unix:} description is checked by Twisted's parser and kept as
        written.
        """
        path = self.mktemp()
        description = f"unix:{escape(path)}:mode=600"
        self.assertEqual(
            parseListener(description), StreamListener(description, "unix")
        )
        self.assertFalse(os.path.exists(path))

    def test_unixUnknownKeyword(self) -> None:
        """
        A keyword Twisted's C{unix:} parser refuses makes a L{ValueError}.
        """
        e = self.assertRaises(ValueError, parseListener, "unix:/tmp/x:colour=red")
        self.assertTrue(str(e).startswith("invalid unix: description ("), str(e))
        self.assertIn("colour", str(e))

    def test_unixReusePortRefused(self) -> None:
        """
        C{reuse_port} does not apply to a UNIX socket.
        """
        e = self.assertRaises(
            ValueError, parseListener, "unix:/tmp/netd.sock", reusePort=True
        )
        self.assertEqual(str(e), "reuse_port does not apply to unix: listeners")

    def test_systemdReusePortRefused(self) -> None:
        """
        C{reuse_port} does not apply to a socket systemd passes.
        """
        e = self.assertRaises(
            ValueError, parseListener, "systemd:domain=INET:index=0", reusePort=True
        )
        self.assertEqual(str(e), "reuse_port does not apply to systemd: listeners")

    def test_sslMissingCertificate(self) -> None:
        """
        An C{ssl:} listener whose certificate file does not exist is refused
        with a message about the certificate that names the file.
        """
        directory = self.mktemp()
        missing = os.path.join(directory, "missing.pem")
        e = self.assertRaises(
            ValueError,
            parseListener,
            f"ssl:443:privateKey={escape(missing)}:certKey={escape(missing)}",
        )
        self.assertTrue(
            str(e).startswith("cannot load the TLS certificate or key: "), str(e)
        )
        self.assertIn(missing, str(e))

    def test_sslGarbageCertificate(self) -> None:
        """
        A certificate file that is not PEM is refused with a L{ValueError}.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        e = self.assertRaises(
            ValueError,
            parseListener,
            f"ssl:443:privateKey={escape(path)}:certKey={escape(path)}",
        )
        self.assertTrue(
            str(e).startswith("cannot load the TLS certificate or key: "), str(e)
        )

    def test_sslSelfSigned(self) -> None:
        """
        An C{ssl:} listener with a real certificate and key is read like a
        TCP one, and L{sslContextFactory} builds a server context for it.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        keyPath, certPath = writeSelfSignedCertificate(directory)
        description = (
            f"ssl:8443:privateKey={escape(keyPath)}:certKey={escape(certPath)}"
            ":interface=127.0.0.1:backlog=9"
        )
        self.assertEqual(
            parseListener(description),
            StreamListener(description, "ssl", 8443, "127.0.0.1", 9, False),
        )
        factory = sslContextFactory(description)
        from OpenSSL.SSL import Context

        self.assertIsInstance(factory.context(), Context)

    def test_sslDefaults(self) -> None:
        """
        An C{ssl:} listener without an interface listens on every IPv4
        address, with backlog 50.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        keyPath, certPath = writeSelfSignedCertificate(directory)
        listener = parseListener(
            f"ssl:8443:privateKey={escape(keyPath)}:certKey={escape(certPath)}"
        )
        self.assertEqual(
            (listener.port, listener.interface, listener.backlog),
            (8443, "0.0.0.0", 50),
        )

    def test_sslHostnameRefused(self) -> None:
        """
        An C{ssl:} interface must be an IP address, with the same message as
        for TCP.
        """
        e = self.assertRaises(
            ValueError,
            parseListener,
            "ssl:443:privateKey=k.pem:interface=localhost",
        )
        self.assertEqual(
            str(e),
            "interface 'localhost' is not an IP address "
            "(host names are not resolved)",
        )

    def test_sslUnknownKeyword(self) -> None:
        """
        A keyword C{ssl:} does not take is named, rather than reported as a
        certificate problem.
        """
        e = self.assertRaises(
            ValueError, parseListener, "ssl:443:privateKey=k.pem:colour=red"
        )
        self.assertTrue(str(e).startswith("unknown option 'colour' ("), str(e))

    def test_sslBadBacklog(self) -> None:
        """
        An C{ssl:} backlog is checked like a TCP one.
        """
        e = self.assertRaises(
            ValueError, parseListener, "ssl:443:privateKey=k.pem:backlog=0"
        )
        self.assertEqual(str(e), "backlog '0' must be 1 to 65535")

    def test_sslPortOutOfRange(self) -> None:
        """
        An C{ssl:} port is checked like a TCP one.
        """
        e = self.assertRaises(ValueError, parseListener, "ssl:65536:privateKey=k.pem")
        self.assertEqual(str(e), "port 65536 is out of range (0 to 65535)")

    def test_sslWithoutPort(self) -> None:
        """
        C{ssl} alone says what is expected.
        """
        e = self.assertRaises(ValueError, parseListener, "ssl")
        self.assertEqual(
            str(e),
            "expected ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem[:interface=...]",
        )


class ConflictKeyTests(SynchronousTestCase):
    """
    Tests for C{conflictKey}: which listeners cannot both bind.
    """

    def test_portZero(self) -> None:
        """
        Port 0 never conflicts: its key is L{None}, for TCP and for UDP.
        """
        self.assertIsNone(parseListener("tcp:0").conflictKey())
        self.assertIsNone(parseListener("tcp6:0").conflictKey())
        self.assertIsNone(parseListener("udp:0:interface=127.0.0.1").conflictKey())

    def test_tcp(self) -> None:
        """
        A TCP key is the protocol, port and normalised interface.
        """
        self.assertEqual(
            parseListener("tcp6:7:interface=\\:\\:0001").conflictKey(),
            ("tcp", 7, "::1"),
        )
        self.assertEqual(
            parseListener("tcp:7:backlog=5").conflictKey(), ("tcp", 7, "0.0.0.0")
        )

    def test_tcpAndUDPDiffer(self) -> None:
        """
        TCP and UDP on the same port and address have different keys.
        """
        self.assertNotEqual(
            parseListener("tcp:7").conflictKey(), parseListener("udp:7").conflictKey()
        )
        self.assertEqual(parseListener("udp:7").conflictKey(), ("udp", 7, "0.0.0.0"))

    def test_unix(self) -> None:
        """
        A UNIX listener's key is its description.
        """
        self.assertEqual(
            parseListener("unix:/tmp/a").conflictKey(), ("unix", "unix:/tmp/a")
        )
