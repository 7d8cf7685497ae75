# -*- test-case-name: tests.test_include -*-
"""
Tests for C{include} in C{[netd]}: drop-in configuration files
(L{netd.config.loadConfig}), in process and through a real C{twistd netd}.
"""

from __future__ import annotations

import os
import signal
import tomllib
from textwrap import dedent

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.config import ConfigError, NetdConfig, loadConfig, parseConfig
from netd.services import serviceTypes
from tests.test_endtoend import Daemon, freePorts
from tests.test_listeners import LOOPBACK, tcpExchange


def service(name: str, type: str = "echo", port: int = 0, extra: str = "") -> str:
    """
    @param name: A service name.
    @param type: Its type.
    @param port: Its TCP port.
    @param extra: Further lines of its table.
    @return: A C{[services.NAME]} table.
    """
    return (
        f'[services.{name}]\ntype = "{type}"\n'
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\n{extra}'
    )


def writeFile(directory: str, name: str, text: str) -> str:
    """
    @param directory: A directory.
    @param name: A path under it.
    @param text: The file's text.
    @return: The file's absolute path.
    """
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class IncludeTestCase(SynchronousTestCase):
    """
    A directory holding a main file and drop-ins.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.directory, "conf.d"))

    def write(self, name: str, text: str) -> str:
        """
        @param name: A path under the test's directory.
        @param text: TOML, indented as in the test.
        @return: The file's absolute path.
        """
        return writeFile(self.directory, name, dedent(text))

    def load(self, main: str = "netd.toml") -> NetdConfig:
        """
        @param main: The main file's name.
        @return: Its configuration.
        """
        return loadConfig(serviceTypes(), os.path.join(self.directory, main))

    def problems(self, main: str = "netd.toml") -> list[str]:
        """
        @param main: The main file's name.
        @return: The lines of the L{ConfigError} loading it raises.
        """
        with self.assertRaises(ConfigError) as caught:
            self.load(main)
        return caught.exception.lines()

    def path(self, name: str) -> str:
        """
        @param name: A path under the test's directory.
        @return: Its absolute path.
        """
        return os.path.join(self.directory, name)


class IncludeTests(IncludeTestCase):
    """
    Services from included files.
    """

    def test_servicesAddedInNameOrder(self) -> None:
        """
        Every file a pattern matches adds its services, files in name order,
        patterns in the order given, relative to the main file's directory
        (not the working directory); the included files are listed.
        """
        self.write(
            "netd.toml",
            '[netd]\ninclude = ["conf.d/*.toml", "extra.toml"]\n' + service("main"),
        )
        self.write("conf.d/20-b.toml", service("b", "discard"))
        self.write("conf.d/10-a.toml", service("a1") + service("a2", "daytime"))
        self.write("conf.d/README", "not TOML, not matched")
        self.write("extra.toml", service("x", "time"))
        config = self.load()
        self.assertEqual(
            [(s.name, s.type) for s in config.services],
            [
                ("main", "echo"),
                ("a1", "echo"),
                ("a2", "daytime"),
                ("b", "discard"),
                ("x", "time"),
            ],
        )
        self.assertEqual(
            config.included,
            (
                self.path("conf.d/10-a.toml"),
                self.path("conf.d/20-b.toml"),
                self.path("extra.toml"),
            ),
        )

    def test_textIsTheWholeSet(self) -> None:
        """
        L{NetdConfig.text} (what workers are given) holds every service and
        no C{include}, so parsing it again, as a worker does, gives the same
        services without reading the drop-ins.
        """
        self.write(
            "netd.toml",
            '[netd]\ninclude = ["conf.d/*.toml"]\nstats_interval = 5\n'
            + service("main", extra="[services.main.limits]\nmax_sessions = 3\n"),
        )
        self.write("conf.d/a.toml", service("a", "discard"))
        config = self.load()
        document = tomllib.loads(config.text)
        self.assertNotIn("include", document["netd"])
        os.remove(self.path("conf.d/a.toml"))
        again = parseConfig(serviceTypes(), config.text, config.source)
        self.assertEqual(again.services, config.services)
        self.assertEqual(again.statsInterval, 5.0)

    def test_onlyIncludedServices(self) -> None:
        """
        A main file may leave every service to its drop-ins.
        """
        self.write("netd.toml", '[netd]\ninclude = ["conf.d/*.toml"]\n')
        self.write("conf.d/echo.toml", service("echo"))
        self.assertEqual([s.name for s in self.load().services], ["echo"])

    def test_globMatchingNothing(self) -> None:
        """
        An empty drop-in directory is fine (the main file's services run); a
        file named without a wildcard must exist.
        """
        self.write("netd.toml", '[netd]\ninclude = ["conf.d/*.toml"]\n' + service("e"))
        self.assertEqual(self.load().included, ())
        self.write("netd.toml", '[netd]\ninclude = ["missing.toml"]\n' + service("e"))
        self.assertEqual(
            self.problems(),
            [
                f"{self.path('missing.toml')}: cannot read the file: "
                "No such file or directory (named by netd.include[0])"
            ],
        )

    def test_directoryNamed(self) -> None:
        """
        Naming a directory instead of a pattern says what to write instead.
        """
        main = self.write("netd.toml", '[netd]\ninclude = ["conf.d"]\n' + service("e"))
        self.assertEqual(
            self.problems(),
            [
                f"{main}: netd.include[0]: 'conf.d' is a directory (include its "
                "files with a pattern such as 'conf.d/*.toml')"
            ],
        )

    def test_mainFileNotReadTwice(self) -> None:
        """
        A pattern that matches the main file itself (or a file twice) reads
        it once: its services are not "defined twice".
        """
        self.write(
            "netd.toml", '[netd]\ninclude = ["*.toml", "*.toml"]\n' + service("e")
        )
        self.write("more.toml", service("m"))
        config = self.load()
        self.assertEqual([s.name for s in config.services], ["e", "m"])
        self.assertEqual(config.included, (self.path("more.toml"),))

    def test_absolutePattern(self) -> None:
        """
        An absolute pattern is used as it is.
        """
        other = os.path.abspath(self.mktemp())
        os.makedirs(other)
        with open(os.path.join(other, "x.toml"), "w") as f:
            f.write(service("x"))
        self.write(
            "netd.toml",
            f'[netd]\ninclude = ["{other}/*.toml"]\n' + service("e"),
        )
        self.assertEqual([s.name for s in self.load().services], ["e", "x"])

    def test_includeNotAList(self) -> None:
        """
        C{include} must be an array of non-empty strings.
        """
        main = self.write("netd.toml", '[netd]\ninclude = "conf.d"\n' + service("e"))
        self.assertEqual(
            self.problems(),
            [
                f"{main}: netd.include: expected an array of file patterns "
                '(e.g. ["conf.d/*.toml"]), got a string'
            ],
        )
        self.write("netd.toml", '[netd]\ninclude = ["a", ""]\n' + service("e"))
        self.assertEqual(
            self.problems(),
            [
                f"{main}: netd.include: entry 1: expected a non-empty string, got a string"
            ],
        )


class IncludeProblemTests(IncludeTestCase):
    """
    Problems in included files name the file and the line.
    """

    def test_definedTwice(self) -> None:
        """
        A service defined in two files is an error naming both files and
        lines, whichever files they are.
        """
        main = self.write(
            "netd.toml",
            '[netd]\ninclude = ["conf.d/*.toml"]\n\n' + service("echo"),
        )
        self.write("conf.d/10-a.toml", "# a\n" + service("dup"))
        self.write(
            "conf.d/20-b.toml",
            service("dup", "discard") + "\n" + service("echo", port=1),
        )
        self.assertEqual(
            self.problems(),
            [
                f"{self.path('conf.d/20-b.toml')}:1: services.dup: defined twice: "
                f"also in {self.path('conf.d/10-a.toml')}:2 (a service is defined "
                "in one file only; rename one of them)",
                f"{self.path('conf.d/20-b.toml')}:5: services.echo: defined twice: "
                f"also in {main}:4 (a service is defined in one file only; "
                "rename one of them)",
            ],
        )

    def test_problemsInIncludedFile(self) -> None:
        """
        A bad key in an included file's service is reported with that file
        and the key's line (in the service's table or in a sub-table); the
        main file's own problems keep their usual form.
        """
        main = self.write(
            "netd.toml",
            '[netd]\ninclude = ["conf.d/*.toml"]\n'
            + service("main", extra="lisen = []\n"),
        )
        self.write(
            "conf.d/a.toml",
            """\
            # drop-in
            [services.a]
            type = "echo"

            listen = ["tcp:99999"]

            [services.a.limits]
            max_sessions = 1
            idle_timout = 5
            """,
        )
        self.assertEqual(
            self.problems(),
            [
                f"{main}: services.main.lisen: unknown key (did you mean 'listen'?)",
                f"{self.path('conf.d/a.toml')}:9: services.a.limits.idle_timout: "
                "unknown key (did you mean 'idle_timeout'?)",
                f"{self.path('conf.d/a.toml')}:5: services.a.listen[0]: "
                "'tcp:99999': port 99999 is out of range (0 to 65535)",
            ],
        )

    def test_otherFileNamed(self) -> None:
        """
        A problem that names a service of another included file (the one
        whose address a listener repeats) says which file and line that
        service's key is on; one in the same file, or in the main file, is
        named as before.
        """
        self.write(
            "netd.toml",
            '[netd]\ninclude = ["conf.d/*.toml"]\n' + service("main", port=7008),
        )
        self.write("conf.d/a.toml", "\n" + service("a", port=7007))
        self.write("conf.d/b.toml", service("b", port=7007) + service("c", port=7008))
        a, b = self.path("conf.d/a.toml"), self.path("conf.d/b.toml")
        self.assertEqual(
            self.problems(),
            [
                f"{b}:3: services.b.listen[0]: 'tcp:7007:interface=127.0.0.1' is "
                f"the same address as services.a.listen[0] in {a}:4 "
                "('tcp:7007:interface=127.0.0.1')",
                f"{b}:6: services.c.listen[0]: 'tcp:7008:interface=127.0.0.1' is "
                "the same address as services.main.listen[0] "
                "('tcp:7008:interface=127.0.0.1')",
            ],
        )

    def test_invalidToml(self) -> None:
        """
        A drop-in that is not TOML is named, with the parser's line.
        """
        self.write("netd.toml", '[netd]\ninclude = ["conf.d/*.toml"]\n' + service("e"))
        self.write("conf.d/bad.toml", "[services.x]\ntype = \n")
        [line] = self.problems()
        self.assertTrue(
            line.startswith(f"{self.path('conf.d/bad.toml')}: invalid TOML: "), line
        )
        self.assertIn("line 2", line)

    def test_onlyServices(self) -> None:
        """
        A drop-in holds services only: C{[netd]} and other keys are refused,
        naming the file.
        """
        self.write("netd.toml", '[netd]\ninclude = ["conf.d/*.toml"]\n' + service("e"))
        drop = self.path("conf.d/x.toml")
        self.write("conf.d/x.toml", 'top = 1\n\n[netd]\nuser = "root"\n')
        self.assertEqual(
            self.problems(),
            [
                f"{drop}: top: unknown key (an included file only adds "
                "[services.NAME] tables)",
                f"{drop}:3: netd: [netd] settings belong in the main file; an "
                "included file only adds [services.NAME] tables",
            ],
        )


class IncludeEndToEndTests(TestCase):
    """
    Drop-ins through the real C{twistd netd}: C{--check} and SIGHUP.
    """

    timeout = 90

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.directory, "conf.d"))

    def write(self, name: str, text: str) -> str:
        """
        @param name: A path under the test's directory.
        @param text: Its text.
        @return: Its absolute path.
        """
        return writeFile(self.directory, name, text)

    def twistd(self, *args: str) -> Daemon:
        """
        @param args: The arguments after C{netd}.
        @return: The started C{twistd -n --pidfile= netd ARGS}, killed after
            the test if it still runs.
        """
        daemon = Daemon(["-n", "--pidfile=", "netd", *args], self.directory)
        self.addCleanup(daemon.kill)
        daemon.start()
        return daemon

    async def test_checkSeesTheWholeSet(self) -> None:
        """
        C{--check} lists the drop-ins' services and the files read, and
        reports a broken drop-in by file and line with status 78.
        """
        echoPort, discardPort = freePorts(2)
        main = self.write(
            "netd.toml",
            '[netd]\ninclude = ["conf.d/*.toml"]\n' + service("e", port=echoPort),
        )
        self.write("conf.d/d.toml", service("d", "discard", discardPort))
        daemon = self.twistd("--check", "--config", main)
        self.assertEqual(await daemon.wait(), 0, daemon.stderr)
        self.assertIn("configuration is valid (2 services, 2 listeners)", daemon.stdout)
        self.assertIn(
            f"  d (discard): tcp:{discardPort}:interface=127.0.0.1", daemon.stdout
        )
        self.assertIn(
            f"  included: {os.path.join(os.path.dirname(main), 'conf.d', 'd.toml')}\n",
            daemon.stdout,
        )
        bad = self.write("conf.d/x.toml", "\n" + service("e", port=1))
        daemon = self.twistd("--check", "--config", main)
        self.assertEqual(await daemon.wait(), 78, daemon.stdout)
        self.assertIn(
            f"netd: {bad}:2: services.e: defined twice: also in {main}:3", daemon.stderr
        )

    async def test_reloadReadsDropIns(self) -> None:
        """
        SIGHUP re-reads the drop-in directory: a new file's service starts
        while the others run on; a broken drop-in fails the reload with one
        error naming it and its line, and the running services stay.
        """
        echoPort, discardPort = freePorts(2)
        main = self.write("netd.toml", '[netd]\ninclude = ["conf.d/*.toml"]\n')
        self.write("conf.d/10-echo.toml", service("echo", port=echoPort))
        daemon = self.twistd("--config", main)
        await daemon.waitForOutput(rf"echo listening on tcp:127\.0\.0\.1:{echoPort}")
        self.write("conf.d/20-discard.toml", service("discard", "discard", discardPort))
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.waitForOutput(r"reloaded .*: added: discard; unchanged: echo")
        swallowed = await deferToThread(tcpExchange, LOOPBACK, discardPort, b"new")
        self.assertEqual((swallowed.sent, swallowed.received), (3, b""))

        broken = self.write(
            "conf.d/30-broken.toml", service("broken", extra="max_sesions = 5\n")
        )
        daemon.process.send_signal(signal.SIGHUP)
        [failed] = await daemon.waitForOutput(r"reload failed")
        self.assertIn(f"{broken}:4: services.broken.max_sesions: unknown key", failed)
        echoed = await deferToThread(tcpExchange, LOOPBACK, echoPort, b"still")
        self.assertEqual(echoed.received, b"still")
        code = await daemon.stop()
        self.assertIn(code, (0, -signal.SIGTERM), daemon.stdout + daemon.stderr)
        self.assertNotIn("Traceback", daemon.stdout + daemon.stderr)
