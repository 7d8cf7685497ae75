# -*- test-case-name: tests.test_http_config -*-
"""
Tests for the http service's configuration (L{netd.services.http}) and the
cross-service check it needs (L{netd.config}, C{ServiceType.checkConfig}).
"""

from __future__ import annotations

import ipaddress
import os
from textwrap import dedent
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import netd.config
import netd.services
from netd.config import ConfigError, parseConfig
from netd.services import echo, http, serviceTypes
from netd.servicetype import ServiceType
from netd.settings import Problem

SOURCE = "netd.toml"


def fakeWebType() -> ServiceType:
    """
    @return: A service type with a web front end, standing in for chat.
    """
    return ServiceType(
        name="web",
        description="a service with a browser front end",
        buildStreamFactory=echo.buildStreamFactory,
        buildWebResource=lambda context: None,
    )


class HTTPConfigTestCase(SynchronousTestCase):
    """
    Parse configuration text; a directory to use as a root.
    """

    def setUp(self) -> None:
        self.types = serviceTypes()
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)

    def parse(self, text: str) -> Any:
        """
        @param text: TOML, dedented.
        @return: The configuration.
        """
        return parseConfig(self.types, dedent(text), SOURCE)

    def problems(self, text: str) -> list[str]:
        """
        @param text: TOML that must be invalid.
        @return: The problem lines.
        """
        with self.assertRaises(ConfigError) as caught:
            self.parse(text)
        return caught.exception.lines()

    def service(self, **keys: str) -> str:
        """
        @param keys: Extra keys of an http service, as TOML values.
        @return: The TOML of one http service.
        """
        lines = "".join(f"{key} = {value}\n" for key, value in keys.items())
        return (
            '[services.www]\ntype = "http"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
            + lines
        )


class SettingsTests(HTTPConfigTestCase):
    """
    Every key, valid and invalid.
    """

    def test_defaults(self) -> None:
        """
        An http service without keys serves netd's page, with the documented
        defaults.
        """
        settings = self.parse(self.service()).services[0].settings
        self.assertIsNone(settings["root"])
        self.assertEqual(settings["index"], ("index.html",))
        self.assertEqual(
            (settings["listing"], settings["follow_symlinks"], settings["dotfiles"]),
            (False, False, False),
        )
        self.assertEqual(
            (
                settings["max_request_line"],
                settings["max_header_size"],
                settings["max_headers"],
            ),
            (8192, 16384, 100),
        )
        self.assertEqual(
            (
                settings["header_timeout"],
                settings["keepalive_timeout"],
                settings["send_timeout"],
            ),
            (10.0, 15.0, 30.0),
        )
        self.assertIsNone(settings["status_path"])
        self.assertIsNone(settings["access_log_file"])
        self.assertFalse(settings["access_log_events"])
        self.assertEqual(
            settings["status_allow"],
            (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        )
        self.assertIsNone(settings["chat"])
        self.assertEqual(settings["chat_path"], "/chat/")

    def test_everyKey(self) -> None:
        """
        Every key is read and converted.
        """
        log = os.path.join(self.root, "access.log")
        settings = (
            self.parse(
                self.service(
                    root=repr(self.root),
                    index='["index.htm", "default.html"]',
                    listing="true",
                    follow_symlinks="true",
                    dotfiles="true",
                    mime_types='{ log = "text/plain", ".md" = "text/markdown" }',
                    default_type='"text/plain"',
                    charset='""',
                    headers='{ "X-Frame-Options" = "DENY" }',
                    max_request_line="1024",
                    max_header_size="4096",
                    max_headers="20",
                    max_body_size="0",
                    header_timeout="5",
                    keepalive_timeout="0",
                    send_timeout="60",
                    access_log_file=repr(log),
                    access_log_events="true",
                    status_path='"/.netd/status"',
                    status_allow='["10.0.0.0/8"]',
                )
            )
            .services[0]
            .settings
        )
        config = http.httpConfig(settings)
        self.assertEqual(config.root, self.root)
        self.assertEqual(config.index, ("index.htm", "default.html"))
        self.assertEqual(
            config.mimeTypes, ((".log", "text/plain"), (".md", "text/markdown"))
        )
        self.assertEqual(config.headers, (("X-Frame-Options", "DENY"),))
        self.assertEqual(config.accessLogFile, log)
        self.assertEqual(config.statusPath, "/.netd/status")
        self.assertEqual(config.keepaliveTimeout, 0.0)
        self.assertEqual(config.charset, "")

    def test_invalid(self) -> None:
        """
        Invalid values are all reported at once, each with its key path.
        """
        missing = os.path.join(self.root, "missing")
        lines = self.problems(
            self.service(
                root=repr(missing),
                index='["a/b"]',
                mime_types='{ log = "plain" }',
                headers='{ "Content-Length" = "1", "X-A" = "a\\r\\nb" }',
                max_request_line="10",
                header_timeout="0",
                status_path='"status"',
                chat_path='"/chat"',
                access_log_file=repr(os.path.join(missing, "log")),
            )
        )
        keys = [line.split(": ")[1] for line in lines]
        self.assertEqual(
            keys,
            [
                "services.www.root",
                "services.www.index",
                "services.www.mime_types",
                "services.www.headers",
                "services.www.max_request_line",
                "services.www.header_timeout",
                "services.www.access_log_file",
                "services.www.status_path",
                "services.www.chat_path",
            ],
        )
        self.assertIn("does not exist", lines[0])
        self.assertIn("is set by netd itself", lines[3])

    def test_rootNotDirectory(self) -> None:
        """
        A root that is a file is refused by name.
        """
        path = os.path.join(self.root, "file")
        with open(path, "w") as f:
            f.write("x")
        lines = self.problems(self.service(root=repr(path)))
        self.assertEqual(
            lines, [f"{SOURCE}: services.www.root: {path!r} is not a directory"]
        )

    def test_headerValueControl(self) -> None:
        """
        A header value with a control character is refused (no response
        splitting through the configuration).
        """
        lines = self.problems(self.service(headers='{ "X-A" = "a\\u0000b" }'))
        self.assertIn("control character", lines[0])

    def test_unknownKey(self) -> None:
        """
        A misspelt key gets a did-you-mean.
        """
        lines = self.problems(self.service(follow_symlink="true"))
        self.assertIn("did you mean 'follow_symlinks'?", lines[0])


class ChatReferenceTests(HTTPConfigTestCase):
    """
    C{chat} must name an enabled service whose type has a web front end.
    """

    def setUp(self) -> None:
        super().setUp()
        types = dict(netd.services.serviceTypes())
        types["web"] = fakeWebType()
        self.types = types

    def test_valid(self) -> None:
        """
        Naming a service of a type with C{buildWebResource} is accepted.
        """
        config = self.parse(
            self.service(chat='"talk"', chat_path='"/talk/"')
            + '[services.talk]\ntype = "web"\nlisten = ["tcp:0"]\n'
        )
        self.assertEqual(config.services[0].settings["chat"], "talk")

    def test_missing(self) -> None:
        """
        Naming no service is reported, with the services there are.
        """
        lines = self.problems(
            self.service(chat='"talk"')
            + '[services.e]\ntype = "echo"\nlisten = ["tcp:0"]\n'
        )
        self.assertEqual(
            lines,
            [
                f"{SOURCE}: services.www.chat: no enabled service named 'talk' "
                "(services: e, www)"
            ],
        )

    def test_disabled(self) -> None:
        """
        Naming a disabled service is reported.
        """
        lines = self.problems(
            self.service(chat='"talk"')
            + '[services.talk]\ntype = "web"\nlisten = ["tcp:0"]\nenabled = false\n'
        )
        self.assertEqual(len(lines), 1)
        self.assertIn("no enabled service named 'talk'", lines[0])

    def test_noWebFrontEnd(self) -> None:
        """
        Naming a service whose type has no web front end is reported, with
        the types of the enabled services that have one.
        """
        lines = self.problems(
            self.service(chat='"e"')
            + '[services.e]\ntype = "echo"\nlisten = ["tcp:0"]\n'
            + '[services.talk]\ntype = "web"\nlisten = ["tcp:0"]\n'
        )
        self.assertEqual(len(lines), 1)
        self.assertIn("'e' is a echo service, which has no web front end", lines[0])
        self.assertIn("web", lines[0].split("types that have one: ")[1])

    def test_generic(self) -> None:
        """
        Any type's C{checkConfig} runs after every service is read, with
        this service and every enabled one by name.
        """
        seen: list[tuple[str, list[str]]] = []

        def check(service: Any, services: Any) -> list[Problem]:
            seen.append((service.name, sorted(services)))
            return [Problem(f"services.{service.name}", "nope")]

        types = dict(netd.services.serviceTypes())
        types["checked"] = ServiceType(
            name="checked",
            description="checked",
            buildStreamFactory=echo.buildStreamFactory,
            checkConfig=check,
        )
        self.types = types
        lines = self.problems(
            '[services.a]\ntype = "checked"\nlisten = ["tcp:0"]\n'
            '[services.b]\ntype = "echo"\nlisten = ["tcp:0"]\n'
        )
        self.assertEqual(seen, [("a", ["a", "b"])])
        self.assertEqual(lines, [f"{SOURCE}: services.a: nope"])


class ExampleTests(SynchronousTestCase):
    """
    The shipped configurations.
    """

    def test_exampleHasHTTP(self) -> None:
        """
        C{etc/netd.toml} has an http service, and every http key appears in
        it (set or commented).
        """
        path = os.path.join(os.path.dirname(__file__), "..", "etc", "netd.toml")
        with open(path) as f:
            text = f.read()
        self.assertIn('type = "http"', text)
        for setting in http.SETTINGS:
            self.assertIn(f"{setting.key} =", text, setting.key)


class CertificateTests(HTTPConfigTestCase):
    """
    HTTPS: the certificate is checked with the rest of the configuration.
    """

    def test_missingCertificate(self) -> None:
        """
        An C{ssl:} listener whose certificate is missing is a configuration
        error naming the listener and the file, before anything starts.
        """
        missing = os.path.join(self.root, "missing.pem")
        lines = self.problems(
            '[services.www]\ntype = "http"\n'
            f'listen = ["ssl:0:privateKey={missing}:certKey={missing}"]\n'
        )
        self.assertEqual(len(lines), 1)
        self.assertIn("services.www.listen[0]", lines[0])
        self.assertIn("cannot load the TLS certificate or key", lines[0])
        self.assertIn("missing.pem", lines[0])
