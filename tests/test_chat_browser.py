# -*- test-case-name: tests.test_chat_browser -*-
"""
The chat page in a real headless browser: Debian's chromium, driven through
chromedriver's W3C WebDriver HTTP API (L{tests.browsersupport}).

Two browser tabs and one TCP client exchange messages, nick changes and
private messages, twice:

  - end to end, through the real C{twistd -n netd} with an http service
    that mounts the chat service at C{/chat/} (C{chat = "chat"});
  - with the chat service's web resource in a plain L{Site}, in this
    process, next to the same service's TCP listener.

Skipped, saying why, when chromium or chromedriver is missing (C{.ci/run}
installs both: C{apt-get install chromium chromium-driver}).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any


from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site

from netd.services import serviceTypes
from netd.services.chat import buildStreamFactory, buildWebResource
from netd.sessions import SessionFactory
from tests.browsersupport import (
    BROWSER,
    BROWSER_SKIP,
    DRIVER,
    ENTER,
    WebDriver,
    spkiHash,
)
from tests.chatsupport import LineClient, Netd
from tests.support import makeContext, writeSelfSignedCertificate
from tests.test_tls import tlsListener

MOUNT_CONFIG = """\
[netd]
stats_interval = 3600

[services.chat]
type = "chat"
listen = ["tcp:0:interface=127.0.0.1"]

[services.web]
type = "http"
listen = ["tcp:0:interface=127.0.0.1"]
chat = "chat"
chat_path = "/chat/"
"""


def httpMountsChat() -> bool:
    """
    @return: Whether netd has an http service type that can mount a chat
        service (its C{chat} setting).
    """
    http = serviceTypes().get("http")
    return http is not None and any(setting.key == "chat" for setting in http.settings)


class BrowserTests(TestCase):
    """
    Two chromium tabs and a TCP client in one chat room.
    """

    timeout = 120

    skip = BROWSER_SKIP

    def test_throughNetd(self) -> Any:
        """
        End to end: C{twistd -n netd} with a chat service and an http
        service mounting it at C{/chat/}; two browser pages load the page
        from the http service and one TCP client joins the chat service:
        they see each other's messages, nick changes and private messages.
        """
        if not httpMountsChat():
            raise SkipTest("netd has no http service with a chat mount yet")

        def run() -> None:
            netd = Netd(MOUNT_CONFIG)
            try:
                netd.waitListening(2)
                page = f"http://127.0.0.1:{netd.addresses[('web', 'tcp')]}/chat/"
                self.converse(page, netd.addresses[("chat", "tcp")])
                self.assertRegex(
                    netd.output, r"chat: alice joined #lobby \(127\.0\.0\.1:\d+, ws\)"
                )
            finally:
                netd.stop()

        return deferToThread(run)

    def test_overHTTPS(self) -> Any:
        """
        End to end over HTTPS: the http service on an C{ssl:} listener
        (chromium offers ALPN C{h2,http/1.1}: issue 12), its self-signed
        certificate accepted for this test only by its SPKI hash. Chromium
        loads a static file and the chat page, whose WebSocket (C{wss:})
        joins a room that a TCP client shares.
        """
        if not httpMountsChat():
            raise SkipTest("netd has no http service with a chat mount yet")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "root"))
        with open(os.path.join(directory, "root", "f.txt"), "w") as f:
            f.write("static over https\n")
        keyPath, certPath = writeSelfSignedCertificate(directory)
        config = MOUNT_CONFIG.replace(
            'type = "http"\nlisten = ["tcp:0:interface=127.0.0.1"]',
            f'type = "http"\nlisten = [{tlsListener(keyPath, certPath)}]\n'
            f"root = {json.dumps(os.path.join(directory, 'root'))}",
        )
        flags = [f"--ignore-certificate-errors-spki-list={spkiHash(certPath)}"]

        def run() -> None:
            netd = Netd(config, directory)
            profile = tempfile.mkdtemp(prefix="netd-chromium-")
            driver = None
            carol = None
            try:
                netd.waitListening(2)
                base = f"https://127.0.0.1:{netd.addresses[('web', 'ssl')]}"
                driver = WebDriver(DRIVER, BROWSER, profile, flags)
                driver.open(base + "/f.txt")
                self.assertEqual(
                    driver.script("return document.body.innerText").strip(),
                    "static over https",
                )
                driver.open(base + "/chat/")
                self.assertEqual(driver.script("return location.protocol"), "https:")
                driver.waitForText("#status", "connected")
                driver.type("#input", "alice" + ENTER)
                driver.waitForText("#log", "alice joined #lobby")
                carol = LineClient(netd.addresses[("chat", "tcp")])
                carol.send("carol")
                driver.waitForText("#log", "carol joined #lobby")
                driver.type("#input", "hello over https" + ENTER)
                carol.expect(r"^<alice> hello over https$")
            finally:
                if carol is not None:
                    carol.close()
                if driver is not None:
                    driver.quit()
                shutil.rmtree(profile, ignore_errors=True)
                code = netd.stop()
            self.assertEqual(code, 0, netd.output)
            self.assertRegex(
                netd.output, r"chat: alice joined #lobby \(127\.0\.0\.1:\d+, ws\)"
            )

        return deferToThread(run)

    def test_overHTTP2(self) -> Any:
        """
        Chromium negotiates HTTP/2 with an http service that mounts no chat
        page (one that does offers only HTTP/1.1), and loads a page and a
        large file over it: the navigation's C{nextHopProtocol} is C{h2}
        and the file's bytes arrive whole.
        """
        directory = os.path.abspath(self.mktemp())
        root = os.path.join(directory, "root")
        os.makedirs(root)
        with open(os.path.join(root, "f.txt"), "w") as f:
            f.write("static over h2\n")
        with open(os.path.join(root, "big.txt"), "w") as f:
            f.write("0123456789abcdef" * 65536)
        keyPath, certPath = writeSelfSignedCertificate(directory)
        config = (
            "[netd]\nstats_interval = 3600\n"
            f'[services.web]\ntype = "http"\nlisten = [{tlsListener(keyPath, certPath)}]\n'
            f"root = {json.dumps(root)}\n"
        )
        flags = [f"--ignore-certificate-errors-spki-list={spkiHash(certPath)}"]

        def run() -> None:
            netd = Netd(config, directory)
            profile = tempfile.mkdtemp(prefix="netd-chromium-")
            driver = None
            try:
                netd.waitListening(1)
                base = f"https://127.0.0.1:{netd.addresses[('web', 'ssl')]}"
                driver = WebDriver(DRIVER, BROWSER, profile, flags)
                driver.open(base + "/f.txt")
                self.assertEqual(
                    driver.script("return document.body.innerText").strip(),
                    "static over h2",
                )
                self.assertEqual(
                    driver.script(
                        "return performance.getEntriesByType('navigation')[0]"
                        ".nextHopProtocol"
                    ),
                    "h2",
                )
                driver.open(base + "/big.txt")
                self.assertEqual(
                    driver.script("return document.body.innerText.length"),
                    16 * 65536,
                )
            finally:
                if driver is not None:
                    driver.quit()
                shutil.rmtree(profile, ignore_errors=True)
                code = netd.stop()
            self.assertEqual(code, 0, netd.output)
            self.assertNotIn("Traceback", netd.output)

        return deferToThread(run)

    def test_twoTabsAndATCPClient(self) -> Any:
        """
        Two browser pages and one TCP client see each other's messages, nick
        changes and private messages; markup typed in a page is shown as
        text, never interpreted. (The chat service's web resource in a
        L{Site}, in this process.)
        """
        context = makeContext("chat", reactor=reactor)
        site = Site(buildWebResource(context))
        site.noisy = False
        web = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(web.stopListening)
        factory = SessionFactory(buildStreamFactory(context), context, "tcp:0")
        tcp = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(tcp.stopListening)
        url = f"http://127.0.0.1:{web.getHost().port}/"
        return deferToThread(self.converse, url, tcp.getHost().port)

    def converse(self, url: str, tcpPort: int) -> None:
        """
        The conversation, blocking (run in a thread while the reactor
        serves).

        @param url: The chat page.
        @param tcpPort: The chat's TCP port.
        """
        profile = tempfile.mkdtemp(prefix="netd-chromium-")
        driver = WebDriver(DRIVER, BROWSER, profile)
        carol = None
        try:
            driver.open(url)
            first = driver.window()
            driver.waitForText("#status", "connected")
            driver.waitForText("#log", "type a nickname")
            # The inline style ran under the page's Content-Security-Policy.
            self.assertEqual(
                driver.script("return getComputedStyle(document.body).display"), "flex"
            )
            driver.type("#input", "alice" + ENTER)
            driver.waitForText("#log", "alice joined #lobby")

            second = driver.newTab()
            driver.open(url)
            driver.waitForText("#status", "connected")
            driver.type("#input", "bob" + ENTER)
            driver.waitForText("#log", "bob joined #lobby")

            carol = LineClient(tcpPort)
            carol.send("carol")
            carol.expect(r"^\*\*\* carol joined #lobby$")
            driver.waitForText("#log", "carol joined #lobby")

            driver.type("#input", "hello from bob <b>not bold</b>" + ENTER)
            carol.expect(r"^<bob> hello from bob <b>not bold</b>$")
            driver.waitForText("#log", "<bob> hello from bob <b>not bold</b>")
            self.assertEqual(
                driver.script("return document.querySelectorAll('#log b').length"), 0
            )

            carol.send("hello browsers")
            driver.waitForText("#log", "<carol> hello browsers")
            driver.switchTo(first)
            text = driver.waitForText("#log", "<carol> hello browsers")
            self.assertIn("<bob> hello from bob <b>not bold</b>", text)

            driver.type("#input", "/nick alicia" + ENTER)
            carol.expect(r"^\*\*\* alice is now known as alicia$")
            driver.type("#input", "/msg carol psst from the browser" + ENTER)
            carol.expect(r"^\*alicia\* psst from the browser$")
            carol.send("/msg bob secret for bob")
            driver.switchTo(second)
            driver.waitForText("#log", "alice is now known as alicia")
            driver.waitForText("#log", "*carol* secret for bob")
            driver.switchTo(first)
            self.assertNotIn("secret for bob", driver.text("#log"))
        finally:
            if carol is not None:
                carol.close()
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
