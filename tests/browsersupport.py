# -*- test-case-name: tests.test_chat_browser -*-
"""
A real headless browser for tests: Debian's chromium, driven through
chromedriver's W3C WebDriver HTTP API (spoken here with L{urllib}, so no
extra Python package is needed). Used by L{tests.test_chat_browser} and
L{tests.test_chat_redis_e2e}.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support import stopProcess

ENTER = "\ue007"

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1000,700",
]


def findBrowser() -> tuple[str | None, str | None]:
    """
    @return: The chromium binary and chromedriver, or L{None} for either
        that is missing.
    """
    browser = None
    for candidate in ("/usr/lib/chromium/chromium", "chromium", "chromium-browser"):
        path = shutil.which(candidate) or (
            candidate if os.access(candidate, os.X_OK) else None
        )
        if path:
            browser = path
            break
    return browser, shutil.which("chromedriver")


BROWSER, DRIVER = findBrowser()

#: Why browser tests skip here, or L{None} when chromium and chromedriver
#: are both installed.
BROWSER_SKIP: str | None = (
    None
    if BROWSER is not None and DRIVER is not None
    else "needs Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver): "
    + ", ".join(
        name
        for name, found in (("chromium", BROWSER), ("chromedriver", DRIVER))
        if found is None
    )
    + " not found"
)


class WebDriver:
    """
    A minimal W3C WebDriver client for one chromedriver process (C{flags}:
    chromium flags beyond L{CHROMIUM_FLAGS}).

    @ivar process: chromedriver.
    @ivar session: The WebDriver session id.
    """

    def __init__(
        self, driver: str, browser: str, profile: str, flags: Sequence[str] = ()
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(OSError, urllib.error.URLError):
                    if self.call("GET", "/status")["ready"]:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("chromedriver did not start")
                time.sleep(0.1)
            capabilities = {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": browser,
                    # "--enable-quic" among the flags replaces the default
                    # "--disable-quic" (which keeps other tests on TCP).
                    "args": [
                        flag
                        for flag in CHROMIUM_FLAGS
                        if flag != "--disable-quic" or "--enable-quic" not in flags
                    ]
                    + list(flags)
                    + [f"--user-data-dir={profile}"],
                },
            }
            self.session = self.call(
                "POST", "/session", {"capabilities": {"alwaysMatch": capabilities}}
            )["sessionId"]
        except BaseException:
            self.stopDriver()
            raise

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """
        One WebDriver command.

        @param method: The HTTP method.
        @param path: The path (under C{/session/ID} for most commands).
        @param body: The JSON body, if any.
        @return: The response's C{value}.
        @raise RuntimeError: If WebDriver reports an error.
        """
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(
                f"WebDriver {method} {path}: {e.read()[:500]!r}"
            ) from None

    def command(self, method: str, path: str, body: Any = None) -> Any:
        """
        A command of this session.
        """
        return self.call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        """
        Load a page in the current window.
        """
        self.command("POST", "/url", {"url": url})

    def newTab(self) -> str:
        """
        Open a tab and switch to it.

        @return: Its window handle.
        """
        handle = self.command("POST", "/window/new", {"type": "tab"})["handle"]
        self.switchTo(handle)
        return handle

    def switchTo(self, handle: str) -> None:
        self.command("POST", "/window", {"handle": handle})

    def window(self) -> str:
        return self.command("GET", "/window")

    def element(self, css: str) -> str:
        found = self.command(
            "POST", "/element", {"using": "css selector", "value": css}
        )
        return next(iter(found.values()))

    def text(self, css: str) -> str:
        return self.command("GET", f"/element/{self.element(css)}/text")

    def type(self, css: str, text: str) -> None:
        self.command("POST", f"/element/{self.element(css)}/value", {"text": text})

    def script(self, source: str) -> Any:
        return self.command("POST", "/execute/sync", {"script": source, "args": []})

    def asyncScript(self, source: str) -> Any:
        """
        Run a script that reports by calling its last argument (WebDriver's
        asynchronous script; chromedriver waits 30 s by default).

        @return: What it reported.
        """
        return self.command("POST", "/execute/async", {"script": source, "args": []})

    def waitForText(self, css: str, needle: str, timeout: float = 15.0) -> str:
        """
        Wait until an element's text contains C{needle}.

        @return: The text.
        @raise AssertionError: If it does not in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.text(css)
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in {css}: {text[-2000:]!r}")
            time.sleep(0.1)

    def quit(self) -> None:
        """
        End the session and stop chromedriver (only that process, by PID).
        """
        with contextlib.suppress(OSError, RuntimeError, urllib.error.URLError):
            self.call("DELETE", f"/session/{self.session}")
        self.stopDriver()

    def stopDriver(self) -> None:
        """
        Stop chromedriver (by PID).
        """
        stopProcess(self.process)


def spkiHash(certPath: str) -> str:
    """
    @param certPath: A PEM certificate.
    @return: The base64 SHA-256 of its SubjectPublicKeyInfo, as chromium's
        C{--ignore-certificate-errors-spki-list} takes it: that one
        certificate is accepted, not every bad one.
    """
    with open(certPath, "rb") as f:
        certificate = x509.load_pem_x509_certificate(f.read())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")
