# -*- test-case-name: tests.test_config -*-
"""
Tests for L{netd.config} and L{netd.settings}: loading and validating netd's
TOML configuration.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
from collections.abc import Mapping
from textwrap import dedent

from twisted.trial.unittest import SynchronousTestCase

from netd import config as configModule
from netd.config import (
    EMBEDDED_DEFAULT,
    GLOBAL_SETTINGS,
    ConfigError,
    NetdConfig,
    ServiceConfig,
    defaultConfigText,
    loadConfig,
    lookupGroup,
    lookupUser,
    parseConfig,
)
from netd.limits import LIMIT_SETTINGS, Limits
from netd.descriptions import DatagramListener, StreamListener
from netd.services import serviceTypes
from netd.servicetype import ServiceType
from netd.settings import Problem, describe, joinPath, unknownKey
from tests.support import escape, writeSelfSignedCertificate

# The registered types, as messages list them.
TYPES = ", ".join(serviceTypes())

SOURCE = "netd.toml"

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "etc", "netd.toml")

ECHO_DEFAULTS = {
    "udp_min_source_port": 1024,
    "udp_refuse_own_ports": True,
    "udp_reply_rate": 100.0,
    "udp_reply_burst": 200,
}


def parse(text: str, types: Mapping[str, ServiceType] | None = None) -> NetdConfig:
    """
    Parse configuration text written with any indentation.

    @param text: TOML, indented as in the test.
    @param types: The service types, or L{None} for netd's own.
    @return: The configuration.
    @raise ConfigError: If it is not valid.
    """
    return parseConfig(serviceTypes() if types is None else types, dedent(text), SOURCE)


def service(text: str) -> ServiceConfig:
    """
    Parse a configuration that has exactly one enabled service.

    @param text: TOML, indented as in the test.
    @return: That service.
    """
    config = parse(text)
    [only] = config.services
    return only


class ConfigTestCase(SynchronousTestCase):
    """
    Helpers for tests of invalid configurations.
    """

    def problemLines(self, text: str) -> list[str]:
        """
        Parse configuration text that must be invalid.

        @param text: TOML, indented as in the test.
        @return: The lines of the L{ConfigError}.
        """
        e = self.assertRaises(ConfigError, parse, text)
        self.assertEqual(e.source, SOURCE)
        return e.lines()

    def assertProblems(self, text: str, *lines: str) -> None:
        """
        Assert that configuration text has exactly the given problems.

        @param text: TOML, indented as in the test.
        @param lines: The expected C{FILE: PATH: MESSAGE} lines, without
            the leading C{"netd.toml: "}.
        """
        self.assertEqual(
            self.problemLines(text), [f"{SOURCE}: {line}" for line in lines]
        )


class EmbeddedDefaultTests(SynchronousTestCase):
    """
    Tests for the embedded default configuration.
    """

    def test_loads(self) -> None:
        """
        L{loadConfig} without a path loads the embedded default: echo and
        discard, each on TCP and UDP on 127.0.0.1, at ports 10007 and 10009,
        http (netd's own page) on TCP at 127.0.0.1:8080, and chat on TCP and
        UDP at 127.0.0.1:10023.
        """
        config = loadConfig(
            serviceTypes(),
        )
        self.assertEqual(config.source, EMBEDDED_DEFAULT)
        self.assertEqual(
            [(s.name, s.type) for s in config.services],
            [
                ("echo", "echo"),
                ("discard", "discard"),
                ("http", "http"),
                ("chat", "chat"),
            ],
        )
        echo, discard, http, chat = config.services
        self.assertEqual(
            chat.listeners,
            (
                StreamListener(
                    "tcp:10023:interface=127.0.0.1", "tcp", 10023, "127.0.0.1"
                ),
                DatagramListener("udp:10023:interface=127.0.0.1", 10023, "127.0.0.1"),
            ),
        )
        self.assertEqual(
            http.listeners,
            (StreamListener("tcp:8080:interface=127.0.0.1", "tcp", 8080, "127.0.0.1"),),
        )
        self.assertIsNone(http.settings["root"])
        self.assertEqual(
            echo.listeners,
            (
                StreamListener(
                    "tcp:10007:interface=127.0.0.1", "tcp", 10007, "127.0.0.1"
                ),
                DatagramListener("udp:10007:interface=127.0.0.1", 10007, "127.0.0.1"),
            ),
        )
        self.assertEqual(
            discard.listeners,
            (
                StreamListener(
                    "tcp:10009:interface=127.0.0.1", "tcp", 10009, "127.0.0.1"
                ),
                DatagramListener("udp:10009:interface=127.0.0.1", 10009, "127.0.0.1"),
            ),
        )

    def test_defaults(self) -> None:
        """
        The embedded default runs as C{nobody} once bound (when started as
        root), keeps the default limits and the echo type's default settings.
        """
        config = loadConfig(
            serviceTypes(),
        )
        self.assertEqual(
            (config.user, config.group, config.statsInterval), ("nobody", None, 60.0)
        )
        for each in config.services:
            self.assertEqual(each.limits, Limits())
        self.assertEqual(dict(config.services[0].settings), ECHO_DEFAULTS)
        self.assertEqual(dict(config.services[1].settings), {})

    def test_text(self) -> None:
        """
        L{defaultConfigText} is the packaged C{default.toml}, and parsing it
        gives what L{loadConfig} gives.
        """
        text = defaultConfigText()
        self.assertIn("[services.echo]", text)
        self.assertEqual(
            parseConfig(serviceTypes(), text, EMBEDDED_DEFAULT),
            loadConfig(
                serviceTypes(),
            ),
        )


class ExampleConfigTests(SynchronousTestCase):
    """
    Tests for the example configuration shipped in C{etc/netd.toml}.
    """

    def test_loads(self) -> None:
        """
        C{etc/netd.toml} loads without problems and configures at least one
        service.
        """
        try:
            config = loadConfig(serviceTypes(), EXAMPLE)
        except ConfigError as e:
            self.fail(str(e))
        self.assertEqual(config.source, EXAMPLE)
        self.assertTrue(config.services)


class FileTests(SynchronousTestCase):
    """
    Tests for L{loadConfig} reading files.
    """

    def write(self, data: bytes) -> str:
        """
        Write a configuration file.

        @param data: Its bytes.
        @return: Its path.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_file(self) -> None:
        """
        A valid file loads, with its path as the source.
        """
        path = self.write(b'[services.a]\ntype = "echo"\nlisten = ["tcp:0"]\n')
        config = loadConfig(serviceTypes(), path)
        self.assertEqual(config.source, path)
        self.assertEqual([s.name for s in config.services], ["a"])

    def test_nonexistent(self) -> None:
        """
        A file that does not exist is one problem about the whole file.
        """
        path = self.mktemp()
        e = self.assertRaises(ConfigError, loadConfig, serviceTypes(), path)
        self.assertEqual(e.source, path)
        self.assertEqual(
            e.lines(), [f"{path}: cannot read the file: No such file or directory"]
        )

    def test_directory(self) -> None:
        """
        A directory is not a file.
        """
        path = self.mktemp()
        os.makedirs(path)
        e = self.assertRaises(ConfigError, loadConfig, serviceTypes(), path)
        self.assertEqual(e.lines(), [f"{path}: cannot read the file: Is a directory"])

    def test_notUTF8(self) -> None:
        """
        A file that is not UTF-8 is refused, naming the offending byte.
        """
        path = self.write(b"[netd]\n# caf\xe9\n")
        e = self.assertRaises(ConfigError, loadConfig, serviceTypes(), path)
        self.assertEqual(
            e.lines(),
            [f"{path}: not UTF-8 text (invalid continuation byte at byte 12)"],
        )

    def test_invalidTOML(self) -> None:
        """
        A TOML syntax error is reported with its line number.
        """
        path = self.write(b"[netd]\nuser = \n")
        e = self.assertRaises(ConfigError, loadConfig, serviceTypes(), path)
        self.assertEqual(
            e.lines(), [f"{path}: invalid TOML: Invalid value (at line 2, column 8)"]
        )

    def test_severalProblemsInAFile(self) -> None:
        """
        Every problem in a file is reported at once, one line each, as
        C{FILE: KEY.PATH: message}, and C{str()} of the error is those lines.
        """
        path = self.write(dedent("""\
                [netd]
                stats_interval = "often"

                [services.echo]
                type = "echo"
                lisen = ["tcp:7"]

                [services.discard]
                type = "discard"
                listen = ["tcp:9", "tcp:99999"]

                [services.discard.limits]
                max_sessions = true
                """).encode("utf-8"))
        e = self.assertRaises(ConfigError, loadConfig, serviceTypes(), path)
        expected = [
            f"{path}: netd.stats_interval: expected a number, got a string",
            f"{path}: services.echo.lisen: unknown key (did you mean 'listen'?)",
            f"{path}: services.echo.listen: missing "
            '(e.g. listen = ["tcp:7:interface=127.0.0.1"])',
            f"{path}: services.discard.limits.max_sessions: "
            "expected an integer, got a boolean",
            f"{path}: services.discard.listen[1]: "
            "'tcp:99999': port 99999 is out of range (0 to 65535)",
        ]
        self.assertEqual(e.lines(), expected)
        self.assertEqual(str(e), "\n".join(expected))
        self.assertEqual(len(e.problems), 5)


class UnknownKeyTests(ConfigTestCase):
    """
    Unknown keys are reported wherever they are, with a did-you-mean.
    """

    def test_topLevel(self) -> None:
        """
        An unknown top-level key suggests the closest known one.
        """
        self.assertProblems(
            """
            [sevices.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "sevices: unknown key (did you mean 'services'?)",
            "services: no services configured (add a [services.NAME] table)",
        )

    def test_topLevelNothingClose(self) -> None:
        """
        When no known key is close, the known keys are listed.
        """
        self.assertProblems(
            """
            zzz = 1
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "zzz: unknown key (known keys: netd, services)",
        )

    def test_netd(self) -> None:
        """
        An unknown key in C{[netd]} suggests the closest known one.
        """
        self.assertProblems(
            """
            [netd]
            usr = "nobody"
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.usr: unknown key (did you mean 'user'?)",
        )

    def test_service(self) -> None:
        """
        C{lisen} in a service suggests C{listen}.
        """
        self.assertIn(
            "netd.toml: services.a.lisen: unknown key (did you mean 'listen'?)",
            self.problemLines("""
                [services.a]
                type = "echo"
                lisen = ["tcp:0"]
                """),
        )

    def test_serviceTypeSetting(self) -> None:
        """
        A misspelt type-specific setting suggests the right one.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            udp_reply_rat = 5
            """,
            "services.a.udp_reply_rat: unknown key (did you mean 'udp_reply_rate'?)",
        )

    def test_settingOfAnotherType(self) -> None:
        """
        An echo setting is unknown in a discard service.
        """
        self.assertProblems(
            """
            [services.a]
            type = "discard"
            listen = ["tcp:0"]
            udp_reply_rate = 5
            """,
            "services.a.udp_reply_rate: unknown key "
            "(known keys: enabled, limits, listen, type)",
        )

    def test_globalLimits(self) -> None:
        """
        An unknown key in C{[netd.limits]} suggests the closest known one.
        """
        self.assertProblems(
            """
            [netd.limits]
            max_session = 5
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.limits.max_session: unknown key (did you mean 'max_sessions'?)",
        )

    def test_serviceLimits(self) -> None:
        """
        An unknown key in a service's limits suggests the closest known one.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            [services.a.limits]
            idle_timout = 5
            """,
            "services.a.limits.idle_timout: unknown key "
            "(did you mean 'idle_timeout'?)",
        )


class ServiceTests(ConfigTestCase):
    """
    Tests for C{[services.NAME]} tables.
    """

    def test_minimal(self) -> None:
        """
        A service needs only a type and a listen array; the rest defaults.
        """
        self.assertEqual(
            service("""
                [services.e]
                type = "echo"
                listen = ["tcp:0"]
                """),
            ServiceConfig(
                "e",
                "echo",
                (StreamListener("tcp:0", "tcp", 0, "0.0.0.0"),),
                Limits(),
                ECHO_DEFAULTS,
                serviceTypes()["echo"],
            ),
        )

    def test_fileOrder(self) -> None:
        """
        Services come in the order of the file.
        """
        config = parse("""
            [services.z]
            type = "echo"
            listen = ["tcp:0"]
            [services.a]
            type = "discard"
            listen = ["udp:0"]
            [services.m]
            type = "echo"
            listen = ["udp6:0"]
            """)
        self.assertEqual([s.name for s in config.services], ["z", "a", "m"])

    def test_unknownType(self) -> None:
        """
        An unknown service type is named, with the known ones.
        """
        self.assertProblems(
            """
            [services.a]
            type = "ech"
            listen = ["tcp:0"]
            """,
            f"services.a.type: unknown service type 'ech' (one of: {TYPES})",
        )

    def test_typeNotAString(self) -> None:
        """
        A type that is not a string (even an unhashable array) is an unknown
        type, not a crash.
        """
        self.assertProblems(
            """
            [services.a]
            type = ["echo"]
            listen = ["tcp:0"]
            """,
            f"services.a.type: unknown service type ['echo'] (one of: {TYPES})",
        )

    def test_missingType(self) -> None:
        """
        A service without a type says which types there are.
        """
        self.assertProblems(
            """
            [services.a]
            listen = ["tcp:0"]
            """,
            f"services.a.type: missing (one of: {TYPES})",
        )

    def test_missingListen(self) -> None:
        """
        A service without C{listen} gets an example.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            """,
            'services.a.listen: missing (e.g. listen = ["tcp:7:interface=127.0.0.1"])',
        )

    def test_emptyListen(self) -> None:
        """
        An empty C{listen} array is refused.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = []
            """,
            "services.a.listen: expected a non-empty array of listener descriptions",
        )

    def test_listenNotAnArray(self) -> None:
        """
        A single string is not a C{listen} array.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = "tcp:0"
            """,
            "services.a.listen: expected a non-empty array of listener descriptions",
        )

    def test_listenEntryNotAString(self) -> None:
        """
        A C{listen} entry must be a string (or a table).
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = [7]
            """,
            "services.a.listen[0]: expected a listener description string, "
            "got an integer",
        )

    def test_badListenerSyntax(self) -> None:
        """
        A listener that does not parse is reported at its own index, quoted,
        with the parser's message; the valid ones around it are not.
        """
        self.assertProblems(
            """
            [services.echo]
            type = "echo"
            listen = ["tcp:0", "tcp:7:interface=localhost", "udp:0"]
            """,
            "services.echo.listen[1]: 'tcp:7:interface=localhost': interface "
            "'localhost' is not an IP address (host names are not resolved)",
        )

    def test_unknownListenerType(self) -> None:
        """
        An unknown listener type is reported at its path.
        """
        self.assertProblems(
            """
            [services.echo]
            type = "echo"
            listen = ["tcp:0", "sctp:7"]
            """,
            "services.echo.listen[1]: 'sctp:7': unknown listener type 'sctp' "
            "(expected one of: tcp, tcp6, ssl, unix, systemd, udp, udp6)",
        )

    def test_portOutOfRange(self) -> None:
        """
        A port above 65535 is reported at its path.
        """
        self.assertProblems(
            """
            [services.echo]
            type = "echo"
            listen = ["udp:65536"]
            """,
            "services.echo.listen[0]: 'udp:65536': port 65536 is out of range "
            "(0 to 65535)",
        )

    def test_transportNotServed(self) -> None:
        """
        A listener of a transport the service type does not serve is
        reported at its path (with a stream-only type standing in, as every
        real type serves both).
        """
        streamOnly = ServiceType(
            "streamonly",
            "a type without datagram listeners",
            buildStreamFactory=lambda context: None,  # type: ignore[arg-type,return-value]
        )
        types = dict(serviceTypes(), streamonly=streamOnly)
        e = self.assertRaises(
            ConfigError,
            parse,
            """
            [services.s]
            type = "streamonly"
            listen = ["tcp:0", "udp:0"]
            """,
            types,
        )
        self.assertEqual(
            e.lines(),
            [
                f"{SOURCE}: services.s.listen[1]: 'udp:0': a streamonly service "
                "has no datagram listeners"
            ],
        )

    def test_serviceNotATable(self) -> None:
        """
        A service must be a table.
        """
        self.assertProblems(
            """
            [services]
            a = 5
            """,
            "services.a: expected a table, got an integer",
        )

    def test_servicesNotATable(self) -> None:
        """
        C{services} must be a table.
        """
        self.assertProblems(
            """
            services = ["echo"]
            """,
            "services: expected a table, got an array",
        )

    def test_netdNotATable(self) -> None:
        """
        C{netd} must be a table.
        """
        self.assertProblems(
            """
            netd = "yes"
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd: expected a table, got a string",
        )

    def test_limitsNotATable(self) -> None:
        """
        A service's C{limits} must be a table.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            limits = 5
            """,
            "services.a.limits: expected a table, got an integer",
        )

    def test_noServices(self) -> None:
        """
        A file without any C{[services.NAME]} table says how to add one.
        """
        self.assertProblems(
            """
            [netd]
            """,
            "services: no services configured (add a [services.NAME] table)",
        )

    def test_disabled(self) -> None:
        """
        C{enabled = false} drops a service; C{enabled = true} keeps it.
        """
        config = parse("""
            [services.off]
            type = "echo"
            listen = ["tcp:0"]
            enabled = false
            [services.on]
            type = "discard"
            listen = ["tcp:0"]
            enabled = true
            """)
        self.assertEqual([s.name for s in config.services], ["on"])

    def test_everyServiceDisabled(self) -> None:
        """
        A file whose services are all disabled (or an empty C{[services]}
        table) is refused: a daemon with nothing to serve is a mistake.
        """
        self.assertProblems(
            """
            [services.off]
            type = "echo"
            listen = ["tcp:0"]
            enabled = false
            """,
            "services: every service is disabled (enabled = false): nothing to run",
        )
        self.assertProblems(
            """
            [services]
            """,
            "services: no services configured (add a [services.NAME] table)",
        )

    def test_disabledStillChecked(self) -> None:
        """
        A disabled service is still validated.
        """
        self.assertProblems(
            """
            [services.off]
            type = "echo"
            listen = ["tcp:99999"]
            enabled = false
            """,
            "services.off.listen[0]: 'tcp:99999': port 99999 is out of range "
            "(0 to 65535)",
        )

    def test_enabledNotABoolean(self) -> None:
        """
        C{enabled} must be a boolean.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            enabled = "no"
            """,
            "services.a.enabled: expected true or false, got a string",
        )

    def test_validNames(self) -> None:
        """
        Service names of letters, digits, C{_}, C{-} and C{.} up to 64
        characters are accepted.
        """
        for name in ("echo", "echo-udp", "e.2", "A_b", "7", "x" * 64):
            self.assertEqual(
                service(f"""
                    [services."{name}"]
                    type = "echo"
                    listen = ["tcp:0"]
                    """).name,
                name,
            )

    def test_invalidNames(self) -> None:
        """
        Other service names are refused at the service's path.
        """
        for name in ("a b", "-a", ".a", "x" * 65, "caf\u00e9", "a/b", ""):
            self.assertProblems(
                f"""
                [services."{name}"]
                type = "echo"
                listen = ["tcp:0"]
                """,
                f"services.{name}: service names are 1-64 letters, digits, "
                "'_', '-' or '.'",
            )


class ConflictTests(ConfigTestCase):
    """
    An address listed twice is reported, in one service or across services.
    """

    def test_sameServiceTwice(self) -> None:
        """
        The same address twice in one service is reported at the second.
        """
        self.assertProblems(
            """
            [services.echo]
            type = "echo"
            listen = ["tcp:7007", "tcp:7007"]
            """,
            "services.echo.listen[1]: 'tcp:7007' is the same address as "
            "services.echo.listen[0] ('tcp:7007')",
        )

    def test_spelledDifferently(self) -> None:
        """
        The same address spelt two ways is still the same address.
        """
        self.assertProblems(
            """
            [services.echo]
            type = "echo"
            listen = ["tcp6:7007:interface=\\\\:\\\\:1", "tcp:7007:interface=\\\\:\\\\:0001:backlog=5"]
            """,
            "services.echo.listen[1]: 'tcp:7007:interface=\\\\:\\\\:0001:backlog=5' "
            "is the same address as services.echo.listen[0] "
            "('tcp6:7007:interface=\\\\:\\\\:1')",
        )

    def test_acrossServices(self) -> None:
        """
        Two services on the same address conflict.
        """
        self.assertProblems(
            """
            [services.echo]
            type = "echo"
            listen = ["udp:7007:interface=127.0.0.1"]
            [services.discard]
            type = "discard"
            listen = ["udp:7007:interface=127.0.0.1"]
            """,
            "services.discard.listen[0]: 'udp:7007:interface=127.0.0.1' is the "
            "same address as services.echo.listen[0] "
            "('udp:7007:interface=127.0.0.1')",
        )

    def test_wildcardThenSpecific(self) -> None:
        """
        C{0.0.0.0} and C{127.0.0.1} on the same port conflict.
        """
        self.assertProblems(
            """
            [services.echo]
            type = "echo"
            listen = ["tcp:7007"]
            [services.discard]
            type = "discard"
            listen = ["tcp:7007:interface=127.0.0.1"]
            """,
            "services.discard.listen[0]: 'tcp:7007:interface=127.0.0.1' is the "
            "same address as services.echo.listen[0] ('tcp:7007')",
        )

    def test_specificThenWildcard(self) -> None:
        """
        C{127.0.0.1} then C{0.0.0.0} on the same port conflict too.
        """
        self.assertProblems(
            """
            [services.echo]
            type = "echo"
            listen = ["udp:7007:interface=127.0.0.1", "udp:7007:interface=0.0.0.0"]
            """,
            "services.echo.listen[1]: 'udp:7007:interface=0.0.0.0' is the "
            "same address as services.echo.listen[0] "
            "('udp:7007:interface=127.0.0.1')",
        )

    def test_ipv6Wildcard(self) -> None:
        """
        C{::} and C{::1} on the same port conflict.
        """
        self.assertEqual(
            len(self.problemLines("""
                    [services.echo]
                    type = "echo"
                    listen = ["tcp6:7007", "tcp6:7007:interface=\\\\:\\\\:1"]
                    """)),
            1,
        )

    def test_sslAndTCP(self) -> None:
        """
        TLS and plain TCP on the same port conflict.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        keyPath, certPath = writeSelfSignedCertificate(directory)
        ssl = f"ssl:7007:privateKey={escape(keyPath)}:certKey={escape(certPath)}"
        ssl = ssl.replace("\\", "\\\\")
        lines = self.problemLines(f"""
            [services.echo]
            type = "echo"
            listen = ["{ssl}", "tcp:7007"]
            """)
        self.assertEqual(len(lines), 1)
        self.assertTrue(
            lines[0].startswith(
                "netd.toml: services.echo.listen[1]: 'tcp:7007' is the same address "
                "as services.echo.listen[0] ('ssl:7007:"
            ),
            lines[0],
        )

    def test_unixTwice(self) -> None:
        """
        The same UNIX socket twice conflicts.
        """
        self.assertProblems(
            """
            [services.echo]
            type = "echo"
            listen = ["unix:/run/netd/echo.sock"]
            [services.discard]
            type = "discard"
            listen = ["unix:/run/netd/echo.sock"]
            """,
            "services.discard.listen[0]: 'unix:/run/netd/echo.sock' is the same "
            "address as services.echo.listen[0] ('unix:/run/netd/echo.sock')",
        )

    def test_portZero(self) -> None:
        """
        Port 0 never conflicts, even on the same interface.
        """
        config = parse("""
            [services.echo]
            type = "echo"
            listen = ["tcp:0", "tcp:0", "udp:0", "udp:0:interface=127.0.0.1"]
            [services.discard]
            type = "discard"
            listen = ["tcp:0:interface=127.0.0.1", "udp:0"]
            """)
        self.assertEqual([len(s.listeners) for s in config.services], [4, 2])

    def test_tcpAndUDP(self) -> None:
        """
        TCP and UDP on the same port and address do not conflict.
        """
        echo = service("""
            [services.echo]
            type = "echo"
            listen = ["tcp:7007", "udp:7007"]
            """)
        self.assertEqual([l.transport for l in echo.listeners], ["stream", "datagram"])

    def test_differentAddresses(self) -> None:
        """
        Two specific addresses on the same port, or IPv4 and IPv6 specific
        addresses, do not conflict.
        """
        echo = service("""
            [services.echo]
            type = "echo"
            listen = [
                "tcp:7007:interface=127.0.0.1",
                "tcp:7007:interface=127.0.0.2",
                "tcp6:7007:interface=\\\\:\\\\:1",
            ]
            """)
        self.assertEqual(len(echo.listeners), 3)

    def test_disabledDoesNotConflict(self) -> None:
        """
        A disabled service's addresses do not conflict with an enabled one's.
        """
        config = parse("""
            [services.old]
            type = "echo"
            listen = ["tcp:7007"]
            enabled = false
            [services.new]
            type = "echo"
            listen = ["tcp:7007"]
            """)
        self.assertEqual([s.name for s in config.services], ["new"])

    def test_eachConflictOnce(self) -> None:
        """
        An address listed three times gives two problems, each naming the
        first listing.
        """
        self.assertProblems(
            """
            [services.echo]
            type = "echo"
            listen = ["tcp:7007", "tcp:7007", "tcp:7007"]
            """,
            "services.echo.listen[1]: 'tcp:7007' is the same address as "
            "services.echo.listen[0] ('tcp:7007')",
            "services.echo.listen[2]: 'tcp:7007' is the same address as "
            "services.echo.listen[0] ('tcp:7007')",
        )


class ValueTypeTests(ConfigTestCase):
    """
    Values of the wrong type or out of range are reported with their path.
    """

    def test_stringForInteger(self) -> None:
        """
        A string where an integer is expected is refused.
        """
        self.assertProblems(
            """
            [netd.limits]
            max_sessions = "10"
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.limits.max_sessions: expected an integer, got a string",
        )

    def test_booleanForInteger(self) -> None:
        """
        A boolean is not an integer, even though Python's C{bool} is an
        C{int}.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            udp_reply_burst = true
            """,
            "services.a.udp_reply_burst: expected an integer, got a boolean",
        )

    def test_floatForInteger(self) -> None:
        """
        A float is not an integer.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            [services.a.limits]
            max_bytes = 1.5
            """,
            "services.a.limits.max_bytes: expected an integer, got a number",
        )

    def test_booleanForNumber(self) -> None:
        """
        A boolean is not a number.
        """
        self.assertProblems(
            """
            [netd]
            stats_interval = false
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.stats_interval: expected a number, got a boolean",
        )

    def test_integerRange(self) -> None:
        """
        An integer out of range names the range.
        """
        self.assertProblems(
            """
            [netd.limits]
            max_sessions = 0
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.limits.max_sessions: 0 is out of range (1 to 1000000)",
        )

    def test_numberRange(self) -> None:
        """
        A number out of range names the range.
        """
        self.assertProblems(
            """
            [netd]
            stats_interval = 0.5
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.stats_interval: 0.5 is out of range (1 to 86400)",
        )

    def test_globalSettings(self) -> None:
        """
        C{stats_interval} is read as a float.
        """
        config = parse("""
            [netd]
            stats_interval = 5
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """)
        self.assertEqual(config.statsInterval, 5.0)
        self.assertIsInstance(config.statsInterval, float)

    def test_reusePortNotABoolean(self) -> None:
        """
        C{reuse_port} must be a boolean.
        """
        self.assertProblems(
            """
            [netd]
            reuse_port = 1
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.reuse_port: expected true or false, got an integer",
        )

    def test_userEmpty(self) -> None:
        """
        C{user} must be a non-empty string.
        """
        self.assertProblems(
            """
            [netd]
            user = ""
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.user: expected a non-empty string, got a string",
        )


class LimitsTests(ConfigTestCase):
    """
    Tests for C{[netd.limits]} and C{[services.NAME.limits]}.
    """

    def test_inheritance(self) -> None:
        """
        C{[netd.limits]} sets every service's defaults; a service's own
        limits override them key by key.
        """
        config = parse("""
            [netd.limits]
            max_sessions = 10
            idle_timeout = 30
            max_bytes = 1000
            [services.plain]
            type = "echo"
            listen = ["tcp:0"]
            [services.strict]
            type = "discard"
            listen = ["tcp:0"]
            [services.strict.limits]
            idle_timeout = 5
            max_duration = 60.5
            max_sessions_per_peer = 2
            """)
        plain, strict = config.services
        self.assertEqual(
            plain.limits,
            Limits(maxSessions=10, idleTimeout=30.0, maxBytes=1000),
        )
        self.assertEqual(
            strict.limits,
            Limits(
                maxSessions=10,
                maxSessionsPerPeer=2,
                idleTimeout=5.0,
                maxDuration=60.5,
                maxBytes=1000,
            ),
        )

    def test_settingDefaults(self) -> None:
        """
        The documented default of every limit setting is the value a service
        gets when the key is absent.
        """
        self.assertEqual(
            {s.key: s.default for s in LIMIT_SETTINGS},
            {
                "max_sessions": 1000,
                "max_sessions_per_peer": 64,
                "idle_timeout": 300.0,
                "max_duration": 0.0,
                "max_bytes": 0,
                "allow": (),
                "deny": (),
            },
        )
        globalDefaults = {s.key: s.default for s in GLOBAL_SETTINGS}
        self.assertEqual(
            {
                key: globalDefaults[key]
                for key in ("user", "group", "reuse_port", "stats_interval")
            },
            {
                "user": None,
                "group": None,
                "reuse_port": False,
                "stats_interval": 60.0,
            },
        )

    def test_allowDeny(self) -> None:
        """
        C{allow} and C{deny} take IPv4 and IPv6 prefixes and bare addresses;
        host bits are ignored.
        """
        limits = service("""
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            [services.a.limits]
            allow = ["10.1.2.3/8", "2001:db8::/32", "::1", "192.0.2.7"]
            deny = ["10.9.0.0/16"]
            """).limits
        self.assertEqual(
            limits.allow,
            (
                ipaddress.ip_network("10.0.0.0/8"),
                ipaddress.ip_network("2001:db8::/32"),
                ipaddress.ip_network("::1/128"),
                ipaddress.ip_network("192.0.2.7/32"),
            ),
        )
        self.assertEqual(limits.deny, (ipaddress.ip_network("10.9.0.0/16"),))

    def test_allowInherited(self) -> None:
        """
        A global C{deny} applies to a service that does not set its own.
        """
        limits = service("""
            [netd.limits]
            deny = ["fe80::/10"]
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """).limits
        self.assertEqual(limits.deny, (ipaddress.ip_network("fe80::/10"),))

    def test_badPrefix(self) -> None:
        """
        A prefix length beyond the address size is refused, naming the
        entry.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            [services.a.limits]
            allow = ["127.0.0.0/8", "10.0.0.0/33"]
            deny = ["2001:db8::/129"]
            """,
            "services.a.limits.allow: entry 1: '10.0.0.0/33' is not an IPv4 or "
            "IPv6 address or prefix",
            "services.a.limits.deny: entry 0: '2001:db8::/129' is not an IPv4 or "
            "IPv6 address or prefix",
        )

    def test_hostnameNotAPrefix(self) -> None:
        """
        A host name is not a prefix.
        """
        self.assertProblems(
            """
            [netd.limits]
            allow = ["localhost"]
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.limits.allow: entry 0: 'localhost' is not an IPv4 or IPv6 "
            "address or prefix",
        )

    def test_prefixesNotAnArray(self) -> None:
        """
        C{allow} must be an array of strings.
        """
        self.assertProblems(
            """
            [netd.limits]
            allow = "10.0.0.0/8"
            deny = [10]
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.limits.allow: expected an array of CIDR prefixes, got a string",
            "netd.limits.deny: entry 0: expected a string, got an integer",
        )


class ListenerTableTests(ConfigTestCase):
    """
    Tests for C{listen} entries written as tables, and for C{reuse_port}.
    """

    def test_table(self) -> None:
        """
        C{{ address = "...", reuse_port = true }} sets C{SO_REUSEPORT} for
        that listener only.
        """
        echo = service("""
            [services.a]
            type = "echo"
            listen = [{ address = "tcp:0", reuse_port = true }, "udp:0"]
            """)
        self.assertEqual(
            [(l.description, l.reusePort) for l in echo.listeners],
            [("tcp:0", True), ("udp:0", False)],
        )

    def test_tableWithoutReusePort(self) -> None:
        """
        A table may hold just an address.
        """
        echo = service("""
            [services.a]
            type = "echo"
            listen = [{ address = "udp:0" }]
            """)
        self.assertEqual(echo.listeners, (DatagramListener("udp:0", 0, "0.0.0.0"),))

    def test_unknownKey(self) -> None:
        """
        An unknown key in a listener table suggests the closest known one.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = [{ adress = "tcp:0" }]
            """,
            "services.a.listen[0].adress: unknown key (did you mean 'address'?)",
            'services.a.listen[0].address: missing (e.g. address = "tcp:7")',
        )

    def test_badAddressInTable(self) -> None:
        """
        A bad address in a table is reported at C{.address}.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = ["tcp:0", { address = "tcp:x", reuse_port = true }]
            """,
            "services.a.listen[1].address: 'tcp:x': port 'x' is not a number",
        )

    def test_addressNotAString(self) -> None:
        """
        A table's address must be a string.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = [{ address = 7 }]
            """,
            "services.a.listen[0].address: expected a listener description "
            "string, got an integer",
        )

    def test_reusePortNotABoolean(self) -> None:
        """
        A table's C{reuse_port} must be a boolean.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = [{ address = "tcp:0", reuse_port = "yes" }]
            """,
            "services.a.listen[0].reuse_port: expected true or false, got a string",
        )

    def test_globalReusePort(self) -> None:
        """
        C{reuse_port = true} in C{[netd]} applies to every listener; a
        listener table can turn it off.
        """
        config = parse("""
            [netd]
            reuse_port = true
            [services.a]
            type = "echo"
            listen = ["tcp:0", "udp6:0", { address = "tcp6:0", reuse_port = false }]
            [services.b]
            type = "discard"
            listen = ["udp:0"]
            """)
        self.assertEqual(
            [
                (l.description, l.reusePort)
                for s in config.services
                for l in s.listeners
            ],
            [("tcp:0", True), ("udp6:0", True), ("tcp6:0", False), ("udp:0", True)],
        )

    def test_globalReusePortSkipsUnix(self) -> None:
        """
        The global C{reuse_port} applies to listeners that have ports: a UNIX
        listener beside them is not an error.
        """
        path = self.mktemp()
        echo = service(f"""
            [netd]
            reuse_port = true
            [services.a]
            type = "echo"
            listen = ["unix:{path}", "tcp:0"]
            """)
        self.assertEqual(
            [(l.kind, l.reusePort) for l in echo.listeners],
            [("unix", False), ("tcp", True)],
        )

    def test_explicitReusePortOnUnix(self) -> None:
        """
        Asking for C{reuse_port} on a UNIX listener itself is an error.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = [{ address = "unix:/tmp/netd.sock", reuse_port = true }]
            """,
            "services.a.listen[0].address: 'unix:/tmp/netd.sock': reuse_port "
            "does not apply to unix: listeners",
        )


class AccountTests(ConfigTestCase):
    """
    Tests for C{user} and C{group}.
    """

    def test_existing(self) -> None:
        """
        An existing user and group, by name or number, are kept as written.
        """
        root = pwd.getpwuid(0).pw_name
        config = parse(f"""
            [netd]
            user = "{root}"
            group = "0"
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """)
        self.assertEqual((config.user, config.group), (root, "0"))

    def test_missing(self) -> None:
        """
        A user and a group that do not exist are both reported.
        """
        self.assertProblems(
            """
            [netd]
            user = "no-such-netd-user"
            group = "no-such-netd-group"
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.user: no such user 'no-such-netd-user'",
            "netd.group: no such group 'no-such-netd-group'",
        )

    def test_unusableNames(self) -> None:
        """
        A name with a NUL byte and a number too large for a uid are reported
        as missing, not raised.
        """
        self.assertProblems(
            """
            [netd]
            user = "a\\u0000b"
            group = "99999999999999999999"
            [services.a]
            type = "echo"
            listen = ["tcp:0"]
            """,
            "netd.user: no such user 'a\\x00b'",
            "netd.group: no such group '99999999999999999999'",
        )

    def test_lookups(self) -> None:
        """
        L{lookupUser} and L{lookupGroup} take names and numbers.
        """
        self.assertEqual(lookupUser("0").pw_uid, 0)
        self.assertEqual(lookupUser(pwd.getpwuid(0).pw_name).pw_uid, 0)
        self.assertEqual(lookupGroup("0").gr_gid, 0)
        self.assertRaises(KeyError, lookupUser, "no-such-netd-user")


class EchoSettingsTests(ConfigTestCase):
    """
    Tests for the echo type's own settings.
    """

    def test_defaults(self) -> None:
        """
        An echo service without settings gets the type's defaults.
        """
        echo = service("""
            [services.a]
            type = "echo"
            listen = ["udp:0"]
            """)
        self.assertEqual(dict(echo.settings), ECHO_DEFAULTS)

    def test_values(self) -> None:
        """
        Echo settings are read and converted.
        """
        echo = service("""
            [services.a]
            type = "echo"
            listen = ["udp:0"]
            udp_min_source_port = 0
            udp_refuse_own_ports = false
            udp_reply_rate = 2
            udp_reply_burst = 3
            """)
        self.assertEqual(
            dict(echo.settings),
            {
                "udp_min_source_port": 0,
                "udp_refuse_own_ports": False,
                "udp_reply_rate": 2.0,
                "udp_reply_burst": 3,
            },
        )

    def test_settingsReadOnly(self) -> None:
        """
        A service's settings cannot be changed after loading.
        """
        echo = service("""
            [services.a]
            type = "echo"
            listen = ["udp:0"]
            """)
        with self.assertRaises(TypeError):
            echo.settings["udp_reply_rate"] = 1.0  # type: ignore[index]

    def test_ranges(self) -> None:
        """
        Out-of-range echo settings are all reported with their ranges.
        """
        self.assertProblems(
            """
            [services.a]
            type = "echo"
            listen = ["udp:0"]
            udp_min_source_port = 65536
            udp_refuse_own_ports = "yes"
            udp_reply_rate = 0
            udp_reply_burst = 0
            """,
            "services.a.udp_min_source_port: 65536 is out of range (0 to 65535)",
            "services.a.udp_refuse_own_ports: expected true or false, got a string",
            "services.a.udp_reply_rate: 0 is out of range (0.001 to 1e+09)",
            "services.a.udp_reply_burst: 0 is out of range (1 to 1000000000)",
        )


class SettingsTests(SynchronousTestCase):
    """
    Tests for the helpers of L{netd.settings}.
    """

    def test_joinPath(self) -> None:
        """
        L{joinPath} joins keys with dots and indexes with brackets.
        """
        self.assertEqual(joinPath("", "services"), "services")
        self.assertEqual(joinPath("services", "echo"), "services.echo")
        self.assertEqual(joinPath("services.echo.listen", 1), "services.echo.listen[1]")

    def test_unknownKey(self) -> None:
        """
        L{unknownKey} suggests the closest key, or lists them sorted.
        """
        self.assertEqual(
            unknownKey("services.a", "lisen", ("type", "listen")),
            Problem("services.a.lisen", "unknown key (did you mean 'listen'?)"),
        )
        self.assertEqual(
            unknownKey("", "qqq", ("zeta", "alpha")),
            Problem("qqq", "unknown key (known keys: alpha, zeta)"),
        )

    def test_describe(self) -> None:
        """
        L{describe} names TOML types as a user writes them.
        """
        self.assertEqual(
            [describe(v) for v in (True, 1, 1.5, "s", [], {})],
            [
                "a boolean",
                "an integer",
                "a number",
                "a string",
                "an array",
                "a table",
            ],
        )

    def test_wholeFileProblem(self) -> None:
        """
        A problem without a path is one C{FILE: message} line.
        """
        e = ConfigError("f.toml", [Problem("", "broken"), Problem("a.b", "bad")])
        self.assertEqual(e.lines(), ["f.toml: broken", "f.toml: a.b: bad"])
