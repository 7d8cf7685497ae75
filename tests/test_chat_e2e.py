# -*- test-case-name: tests.test_chat_e2e -*-
"""
End-to-end tests of the chat service: the real C{twistd -n --pidfile= netd
--config FILE} in a subprocess, with plain blocking sockets as clients (what
C{nc} and C{socat} do).
"""

from __future__ import annotations

import socket
import threading
import time

from twisted.python import log
from twisted.trial.unittest import SynchronousTestCase

from tests.chatsupport import LineClient, Netd

#: How fast the flooder sends, in bytes per second.
FLOOD_RATE = 50_000_000

#: The output bound in the flood test (the default is 256 KiB): room for a
#: reader that is descheduled for a moment while 50 MB/s go by (a loaded CI
#: machine stalled the reader past it at 100 MB/s).
MAX_PENDING = 4 * 1024 * 1024

CONFIG = """\
[netd]
stats_interval = 3600

[services.chat]
type = "chat"
listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]
{settings}

[services.chat.limits]
max_sessions_per_peer = 1000
"""


class EndToEndTests(SynchronousTestCase):
    """
    The chat service through the real daemon.
    """

    def start(self, settings: str = "") -> Netd:
        """
        Start netd with a chat service on TCP and UDP ports chosen by the
        system.

        @param settings: Extra lines for the chat service's table.
        @return: The running daemon, its ports known.
        """
        netd = Netd(CONFIG.format(settings=settings))
        self.addCleanup(netd.stop)
        netd.waitListening(2)
        return netd

    def test_ncAndSocatUsers(self) -> None:
        """
        Two TCP users and one UDP user share a room: each sees the others'
        lines, nick changes and private messages; the server's log has the
        joins, parts and nick changes but no message text; SIGTERM stops it
        cleanly.
        """
        netd = self.start()
        port = netd.addresses[("chat", "tcp")]
        udpPort = netd.addresses[("chat", "udp")]
        alice = LineClient(port)
        self.addCleanup(alice.close)
        alice.expect("type a nickname")
        alice.send("alice")
        alice.expect(r"^\*\*\* alice joined #lobby$")
        bob = LineClient(port)
        self.addCleanup(bob.close)
        bob.send("/nick bob")
        bob.expect(r"^\*\*\* bob joined #lobby$")
        alice.expect(r"^\*\*\* bob joined #lobby$")

        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(udp.close)
        udp.settimeout(10)
        udp.connect(("127.0.0.1", udpPort))
        # A UDP member is sent at most what it sent: pad the datagrams.
        pad = " " * 400
        udp.send(f"/nick carol{pad}\n".encode())
        alice.expect(r"^\*\*\* carol joined #lobby$")
        bob.expect(r"^\*\*\* carol joined #lobby$")

        alice.send("hello everyone")
        bob.expect(r"^<alice> hello everyone$")
        bob.send("/nick robert")
        alice.expect(r"^\*\*\* bob is now known as robert$")
        udp.send(f"hi from udp{pad}\n".encode())
        alice.expect(r"^<carol> hi from udp$")
        bob.expect(r"^<carol> hi from udp$")
        alice.send("/msg Robert just for you")
        bob.expect(r"^\*alice\* just for you$")
        udp.send(b"/msg alice psst" + pad.encode())
        alice.expect(r"^\*carol\* psst$")
        received = b""
        deadline = time.monotonic() + 10
        while b"<alice> hello everyone" not in received and time.monotonic() < deadline:
            received += udp.recv(65536)
        self.assertIn(b"<alice> hello everyone", received)
        bob.send("/quit")
        alice.expect(r"^\*\*\* robert left #lobby \(quit\)$")
        alice.close()
        # Stopping waits for open sessions to end (drain): alice's is closed.
        time.sleep(0.2)
        self.assertEqual(netd.stop(), 0)
        log = netd.output
        self.assertRegex(log, r"chat: alice joined #lobby \(127\.0\.0\.1:\d+, tcp\)")
        self.assertRegex(log, r"chat: carol joined #lobby \(127\.0\.0\.1:\d+, udp\)")
        self.assertIn("chat: bob is now known as robert", log)
        self.assertIn("chat: robert left #lobby", log)
        self.assertNotIn("hello everyone", log)
        self.assertNotIn("just for you", log)

    def test_neverReadingClientAndFlood(self) -> None:
        """
        One client never reads while another floods 200 MB of lines into
        the room (at 50 MB/s, under flood limits raised for the test):
        netd disconnects the sleeper once more than C{max_pending_output}
        waits for it, its resident memory stays within 32 MiB of where it
        started, and a client that reads receives every line.
        """
        netd = self.start(
            "flood_lines_per_second = 1e9\n"
            "flood_lines_burst = 1000000000\n"
            f"flood_bytes_per_second = {FLOOD_RATE * 1.5:.0f}\n"
            f"flood_bytes_burst = {FLOOD_RATE // 4}\n"
            f"max_pending_output = {MAX_PENDING}\n"
            "history_lines = 0\n"
        )
        port = netd.addresses[("chat", "tcp")]
        sleeper = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sleeper.connect(("127.0.0.1", port))
        self.addCleanup(sleeper.close)
        sleeper.sendall(b"sleeper\n")
        # A reader with room in its kernel buffer, so that being descheduled
        # for a moment on a busy machine does not make it a slow consumer.
        reader = LineClient(port, receiveBuffer=32 * 1024 * 1024)
        self.addCleanup(reader.close)
        reader.send("reader")
        reader.expect(r"^\*\*\* reader joined")
        flooder = LineClient(port)
        self.addCleanup(flooder.close)
        flooder.send("flooder")
        reader.expect(r"^\*\*\* flooder joined")
        time.sleep(0.5)
        baseline = netd.rss()

        payload = b"0123456789abcdef" * 250  # 4,000 bytes
        lines = 50_000  # 200 MB, in chunks of 16 lines
        chunk = (payload + b"\n") * 16
        expected = b"<flooder> " + payload
        peak = [baseline]
        done = threading.Event()
        counts = {"lines": 0, "other": []}

        def sample() -> None:
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], netd.rss())
                except (OSError, AssertionError):
                    return
                time.sleep(0.02)

        def read() -> None:
            sock = reader.sock
            sock.settimeout(60)
            rest = reader.buffer
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    return
                parts = (rest + data).split(b"\r\n")
                rest = parts.pop()
                for line in parts:
                    if line == expected:
                        counts["lines"] += 1
                    elif line == b"<flooder> done":
                        return
                    else:
                        counts["other"].append(line[:100])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        readerThread = threading.Thread(target=read, daemon=True)
        readerThread.start()
        started = time.monotonic()
        for index in range(lines // 16):
            flooder.sock.sendall(chunk)
            # Pace the flood at FLOOD_RATE, within the flood limits.
            ahead = started + (index + 1) * len(chunk) / FLOOD_RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        flooder.send("done")
        readerThread.join(120)
        elapsed = time.monotonic() - started
        done.set()
        sampler.join(5)
        self.assertFalse(
            readerThread.is_alive(), "the reader did not get everything in time"
        )
        self.assertEqual(counts["lines"], lines, counts["other"][:20])
        growth = peak[0] - baseline
        self.assertLess(growth, 32 * 1024 * 1024, f"RSS grew by {growth} bytes")
        self.assertIn(
            b"*** sleeper left #lobby (kicked: too slow: more than "
            + str(MAX_PENDING).encode()
            + b" bytes of output pending)",
            counts["other"],
        )
        self.assertRegex(
            netd.output,
            r"chat: disconnected sleeper \(127\.0\.0\.1:\d+, tcp\): too slow",
        )
        # Keep the measured figures in the test log.
        log.msg(
            f"flood: {lines * len(payload) / 1e6:.0f} MB in {elapsed:.1f}s, "
            f"RSS {baseline / 2**20:.1f} MiB -> peak {peak[0] / 2**20:.1f} MiB"
        )
