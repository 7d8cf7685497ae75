# -*- test-case-name: tests.test_real_clients -*-
"""
The real C{twistd -n netd} talked to by the clients people use: curl over
HTTPS (with and without ALPN, TLS 1.2 and 1.3; issue 12), C{openssl
s_client} offering ALPN to chat over TLS, socat over TLS and plain TCP, and
netcat (netcat-openbsd) over TCP and UDP.

Each test skips, naming the package, when its client is missing (CI:
C{apt-get install curl openssl socat netcat-openbsd}).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.chatsupport import Netd
from tests.test_tls import tlsListener
from tests.support import writeSelfSignedCertificate

#: The body of the file the http service serves.
BODY = b"hello from netd over https\n"

#: Seconds any one client run may take.
CLIENT_TIMEOUT = 20


def client(
    name: str, package: str, *args: str, input: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """
    Run a client to its end.

    @param name: Its binary.
    @param package: The Debian package that has it (for the skip reason).
    @param args: Its arguments.
    @param input: Its standard input.
    @return: The finished process.
    @raise SkipTest: If the binary is missing.
    """
    path = shutil.which(name)
    if path is None:
        raise SkipTest(f"{name} not found (apt-get install {package})")
    return subprocess.run(
        [path, *args], input=input, capture_output=True, timeout=CLIENT_TIMEOUT
    )


def interact(
    name: str, package: str, *args: str, input: bytes, until: bytes
) -> tuple[int, bytes]:
    """
    Run a client, keeping its standard input open until its output has
    C{until} (a client whose input ends at once may close before the answer
    comes: socat sends its TLS close_notify, C{s_client} quits), then close
    it and wait for the client to exit.

    @param name: Its binary.
    @param package: The Debian package that has it (for the skip reason).
    @param args: Its arguments.
    @param input: Its standard input.
    @param until: What to wait for in its output.
    @return: Its exit status and its output.
    @raise SkipTest: If the binary is missing.
    """
    path = shutil.which(name)
    if path is None:
        raise SkipTest(f"{name} not found (apt-get install {package})")
    process = subprocess.Popen(
        [path, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None and process.stdout is not None
    output = b""
    try:
        process.stdin.write(input)
        process.stdin.flush()
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while until not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.1)
            if ready:
                data = os.read(process.stdout.fileno(), 65536)
                if not data:
                    break
                output += data
        process.stdin.close()
        output += process.stdout.read()
        return process.wait(CLIENT_TIMEOUT), output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


class RealClientTests(SynchronousTestCase):
    """
    Real clients against one netd per test: echo (TCP, UDP, TLS), discard
    (TCP), chat (TCP, TLS) and http (TLS).
    """

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "root"))
        with open(os.path.join(directory, "root", "f.txt"), "wb") as f:
            f.write(BODY)
        keyPath, self.certPath = writeSelfSignedCertificate(directory)
        tls = tlsListener(keyPath, self.certPath)
        tcp = '"tcp:0:interface=127.0.0.1"'
        self.netd = Netd(
            "[netd]\nstats_interval = 3600\n"
            f'[services.echo]\ntype = "echo"\n'
            f'listen = [{tcp}, "udp:0:interface=127.0.0.1", {tls}]\n'
            f'[services.discard]\ntype = "discard"\nlisten = [{tcp}]\n'
            f'[services.chat]\ntype = "chat"\nlisten = [{tcp}, {tls}]\n'
            f'[services.web]\ntype = "http"\nlisten = [{tcp}, {tls}]\n'
            f"root = {json.dumps(os.path.join(directory, 'root'))}\n",
            directory,
        )
        self.addCleanup(self.netd.stop)
        self.netd.waitListening(8)

    def tearDown(self) -> None:
        self.assertEqual(self.netd.stop(), 0, self.netd.output)
        self.assertNotIn("Traceback", self.netd.output)

    def port(self, service: str, kind: str) -> int:
        """
        @param service: A service name.
        @param kind: C{"tcp"}, C{"udp"} or C{"ssl"}.
        @return: The port it listens on.
        """
        return self.netd.addresses[(service, kind)]

    def test_curl(self) -> None:
        """
        curl fetches a file over HTTPS, verifying the self-signed
        certificate: by default (offering C{h2,http/1.1}), with
        C{--http1.1}, C{--no-alpn}, TLS 1.2 only and TLS 1.3. Before the
        fix of issue 12 every case but C{--no-alpn} failed the handshake.
        Plain C{http://} works too. Since issue 16, curl's default offer gets HTTP/2 (at both TLS
        versions); C{--http1.1}, C{--no-alpn} and plain C{http://} get
        HTTP/1.1.
        """
        url = f"https://127.0.0.1:{self.port('web', 'ssl')}/f.txt"
        plain = f"http://127.0.0.1:{self.port('web', 'tcp')}/f.txt"
        for flags, target, version in (
            ([], plain, b"1.1"),
            ([], url, b"2"),
            (["--http1.1"], url, b"1.1"),
            (["--no-alpn"], url, b"1.1"),
            (["--tlsv1.2", "--tls-max", "1.2"], url, b"2"),
            (["--tlsv1.3"], url, b"2"),
        ):
            done = client(
                "curl",
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                self.certPath,
                "--write-out",
                "\n%{http_code} HTTP/%{http_version}",
                *flags,
                target,
            )
            self.assertEqual(done.returncode, 0, (flags, done.stderr))
            self.assertEqual(done.stdout, BODY + b"\n200 HTTP/" + version, flags)

    def test_opensslChat(self) -> None:
        """
        C{openssl s_client -alpn h2,http/1.1} joins chat over TLS: the
        handshake completes with no protocol negotiated, it is greeted, joins
        and quits.
        """
        code, raw = interact(
            "openssl",
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{self.port('chat', 'ssl')}",
            "-alpn",
            "h2,http/1.1",
            "-CAfile",
            self.certPath,
            "-verify_return_error",
            input=b"alice\n/quit\n",
            until=b"*** bye",
        )
        output = raw.decode("utf-8", "replace")
        self.assertEqual(code, 0, output)
        self.assertIn("No ALPN negotiated", output)
        self.assertIn("Welcome to netd chat.", output)
        self.assertIn("*** alice joined #lobby", output)
        self.assertRegex(self.netd.output, r"alice joined #lobby \(\S+, tls\)")

    def test_socatTLSEcho(self) -> None:
        """
        C{socat - OPENSSL:...,verify=0} gets its input echoed over TLS.
        """
        code, output = interact(
            "socat",
            "socat",
            "-",
            f"OPENSSL:127.0.0.1:{self.port('echo', 'ssl')},verify=0",
            input=b"echo over tls\n" * 100,
            until=b"echo over tls\n" * 100,
        )
        self.assertEqual((code, output), (0, b"echo over tls\n" * 100))

    def test_socatTLSEchoInputEnds(self) -> None:
        """
        C{echo ... | socat - OPENSSL:...,verify=0}: socat sends its data and
        its C{close_notify} together as its input ends, and still gets the
        echo (Twisted's TLS transport dropped it: L{netd.tls}).
        """
        for _ in range(5):
            done = client(
                "socat",
                "socat",
                "-",
                f"OPENSSL:127.0.0.1:{self.port('echo', 'ssl')},verify=0",
                input=b"echo over tls\n",
            )
            self.assertEqual(
                (done.returncode, done.stdout), (0, b"echo over tls\n"), done.stderr
            )

    def test_socatPlain(self) -> None:
        """
        socat over plain TCP: echo echoes, discard answers nothing and exits
        cleanly, chat greets, joins and quits.
        """
        address = "TCP:127.0.0.1:{}"
        echo = client(
            "socat",
            "socat",
            "-t",
            "5",
            "-",
            address.format(self.port("echo", "tcp")),
            input=b"plain echo\n",
        )
        self.assertEqual((echo.returncode, echo.stdout), (0, b"plain echo\n"))
        discard = client(
            "socat",
            "socat",
            "-",
            address.format(self.port("discard", "tcp")),
            input=b"x" * 100_000,
        )
        self.assertEqual((discard.returncode, discard.stdout), (0, b""))
        chat = client(
            "socat",
            "socat",
            "-t",
            "5",
            "-",
            address.format(self.port("chat", "tcp")),
            input=b"bob\n/quit\n",
        )
        self.assertEqual(chat.returncode, 0, chat.stderr)
        self.assertIn(b"*** bob joined #lobby", chat.stdout)

    def test_netcat(self) -> None:
        """
        C{nc -N} (netcat-openbsd) over TCP: echo echoes, discard answers
        nothing, chat greets, joins and quits; C{nc -u} gets a datagram
        echoed.
        """
        echo = client(
            "nc",
            "netcat-openbsd",
            "-N",
            "127.0.0.1",
            str(self.port("echo", "tcp")),
            input=b"nc echo\n",
        )
        self.assertEqual((echo.returncode, echo.stdout), (0, b"nc echo\n"))
        discard = client(
            "nc",
            "netcat-openbsd",
            "-N",
            "127.0.0.1",
            str(self.port("discard", "tcp")),
            input=b"y" * 100_000,
        )
        self.assertEqual((discard.returncode, discard.stdout), (0, b""))
        chat = client(
            "nc",
            "netcat-openbsd",
            "-N",
            "127.0.0.1",
            str(self.port("chat", "tcp")),
            input=b"carol\n/quit\n",
        )
        self.assertEqual(chat.returncode, 0, chat.stderr)
        self.assertIn(b"Welcome to netd chat.", chat.stdout)
        self.assertIn(b"*** carol joined #lobby", chat.stdout)
        udp = client(
            "nc",
            "netcat-openbsd",
            "-u",
            "-w",
            "1",
            "127.0.0.1",
            str(self.port("echo", "udp")),
            input=b"nc datagram\n",
        )
        self.assertEqual(udp.stdout, b"nc datagram\n", udp.stderr)
