# -*- test-case-name: tests.test_http2_e2e -*-
"""
HTTP/2 end to end: the real C{twistd -n netd} serving files over HTTP/2 to
the real clients, C{curl --http2} (and C{--http2-prior-knowledge} for h2c),
C{nghttp} and C{h2load} (Debian's nghttp2-client), each download's sha256
checked; memory stays bounded while 100 streams download large files at
once; SIGTERM lets a download in progress finish.

Each test skips, naming the package, when its client is missing (CI:
C{apt-get install curl nghttp2-client}).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.chatsupport import Netd
from tests.support import writeSelfSignedCertificate
from tests.test_tls import tlsListener

#: Seconds any one client run may take.
CLIENT_TIMEOUT = 60

BIG_SIZE = 5 * 1024 * 1024 + 7


def need(name: str, package: str) -> str:
    """
    @param name: A client binary.
    @param package: Its Debian package.
    @return: Its path.
    @raise SkipTest: If it is missing.
    """
    path = shutil.which(name)
    if path is None:
        raise SkipTest(f"{name} not found (apt-get install {package})")
    return path


def peakRSS(pid: int) -> int:
    """
    @param pid: A process.
    @return: Its peak resident set size (C{VmHWM}), in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class HTTP2EndToEndTests(SynchronousTestCase):
    """
    One netd per test with an http service on C{ssl:} (HTTP/2 by ALPN) and
    on C{tcp:} with C{h2c = true}.
    """

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        self.root = os.path.join(directory, "root")
        os.makedirs(self.root)
        self.files = {
            "f.txt": b"hello over HTTP/2\n",
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
            f'listen = ["tcp:0:interface=127.0.0.1", {tls}]\n'
            f"root = {json.dumps(self.root)}\nh2c = true\n",
            directory,
        )
        self.directory = directory
        self.addCleanup(self.netd.stop)
        self.netd.waitListening(2)
        self.https = f"https://127.0.0.1:{self.netd.addresses[('web', 'ssl')]}"
        self.http = f"http://127.0.0.1:{self.netd.addresses[('web', 'tcp')]}"

    def tearDown(self) -> None:
        self.assertEqual(self.netd.stop(), 0, self.netd.output)
        self.assertNotIn("Traceback", self.netd.output)

    def sha(self, name: str) -> str:
        """
        @param name: A served file.
        @return: Its sha256.
        """
        return hashlib.sha256(self.files[name]).hexdigest()

    def curl(self, *args: str) -> tuple[bytes, str]:
        """
        Run curl to a file.

        @param args: Its arguments.
        @return: The body and curl's C{code HTTP/version} line.
        """
        curl = need("curl", "curl")
        out = os.path.join(self.directory, "curl.out")
        done = subprocess.run(
            [curl, "-sS", "--max-time", "30", "--cacert", self.certPath]
            + ["-o", out, "--write-out", "%{http_code} HTTP/%{http_version}"]
            + list(args),
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(out, "rb") as f:
            return f.read(), done.stdout.decode()

    def test_curl(self) -> None:
        """
        curl negotiates HTTP/2 by ALPN and downloads a small and a large file
        intact; C{--http1.1} still gets HTTP/1.1; over C{tcp:},
        C{--http2-prior-knowledge} speaks h2c.
        """
        for name in ("f.txt", "big.bin"):
            body, line = self.curl("--http2", f"{self.https}/{name}")
            self.assertEqual(line, "200 HTTP/2")
            self.assertEqual(hashlib.sha256(body).hexdigest(), self.sha(name))
        body, line = self.curl("--http1.1", f"{self.https}/f.txt")
        self.assertEqual((body, line), (self.files["f.txt"], "200 HTTP/1.1"))
        body, line = self.curl("--http2-prior-knowledge", f"{self.http}/big.bin")
        self.assertEqual(line, "200 HTTP/2")
        self.assertEqual(hashlib.sha256(body).hexdigest(), self.sha("big.bin"))
        body, line = self.curl(f"{self.http}/f.txt")
        self.assertEqual((body, line), (self.files["f.txt"], "200 HTTP/1.1"))
        body, line = self.curl("--http2", f"{self.https}/missing")
        self.assertEqual(line, "404 HTTP/2")

    def test_nghttp(self) -> None:
        """
        nghttp fetches the large file over HTTP/2 with a small stream window
        (C{-w 14}: 16 KiB, so the body moves by window updates), intact.
        """
        nghttp = need("nghttp", "nghttp2-client")
        done = subprocess.run(
            [nghttp, "-w", "14", "-W", "16", f"{self.https}/big.bin"],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
        )
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        self.assertEqual(hashlib.sha256(done.stdout).hexdigest(), self.sha("big.bin"))
        verbose = subprocess.run(
            [nghttp, "-nv", f"{self.https}/f.txt"],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
        )
        self.assertEqual(verbose.returncode, 0, verbose.stderr[-2000:])
        self.assertIn(b"SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100", verbose.stdout)
        self.assertIn(b":status: 200", verbose.stdout)

    def test_h2load(self) -> None:
        """
        h2load: 500 requests for the 1 KiB file over 5 connections, 10
        streams each, over TLS and h2c: every one succeeds with 200.
        """
        h2load = need("h2load", "nghttp2-client")
        for url in (f"{self.https}/1k.bin", f"{self.http}/1k.bin"):
            done = subprocess.run(
                [h2load, "-n", "500", "-c", "5", "-m", "10", url],
                capture_output=True,
                timeout=CLIENT_TIMEOUT,
            )
            output = done.stdout.decode()
            self.assertEqual(done.returncode, 0, output)
            self.assertIn("500 succeeded, 0 failed, 0 errored", output)
            self.assertIn("status codes: 500 2xx", output)
            self.assertIn("space savings", output)

    def test_memoryBounded(self) -> None:
        """
        100 streams on one connection each downloading the 5 MiB file
        (500 MiB in all) raise netd's peak memory by far less than one file
        per stream would: bodies are read as the windows allow.
        """
        h2load = need("h2load", "nghttp2-client")
        before = peakRSS(self.netd.process.pid)
        done = subprocess.run(
            [h2load, "-n", "100", "-c", "1", "-m", "100", f"{self.https}/big.bin"],
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
        )
        output = done.stdout.decode()
        self.assertIn("100 succeeded, 0 failed", output)
        grown = peakRSS(self.netd.process.pid) - before
        self.assertLess(grown, 48 * 1024 * 1024, output)

    def test_sigtermLetsStreamsFinish(self) -> None:
        """
        SIGTERM during a slow HTTP/2 download: netd sends GOAWAY, the
        download finishes intact, then netd exits cleanly.
        """
        curl = need("curl", "curl")
        out = os.path.join(self.directory, "slow.out")
        download = subprocess.Popen(
            [curl, "-sS", "--http2", "--max-time", "30", "--cacert", self.certPath]
            + ["--limit-rate", "2M", "-o", out, "--write-out", "%{http_code}"]
            + [f"{self.https}/big.bin"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(1.0)
            self.assertIsNone(download.poll())
            self.netd.process.send_signal(signal.SIGTERM)
            stdout, stderr = download.communicate(timeout=CLIENT_TIMEOUT)
        finally:
            if download.poll() is None:
                download.kill()
                download.wait()
        self.assertEqual(download.returncode, 0, stderr)
        self.assertEqual(stdout, b"200")
        with open(out, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), self.sha("big.bin"))
        self.assertEqual(self.netd.process.wait(CLIENT_TIMEOUT), 0, self.netd.output)
