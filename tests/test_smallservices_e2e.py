# -*- test-case-name: tests.test_smallservices_e2e -*-
"""
End to end: the real C{twistd netd} serving chargen, daytime and time, talked
to with real clients (C{nc} from netcat-openbsd, C{socat}) and probed with
C{--check --probe}.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from netd.services.chargen import CYCLE
from netd.services.timeservice import fromRfc868Seconds
from tests.support import smallServiceConfig
from tests import test_endtoend
from tests.test_endtoend import freePorts
from tests.test_listeners import LOOPBACK

CLIENT_TIMEOUT = 10


def run(command: list[str], data: bytes = b"") -> bytes:
    """
    Run a client to its end.

    @param command: The client and its arguments.
    @param data: Its standard input.
    @return: Its standard output.
    """
    return subprocess.run(
        command, input=data, capture_output=True, timeout=CLIENT_TIMEOUT, check=True
    ).stdout


def readSome(command: list[str], count: int) -> bytes:
    """
    Start a client, read C{count} bytes of its output, then end it (by its
    PID), closing its connection.

    @param command: The client and its arguments.
    @param count: How many bytes to read.
    @return: What was read.
    """
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        received = b""
        while len(received) < count:
            chunk = process.stdout.read1(count - len(received))
            if not chunk:
                break
            received += chunk
        return received
    finally:
        process.kill()
        process.wait(CLIENT_TIMEOUT)


class SmallServicesEndToEndTests(TestCase):
    """
    chargen, daytime and time in the real daemon.
    """

    timeout = 90

    # EndToEndTests' helpers, without inheriting (or, imported by name,
    # re-running) its tests.
    writeConfig = test_endtoend.EndToEndTests.writeConfig
    daemon = test_endtoend.EndToEndTests.daemon
    netd = test_endtoend.EndToEndTests.netd
    assertStoppedCleanly = test_endtoend.EndToEndTests.assertStoppedCleanly

    def setUp(self) -> None:
        for client in ("nc", "socat"):
            if shutil.which(client) is None:
                raise self.skipTest(
                    f"{client} is not installed (packages netcat-openbsd, socat)"
                )
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    async def test_realClients(self) -> None:
        """
        With all three on free loopback ports: C{nc -N} gets daytime's line
        and time's 4 bytes (near now) over TCP, C{nc -u} daytime's line over
        UDP, C{socat} the chargen pattern over TCP and a reply per datagram
        over UDP (time, chargen); C{--check --probe} passes on all six
        listeners; and each TCP session is logged.
        """
        chargen, daytime, timePort = freePorts(3)
        text = (
            smallServiceConfig("chargen", chargen)
            + smallServiceConfig("daytime", daytime)
            + smallServiceConfig("time", timePort)
        )
        config = self.writeConfig(text)
        daemon = self.netd("--config", config)
        await daemon.waitForOutput(r" listening on ", count=6)

        line = await deferToThread(run, ["nc", "-N", LOOPBACK, str(daytime)])
        self.assertRegex(line, rb"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} UTC\r\n$")
        answer = await deferToThread(run, ["nc", "-N", LOOPBACK, str(timePort)])
        self.assertEqual(len(answer), 4, answer)
        now = time.time()
        seconds = fromRfc868Seconds(struct.unpack("!I", answer)[0], now)
        self.assertLess(abs(seconds - now), 10)

        udpLine = await deferToThread(
            run, ["nc", "-u", "-w", "1", LOOPBACK, str(daytime)], b"what time?\n"
        )
        self.assertRegex(udpLine, rb"^\w{3} \w{3} .* UTC\r\n$")
        udpTime = await deferToThread(
            run, ["socat", "-t", "1", "-", f"UDP:{LOOPBACK}:{timePort}"], b"t"
        )
        self.assertEqual(len(udpTime), 4, udpTime)
        udpChargen = await deferToThread(
            run, ["socat", "-t", "1", "-", f"UDP:{LOOPBACK}:{chargen}"], b"c"
        )
        self.assertLessEqual(len(udpChargen), 512)
        self.assertIn(udpChargen, CYCLE + CYCLE)

        pattern = await deferToThread(
            readSome, ["socat", "-u", f"TCP:{LOOPBACK}:{chargen}", "-"], 50_000
        )
        self.assertEqual(len(pattern), 50_000)
        self.assertTrue(pattern == (CYCLE * 8)[:50_000], "not the RFC 864 pattern")

        await daemon.waitForOutput(r"chargen session from 127\.0\.0\.1:\d+ on ", 10)
        prober = self.daemon("netd", "--check", "--probe", "--config", config)
        self.assertEqual(await prober.wait(60), 0, prober.stdout + prober.stderr)
        self.assertIn("probe: 6 ok, 0 failed, 0 skipped", prober.stdout)

        code = await daemon.stop()
        self.assertStoppedCleanly(daemon, code)
        stdout = daemon.stdout
        self.assertRegex(
            stdout,
            r"daytime session from 127\.0\.0\.1:\d+ on \S+ ended after [\d.]+s: "
            r"0 bytes in, 30 bytes out \(closed\)",
        )
        self.assertRegex(
            stdout,
            r"time session from 127\.0\.0\.1:\d+ on \S+ ended after [\d.]+s: "
            r"0 bytes in, 4 bytes out \(closed\)",
        )
        self.assertRegex(
            stdout,
            r"chargen session from 127\.0\.0\.1:\d+ on \S+ ended after [\d.]+s: "
            r"0 bytes in, \d+ bytes out",
        )
