# -*- test-case-name: tests.test_forward_e2e -*-
"""
End to end: the real C{twistd netd} with an http service and a forward
service in front of it, fetched with C{curl}.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests import test_endtoend
from tests.test_endtoend import freePorts
from tests.test_listeners import LOOPBACK

CLIENT_TIMEOUT = 20


def curl(url: str) -> subprocess.CompletedProcess[bytes]:
    """
    @param url: What to fetch.
    @return: The finished C{curl -sS -i} (status line, headers and body).
    """
    return subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", url],
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
    )


class ForwardEndToEndTests(TestCase):
    """
    forward in the real daemon.
    """

    timeout = 90

    writeConfig = test_endtoend.EndToEndTests.writeConfig
    daemon = test_endtoend.EndToEndTests.daemon
    netd = test_endtoend.EndToEndTests.netd
    assertStoppedCleanly = test_endtoend.EndToEndTests.assertStoppedCleanly

    def setUp(self) -> None:
        if shutil.which("curl") is None:
            raise self.skipTest("curl is not installed (package curl)")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    async def test_curlThroughForward(self) -> None:
        """
        C{curl} through the forward service gets netd's own http page, the
        same as directly; the forward session is logged as closed normally;
        a forward to a closed port ends its session with "target refused:
        connection refused"; the daemon stops cleanly.
        """
        httpPort, forwardPort, refusedPort, closedPort = freePorts(4)
        config = self.writeConfig(
            "[services.www]\n"
            'type = "http"\n'
            f'listen = ["tcp:{httpPort}:interface=127.0.0.1"]\n'
            "[services.www-forward]\n"
            'type = "forward"\n'
            f'listen = ["tcp:{forwardPort}:interface=127.0.0.1"]\n'
            f'to = "tcp:127.0.0.1:{httpPort}"\n'
            "[services.nowhere]\n"
            'type = "forward"\n'
            f'listen = ["tcp:{refusedPort}:interface=127.0.0.1"]\n'
            f'to = "tcp:127.0.0.1:{closedPort}"\n'
            "connect_timeout = 5\n"
        )
        daemon = self.netd("--config", config)
        await daemon.waitForOutput(r" listening on ", count=3)

        direct = await deferToThread(curl, f"http://{LOOPBACK}:{httpPort}/")
        forwarded = await deferToThread(curl, f"http://{LOOPBACK}:{forwardPort}/")
        self.assertEqual(forwarded.returncode, 0, forwarded.stderr)
        self.assertTrue(
            forwarded.stdout.startswith(b"HTTP/1.1 200 "), forwarded.stdout[:200]
        )
        body = forwarded.stdout.split(b"\r\n\r\n", 1)[1]
        self.assertEqual(body, direct.stdout.split(b"\r\n\r\n", 1)[1])
        self.assertIn(b"www-forward", body)
        await daemon.waitForOutput(
            r"www-forward session from 127\.0\.0\.1:\d+ on .* bytes out \(closed\)", 10
        )

        refused = await deferToThread(curl, f"http://{LOOPBACK}:{refusedPort}/")
        self.assertNotEqual(refused.returncode, 0)
        await daemon.waitForOutput(
            r"nowhere session from 127\.0\.0\.1:\d+ on .*"
            r"\(target refused: connection refused\)",
            10,
        )
        self.assertStoppedCleanly(daemon, await daemon.stop())
