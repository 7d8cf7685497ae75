# -*- test-case-name: tests.test_http3_e2e -*-
"""
HTTP/3 end to end: the real C{twistd -n netd} from a configuration file,
serving files over QUIC on a real UDP socket of 127.0.0.1 to a real client
(C{bench/h3client.py}: aioquic's asyncio C{connect()}, in a subprocess),
each download's sha256 checked; C{curl} over HTTPS sees the C{Alt-Svc}
header that points at it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.chatsupport import Netd
from tests.support import writeSelfSignedCertificate
from tests.test_tls import tlsListener

CLIENT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "h3client.py"
)
CLIENT_TIMEOUT = 90
BIG_SIZE = 3 * 1024 * 1024 + 5


def freeUDPPort() -> int:
    """
    @return: A UDP port of 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as skt:
        skt.bind(("127.0.0.1", 0))
        return int(skt.getsockname()[1])


def h3client(port: int, *args: str) -> dict[str, object]:
    """
    Run the HTTP/3 client.

    @param port: netd's UDP port.
    @param args: More arguments (paths last).
    @return: Its JSON report.
    """
    done = subprocess.run(
        [sys.executable, CLIENT, "--port", str(port), *args],
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
    )
    if done.returncode != 0:
        raise AssertionError(f"h3client failed: {done.stdout!r} {done.stderr!r}")
    report: dict[str, object] = json.loads(done.stdout)
    return report


class HTTP3EndToEndTests(SynchronousTestCase):
    """
    One netd per test: an http service on C{ssl:} and C{udp:}.
    """

    def start(self, udpPort: int, extra: str = "") -> None:
        """
        Start netd.

        @param udpPort: The UDP port (0: chosen by the system).
        @param extra: More service settings.
        """
        directory = os.path.abspath(self.mktemp())
        self.root = os.path.join(directory, "root")
        os.makedirs(self.root)
        self.files = {
            "f.txt": b"hello over HTTP/3\n",
            "1k.bin": os.urandom(1024),
            "big.bin": os.urandom(BIG_SIZE),
        }
        for name, content in self.files.items():
            with open(os.path.join(self.root, name), "wb") as f:
                f.write(content)
        keyPath, self.certPath = writeSelfSignedCertificate(directory)
        tls = tlsListener(keyPath, self.certPath)
        self.netd = Netd(
            "[netd]\nstats_interval = 3600\n"
            f'[services.web]\ntype = "http"\n'
            f'listen = [{tls}, "udp:{udpPort}:interface=127.0.0.1"]\n'
            f"root = {json.dumps(self.root)}\n{extra}",
            directory,
        )
        self.addCleanup(self.netd.stop)
        self.netd.waitListening(2)
        self.udp = self.netd.addresses[("web", "udp")]
        self.https = f"https://127.0.0.1:{self.netd.addresses[('web', 'ssl')]}"

    def tearDown(self) -> None:
        self.assertEqual(self.netd.stop(), 0, self.netd.output)
        self.assertNotIn("Traceback", self.netd.output)

    def sha(self, name: str) -> str:
        """
        @param name: A served file.
        @return: Its sha256.
        """
        return hashlib.sha256(self.files[name]).hexdigest()

    def test_files(self) -> None:
        """
        On a port the system chose, three files (one of 3 MiB, streamed from
        disk) arrive intact over HTTP/3; a missing one is 404.
        """
        self.start(0)
        report = h3client(
            self.udp, "--requests", "4", "/f.txt", "/1k.bin", "/big.bin", "/missing"
        )
        paths = report["paths"]
        assert isinstance(paths, dict)
        for name in ("f.txt", "1k.bin", "big.bin"):
            self.assertEqual(paths["/" + name]["status"], 200)
            self.assertEqual(paths["/" + name]["sha256"], self.sha(name))
        self.assertEqual(paths["/missing"]["status"], 404)
        self.assertEqual(report["failures"], 0)

    def test_manyConnections(self) -> None:
        """
        Twenty connections at once, five requests each, all answered.
        """
        self.start(0)
        report = h3client(self.udp, "--connections", "20", "--requests", "5", "/1k.bin")
        self.assertEqual(report["requests"], 100)
        paths = report["paths"]
        assert isinstance(paths, dict)
        self.assertEqual(paths["/1k.bin"]["sha256"], self.sha("1k.bin"))

    def test_head(self) -> None:
        """
        C{HEAD} over HTTP/3: 200, no body.
        """
        self.start(0)
        report = h3client(self.udp, "--method", "HEAD", "/big.bin")
        paths = report["paths"]
        assert isinstance(paths, dict)
        self.assertEqual(paths["/big.bin"]["status"], 200)
        self.assertEqual(paths["/big.bin"]["length"], 0)

    def curlHeaders(self) -> str:
        """
        @return: The response header block of C{curl -I} over HTTPS.
        """
        curl = shutil.which("curl")
        if curl is None:
            raise SkipTest("curl not found (apt-get install curl)")
        done = subprocess.run(
            [curl, "-sS", "-I", "--max-time", "30", "--cacert", self.certPath]
            + [f"{self.https}/f.txt"],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.decode("latin-1").lower()

    def test_altSvc(self) -> None:
        """
        On a fixed UDP port, HTTPS responses carry C{Alt-Svc: h3=":PORT"},
        and that port serves HTTP/3.
        """
        port = freeUDPPort()
        self.start(port)
        self.assertIn(f'alt-svc: h3=":{port}"; ma=86400', self.curlHeaders())
        report = h3client(port, "/f.txt")
        paths = report["paths"]
        assert isinstance(paths, dict)
        self.assertEqual(paths["/f.txt"]["sha256"], self.sha("f.txt"))

    def test_altSvcOff(self) -> None:
        """
        C{alt_svc = false}: no C{Alt-Svc}; HTTP/3 is still served.
        """
        port = freeUDPPort()
        self.start(port, "alt_svc = false\n")
        self.assertNotIn("alt-svc", self.curlHeaders())
        report = h3client(port, "/f.txt")
        paths = report["paths"]
        assert isinstance(paths, dict)
        self.assertEqual(paths["/f.txt"]["status"], 200)
