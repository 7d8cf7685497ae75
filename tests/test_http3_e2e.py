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
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.browsersupport import BROWSER, BROWSER_SKIP, DRIVER, WebDriver, spkiHash
from tests.chatsupport import Netd
from tests.support import writeSelfSignedCertificate
from tests.test_tls import tlsListener

CLIENT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "h3client.py"
)
CLIENT_TIMEOUT = 90
BIG_SIZE = 3 * 1024 * 1024 + 5
# Big enough that a download is still under way when netd is signalled.
HUGE_SIZE = 48 * 1024 * 1024 + 7


def freeUDPPort() -> int:
    """
    @return: A UDP port of 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as skt:
        skt.bind(("127.0.0.1", 0))
        return int(skt.getsockname()[1])


def freePortBoth() -> int:
    """
    @return: A port of 127.0.0.1 that was free a moment ago for both TCP and
        UDP (chromium forced onto QUIC for an origin uses its TCP port
        number over UDP).
    """
    for _ in range(50):
        port = freeUDPPort()
        with socket.socket() as skt:
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                skt.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free for both TCP and UDP")


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

    def start(
        self,
        udpPort: int,
        extra: str = "",
        huge: bool = False,
        netd: str = "",
        udp: str | None = None,
        tcpPort: int = 0,
    ) -> None:
        """
        Start netd.

        @param udpPort: The UDP port (0: chosen by the system).
        @param extra: More service settings.
        @param huge: Whether to serve C{huge.bin} too (L{HUGE_SIZE}).
        @param netd: More C{[netd]} settings.
        @param udp: The UDP listener's TOML, if not the plain description.
        @param tcpPort: The C{ssl:} listener's port (0: chosen by the system).
        """
        directory = os.path.abspath(self.mktemp())
        self.root = os.path.join(directory, "root")
        os.makedirs(self.root)
        self.files = {
            "f.txt": b"hello over HTTP/3\n",
            "1k.bin": os.urandom(1024),
            "big.bin": os.urandom(BIG_SIZE),
        }
        if huge:
            self.files["huge.bin"] = os.urandom(HUGE_SIZE)
        for name, content in self.files.items():
            with open(os.path.join(self.root, name), "wb") as f:
                f.write(content)
        keyPath, self.certPath = writeSelfSignedCertificate(directory)
        tls = tlsListener(keyPath, self.certPath, tcpPort)
        if udp is None:
            udp = f'"udp:{udpPort}:interface=127.0.0.1"'
        self.configText = (
            f"[netd]\nstats_interval = 3600\ndrain_timeout = 60\n{netd}\n"
            f'[services.web]\ntype = "http"\n'
            f"listen = [{tls}, {udp}]\n"
            f"root = {json.dumps(self.root)}\n{extra}"
        )
        self.netd = Netd(self.configText, directory)
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

    def waitLog(self, text: str) -> None:
        """
        Wait until netd's log has C{text}.
        """
        deadline = time.monotonic() + 30
        while text not in self.netd.output:
            self.assertLess(time.monotonic(), deadline, self.netd.output)
            time.sleep(0.05)

    def downloadThen(self, act: object, logged: str) -> dict[str, object]:
        """
        Start downloading C{huge.bin} over HTTP/3; once its first bytes have
        arrived (the client then pauses: it reads and acknowledges nothing,
        so the download cannot end meanwhile), call C{act}; once netd has
        logged C{logged}, let the client go on; wait for the download to
        end.

        @param act: What to do mid-download (a callable).
        @param logged: What netd logs once it has acted.
        @return: The client's report.
        """
        client = subprocess.Popen(
            [sys.executable, CLIENT, "--port", str(self.udp), "--progress"]
            + ["--pause", "--timeout", str(CLIENT_TIMEOUT - 10), "/huge.bin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(client.wait)
        self.addCleanup(lambda: client.poll() is None and client.kill())
        assert client.stderr is not None
        ready, _, _ = select.select([client.stderr], [], [], CLIENT_TIMEOUT)
        self.assertTrue(ready, "the download did not start")
        self.assertEqual(client.stderr.readline(), b"receiving\n")
        act()  # type: ignore[operator]
        self.waitLog(logged)
        stdout, stderr = client.communicate(b"go on\n", timeout=CLIENT_TIMEOUT)
        self.assertEqual(client.returncode, 0, stderr)
        report: dict[str, object] = json.loads(stdout)
        return report

    def test_drainOnSIGTERM(self) -> None:
        """
        SIGTERM mid-download: the client is sent GOAWAY, its download still
        completes intact over the open UDP socket, and netd then exits
        cleanly.
        """
        self.start(0, huge=True)
        report = self.downloadThen(
            lambda: self.netd.process.send_signal(signal.SIGTERM),
            "waiting up to 60s for 1 open session to end",
        )
        paths = report["paths"]
        assert isinstance(paths, dict)
        self.assertEqual(paths["/huge.bin"]["sha256"], self.sha("huge.bin"))
        self.assertEqual(report["goaways"], [4])
        self.assertEqual(self.netd.process.wait(30), 0, self.netd.output)

    def test_drainOnReload(self) -> None:
        """
        A reload that changes the http service mid-download (a new setting),
        its UDP port fixed: the new service keeps the UDP socket, the old
        connection is sent GOAWAY and completes through it; a new connection
        is served by the new service.
        """
        self.start(freeUDPPort(), huge=True)

        def reload() -> None:
            with open(os.path.join(self.netd.directory, "netd.toml"), "a") as f:
                f.write("alt_svc = false\n")
            self.netd.process.send_signal(signal.SIGHUP)

        report = self.downloadThen(reload, "reloaded")
        paths = report["paths"]
        assert isinstance(paths, dict)
        self.assertEqual(paths["/huge.bin"]["sha256"], self.sha("huge.bin"))
        self.assertEqual(report["goaways"], [4])
        self.assertIn(
            f"web listening on udp:127.0.0.1:{self.udp} (socket kept)", self.netd.output
        )
        after = h3client(self.udp, "/f.txt")
        paths = after["paths"]
        assert isinstance(paths, dict)
        self.assertEqual(paths["/f.txt"]["sha256"], self.sha("f.txt"))
        self.assertEqual(after["goaways"], [])

    def test_workers(self) -> None:
        """
        C{workers = 2} and C{reuse_port}: each worker has its own UDP socket
        on the port; forty connections (five requests each) are spread
        across both workers by the kernel, and every request is answered
        (no connection's datagrams reach a worker that does not know it).
        """
        port = freeUDPPort()
        self.start(
            port,
            extra="access_log_events = true\n",
            netd="workers = 2",
            udp=f'{{ address = "udp:{port}:interface=127.0.0.1", reuse_port = true }}',
        )
        deadline = time.monotonic() + 30
        while "netd ready with 2 workers" not in self.netd.output:
            self.assertLess(time.monotonic(), deadline, self.netd.output)
            time.sleep(0.05)
        report = h3client(port, "--connections", "40", "--requests", "5", "/1k.bin")
        self.assertEqual(report["requests"], 200)
        self.assertEqual(report["failures"], 0)
        paths = report["paths"]
        assert isinstance(paths, dict)
        self.assertEqual(paths["/1k.bin"]["sha256"], self.sha("1k.bin"))
        deadline = time.monotonic() + 10
        while True:
            served = re.findall(
                r"\[worker (\d)[^\]]*\][^\n]*GET /1k\.bin", self.netd.output
            )
            if len(served) >= 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(len(served), 200, self.netd.output)
        self.assertEqual(set(served), {"0", "1"})

    def test_chromium(self) -> None:
        """
        Chromium, told to use QUIC for netd's origin (its certificate
        accepted by its public key), loads a page and a 3 MiB file over
        HTTP/3: the navigation's C{nextHopProtocol} is C{h3} and the file's
        sha256 (computed in the page) is right.
        """
        if BROWSER_SKIP is not None:
            raise SkipTest(BROWSER_SKIP)
        assert BROWSER is not None and DRIVER is not None
        port = freePortBoth()
        self.start(
            port,
            udp=f'"udp:{port}:interface=127.0.0.1"',
            tcpPort=port,
        )
        profile = tempfile.mkdtemp(prefix="netd-chromium-")
        self.addCleanup(shutil.rmtree, profile, ignore_errors=True)
        flags = [
            "--enable-quic",
            f"--origin-to-force-quic-on=127.0.0.1:{port}",
            f"--ignore-certificate-errors-spki-list={spkiHash(self.certPath)}",
        ]

        driver = WebDriver(DRIVER, BROWSER, profile, flags)
        try:
            driver.open(f"https://127.0.0.1:{port}/f.txt")
            self.assertEqual(
                driver.script("return document.body.innerText").strip(),
                "hello over HTTP/3",
            )
            self.assertEqual(
                driver.script(
                    "return performance.getEntriesByType('navigation')[0]"
                    ".nextHopProtocol"
                ),
                "h3",
            )
            digest = driver.asyncScript(
                "const done = arguments[arguments.length - 1];"
                "fetch('/big.bin').then(r => r.arrayBuffer())"
                ".then(b => crypto.subtle.digest('SHA-256', b))"
                ".then(d => done(Array.from(new Uint8Array(d))"
                ".map(x => x.toString(16).padStart(2, '0')).join('')))"
                ".catch(e => done('error: ' + e));"
            )
            self.assertEqual(digest, self.sha("big.bin"))
            self.assertEqual(
                driver.script(
                    "return performance.getEntriesByName("
                    "location.origin + '/big.bin')[0].nextHopProtocol"
                ),
                "h3",
            )
        finally:
            driver.quit()
