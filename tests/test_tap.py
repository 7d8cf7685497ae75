# -*- test-case-name: tests.test_tap -*-
"""
Tests for L{netd.tap}: the C{twistd netd} command line and service tree.
"""

from __future__ import annotations

import io
import os
import pwd
import socket
import sys
from textwrap import dedent
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from netd import __version__, tap
from netd.config import loadConfig
from netd.services import serviceTypes
from netd.daemon import NetdService
from netd.startup import StartupReport, unguardRunner
from netd.tap import EX_CONFIG, Options, _runAs, makeService
from tests.support import keepTrialReactor


def freePort() -> int:
    """
    Find a TCP port on 127.0.0.1 that nothing listens on right now.

    @return: The port.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FakeTwistdOptions(dict):  # type: ignore[type-arg]
    """
    The part of twistd's C{ServerOptions} that L{netd.tap} uses: a mapping
    with C{uid}, C{gid} and C{nodaemon}.
    """

    def __init__(self, **values: Any) -> None:
        super().__init__(uid=None, gid=None, nodaemon=False)
        self.update(values)


class OptionsTestCase(SynchronousTestCase):
    """
    Helpers to parse L{Options} with captured output.
    """

    def options(self) -> Options:
        """
        Make L{Options} that write to string buffers.

        @return: The options, with C{stdout} and C{stderr} set to
            L{io.StringIO} instances.
        """
        options = Options()
        options.stdout = io.StringIO()
        options.stderr = io.StringIO()
        return options

    def writeConfig(self, text: str) -> str:
        """
        Write a configuration file.

        @param text: TOML, indented as in the test.
        @return: The path.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(dedent(text))
        return path

    def parse(self, *argv: str) -> Options:
        """
        Parse a command line that must succeed.

        @param argv: The arguments after C{netd}.
        @return: The parsed options.
        """
        options = self.options()
        options.parseOptions(list(argv))
        return options

    def exit(self, *argv: str) -> tuple[int | str | None, Options]:
        """
        Parse a command line that must exit.

        @param argv: The arguments after C{netd}.
        @return: The exit code and the options.
        """
        options = self.options()
        e = self.assertRaises(SystemExit, options.parseOptions, list(argv))
        return e.code, options


class OptionsTests(OptionsTestCase):
    """
    Tests for L{Options}.
    """

    def test_embeddedDefault(self) -> None:
        """
        Without C{--config}, the embedded default is loaded into
        C{options["netdConfig"]}.
        """
        options = self.parse()
        self.assertIsNone(options["config"])
        self.assertEqual(
            options["netdConfig"],
            loadConfig(
                serviceTypes(),
            ),
        )
        self.assertEqual(options.stdout.getvalue(), "")
        self.assertEqual(options.stderr.getvalue(), "")

    def test_config(self) -> None:
        """
        C{--config} (and C{-c}) loads the named file.
        """
        path = self.writeConfig("""
            [services.mine]
            type = "discard"
            listen = ["tcp:0"]
            """)
        for flag in ("--config", "-c"):
            config = self.parse(flag, path)["netdConfig"]
            self.assertEqual(config.source, path)
            self.assertEqual([s.name for s in config.services], ["mine"])

    def test_brokenConfig(self) -> None:
        """
        A broken file exits with status 78 after writing one line per
        problem, and a count, to stderr.
        """
        path = self.writeConfig("""
            [services.echo]
            type = "echo"
            lisen = ["tcp:0"]
            """)
        code, options = self.exit("--config", path)
        self.assertEqual(code, EX_CONFIG)
        self.assertEqual(code, 78)
        self.assertEqual(
            options.stderr.getvalue(),
            f"netd: {path}: services.echo.lisen: unknown key "
            "(did you mean 'listen'?)\n"
            f"netd: {path}: services.echo.listen: missing "
            '(e.g. listen = ["tcp:7:interface=127.0.0.1"])\n'
            "netd: 2 problems; nothing was started\n",
        )
        self.assertEqual(options.stdout.getvalue(), "")

    def test_missingConfig(self) -> None:
        """
        A file that does not exist exits with status 78.
        """
        path = self.mktemp()
        code, options = self.exit("--config", path)
        self.assertEqual(code, 78)
        self.assertEqual(
            options.stderr.getvalue(),
            f"netd: {path}: cannot read the file: No such file or directory\n"
            "netd: 1 problem; nothing was started\n",
        )

    def test_check(self) -> None:
        """
        C{--check} exits with status 0 after printing a summary of the
        services and their listeners to stdout.
        """
        code, options = self.exit("--check", "--allow-root")
        self.assertEqual(code, 0)
        self.assertEqual(
            options.stdout.getvalue(),
            "netd: <embedded default>: configuration is valid "
            "(4 services, 7 listeners)\n"
            "  echo (echo): tcp:10007:interface=127.0.0.1, "
            "udp:10007:interface=127.0.0.1\n"
            "  discard (discard): tcp:10009:interface=127.0.0.1, "
            "udp:10009:interface=127.0.0.1\n"
            "  http (http): tcp:8080:interface=127.0.0.1\n"
            "  chat (chat): tcp:10023:interface=127.0.0.1, "
            "udp:10023:interface=127.0.0.1\n",
        )
        self.assertEqual(options.stderr.getvalue(), "")

    def test_checkFile(self) -> None:
        """
        C{--check --config FILE} summarises that file.
        """
        path = self.writeConfig("""
            [services.one]
            type = "echo"
            listen = ["udp:0"]
            """)
        code, options = self.exit("--check", "--allow-root", "--config", path)
        self.assertEqual(code, 0)
        self.assertEqual(
            options.stdout.getvalue(),
            f"netd: {path}: configuration is valid (1 service, 1 listener)\n"
            "  one (echo): udp:0\n",
        )

    def test_checkMetrics(self) -> None:
        """
        C{--check} lists the metrics endpoint's listeners too.
        """
        path = self.writeConfig("""
            [netd.metrics]
            listen = ["tcp:0:interface=127.0.0.1"]
            [services.one]
            type = "echo"
            listen = ["udp:0"]
            """)
        code, options = self.exit("--check", "--allow-root", "--config", path)
        self.assertEqual(code, 0)
        self.assertEqual(
            options.stdout.getvalue(),
            f"netd: {path}: configuration is valid (1 service, 1 listener)\n"
            "  one (echo): udp:0\n"
            "  metrics endpoint: tcp:0:interface=127.0.0.1\n",
        )

    def test_checkBrokenConfig(self) -> None:
        """
        C{--check} with a broken file exits with status 78, reports on
        stderr and prints no summary.
        """
        path = self.writeConfig("[netd]\n")
        code, options = self.exit("--check", "--config", path)
        self.assertEqual(code, 78)
        self.assertEqual(
            options.stderr.getvalue(),
            f"netd: {path}: services: no services configured "
            "(add a [services.NAME] table)\n"
            "netd: 1 problem; nothing was started\n",
        )
        self.assertEqual(options.stdout.getvalue(), "")

    def test_version(self) -> None:
        """
        C{--version} prints netd's version and exits with status 0.
        """
        code, options = self.exit("--version")
        self.assertEqual(code, 0)
        self.assertEqual(options.stdout.getvalue(), f"netd {__version__}\n")

    def test_unknownOption(self) -> None:
        """
        An unknown option is one line and a pointer to C{--help} (not the
        whole help text), and exit status 64 (EX_USAGE).
        """
        code, options = self.exit("--bogus")
        self.assertEqual(code, 64)
        self.assertEqual(
            options.stderr.getvalue(),
            "netd: option --bogus not recognized\n"
            "netd: 'netd --help' lists the options\n",
        )
        options = self.options()
        options.parent = FakeTwistdOptions()
        self.assertRaises(SystemExit, options.parseOptions, ["--confg", "x"])
        self.assertEqual(
            options.stderr.getvalue(),
            "twistd netd: option --confg not recognized\n"
            "twistd netd: 'twistd netd --help' lists the options\n",
        )

    def test_help(self) -> None:
        """
        The help text names the options and every service type.
        """
        text = str(self.options())
        for word in ("--config", "--check", "echo", "discard"):
            self.assertIn(word, text)


class MakeServiceTests(OptionsTestCase):
    """
    Tests for L{makeService}.
    """

    def test_tree(self) -> None:
        """
        L{makeService} returns a L{NetdService} whose one child, the services
        it serves in process, holds one child per service, named by the
        service, each holding one child per listener, named
        C{SERVICE/DESCRIPTION}.
        """
        options = self.parse()
        root = makeService(options)
        self.assertIsInstance(root, NetdService)
        self.assertIs(root.config, options["netdConfig"])
        self.assertEqual([child.name for child in root], ["services"])
        self.assertEqual(
            [child.name for child in root.served], ["echo", "discard", "http", "chat"]
        )
        self.assertEqual(
            [[grandchild.name for grandchild in child] for child in root.served],
            [
                [
                    "echo/tcp:10007:interface=127.0.0.1",
                    "echo/udp:10007:interface=127.0.0.1",
                ],
                [
                    "discard/tcp:10009:interface=127.0.0.1",
                    "discard/udp:10009:interface=127.0.0.1",
                ],
                ["http/tcp:8080:interface=127.0.0.1"],
                [
                    "chat/tcp:10023:interface=127.0.0.1",
                    "chat/udp:10023:interface=127.0.0.1",
                ],
            ],
        )
        self.assertIs(root.served.getServiceNamed("echo").parent, root.served)

    def test_bindsNothing(self) -> None:
        """
        L{makeService} builds the tree without starting or binding anything:
        the configured port is still free afterwards.
        """
        port = freePort()
        path = self.writeConfig(f"""
            [services.echo]
            type = "echo"
            listen = ["tcp:{port}:interface=127.0.0.1", "udp:0:interface=127.0.0.1", "tcp:0"]
            """)
        root = makeService(self.parse("--config", path))
        self.assertFalse(root.running)
        for child in root.served:
            self.assertFalse(child.running)
            for listener in child:
                self.assertFalse(listener.running)
                self.assertIsNone(listener.port)
        self.assertEqual(root.served.ownPorts, set())
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            probe.listen(1)

    def test_background(self) -> None:
        """
        Without a twistd parent, start-up failures are raised for the
        caller; under a daemonizing one, netd writes its line into a
        L{StartupReport} for L{netd.startup} to send to the process that
        started the daemon (whose stderr is still the terminal).
        """
        options = self.parse("--allow-root")
        self.assertIsNone(makeService(options).stderr)
        options.parent = FakeTwistdOptions(nodaemon=False)
        self.assertIsInstance(makeService(options).stderr, StartupReport)

    def test_foreground(self) -> None:
        """
        Under C{twistd -n}, start-up failures go to the real stderr.
        """
        options = self.parse("--allow-root")
        options.parent = FakeTwistdOptions(nodaemon=True)
        self.assertIs(makeService(options).stderr, sys.stderr)


class PluginTests(SynchronousTestCase):
    """
    Tests for the C{twistd} plugin.
    """

    def maker(self) -> Any:
        """
        Find netd's service maker among the installed plugins.

        @return: It.
        """
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "netd"]
        self.assertEqual(len(makers), 1)
        return makers[0]

    def test_discovered(self) -> None:
        """
        A plugin with tapname C{netd} provides L{IServiceMaker}, and its
        options are L{netd.tap.Options}.
        """
        maker = self.maker()
        self.assertTrue(verifyObject(IServiceMaker, maker))
        self.assertIs(maker.options, Options)
        self.assertTrue(maker.description)

    def test_makeService(self) -> None:
        """
        The plugin's C{makeService} is L{netd.tap.makeService}.
        """
        maker = self.maker()
        options = maker.options()
        options.parseOptions([])
        self.assertIsInstance(maker.makeService(options), NetdService)

    def test_twistdSubcommand(self) -> None:
        """
        twistd's own options parse C{netd --config FILE} into L{Options}
        whose parent is twistd's options.
        """
        from twisted.scripts.twistd import ServerOptions

        path = self.mktemp()
        with open(path, "w") as f:
            f.write('[services.x]\ntype = "echo"\nlisten = ["tcp:0"]\n')
        keepTrialReactor(self)
        server = ServerOptions()
        self.addCleanup(unguardRunner)
        server.parseOptions(["-n", "netd", "--allow-root", "--config", path])
        self.assertEqual(server.subCommand, "netd")
        self.assertIsInstance(server.subOptions, Options)
        self.assertIs(server.subOptions.parent, server)
        self.assertEqual(server.subOptions["netdConfig"].source, path)
        self.assertIs(makeService(server.subOptions).stderr, sys.stderr)


NOBODY = pwd.getpwnam("nobody")


class RunAsTests(SynchronousTestCase):
    """
    Tests for L{_runAs}: the configured account is handed to twistd.
    """

    def setUp(self) -> None:
        """
        Pretend to run as root: L{_runAs} only reads the id, it switches
        nothing itself; keep trial's reactor (L{keepTrialReactor}).
        """
        self.patch(tap.os, "getuid", lambda: 0)
        keepTrialReactor(self)

    def config(self, netd: str) -> Any:
        """
        Load a configuration with the given C{[netd]} table body.

        @param netd: Lines of the C{[netd]} table.
        @return: The configuration.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                f'[netd]\n{netd}\n[services.x]\ntype = "echo"\nlisten = ["tcp:0"]\n'
            )
        return loadConfig(serviceTypes(), path)

    def test_user(self) -> None:
        """
        C{user} sets twistd's uid, and gid to the user's primary group.
        """
        twistd = FakeTwistdOptions()
        _runAs(self.config('user = "nobody"'), twistd)
        self.assertEqual((twistd["uid"], twistd["gid"]), (NOBODY.pw_uid, NOBODY.pw_gid))

    def test_userAndGroup(self) -> None:
        """
        C{group} sets the gid instead of the user's primary group.
        """
        twistd = FakeTwistdOptions()
        _runAs(self.config('user = "nobody"\ngroup = "0"'), twistd)
        self.assertEqual((twistd["uid"], twistd["gid"]), (NOBODY.pw_uid, 0))

    def test_groupOnly(self) -> None:
        """
        C{group} alone sets only the gid.
        """
        twistd = FakeTwistdOptions()
        _runAs(self.config(f'group = "{NOBODY.pw_gid}"'), twistd)
        self.assertEqual((twistd["uid"], twistd["gid"]), (None, NOBODY.pw_gid))

    def test_twistdUidWins(self) -> None:
        """
        twistd's own C{--uid} wins over C{user}, and the user's group is not
        forced on it.
        """
        twistd = FakeTwistdOptions(uid=4242)
        _runAs(self.config('user = "nobody"'), twistd)
        self.assertEqual((twistd["uid"], twistd["gid"]), (4242, None))

    def test_twistdGidWins(self) -> None:
        """
        twistd's own C{--gid} wins over C{group} and over the user's group.
        """
        twistd = FakeTwistdOptions(gid=4343)
        _runAs(self.config('user = "nobody"\ngroup = "0"'), twistd)
        self.assertEqual((twistd["uid"], twistd["gid"]), (NOBODY.pw_uid, 4343))

    def test_twistdGidWinsOverUserGroup(self) -> None:
        """
        twistd's own C{--gid} wins over the configured user's primary group.
        """
        twistd = FakeTwistdOptions(gid=4343)
        _runAs(self.config('user = "nobody"'), twistd)
        self.assertEqual((twistd["uid"], twistd["gid"]), (NOBODY.pw_uid, 4343))

    def test_notRoot(self) -> None:
        """
        A process that is not root cannot switch: nothing is set.
        """
        self.patch(tap.os, "getuid", lambda: 1000)
        twistd = FakeTwistdOptions()
        _runAs(self.config('user = "nobody"'), twistd)
        self.assertEqual((twistd["uid"], twistd["gid"]), (None, None))

    def test_noAccount(self) -> None:
        """
        Without C{user} or C{group}, twistd's options are left alone.
        """
        twistd = FakeTwistdOptions()
        _runAs(self.config(""), twistd)
        self.assertEqual(twistd, FakeTwistdOptions())

    def test_noParent(self) -> None:
        """
        Without twistd's options (L{Options} used on its own), nothing
        happens and nothing fails.
        """
        _runAs(self.config('user = "nobody"'), None)

    def test_makeService(self) -> None:
        """
        L{makeService} hands the configured user to its twistd parent.
        """
        options = Options()
        options.parseOptions(["--config", self.config('user = "nobody"').source])
        options.parent = FakeTwistdOptions()
        makeService(options)
        self.assertEqual(
            (options.parent["uid"], options.parent["gid"]),
            (NOBODY.pw_uid, NOBODY.pw_gid),
        )


class RunAsRootTests(SynchronousTestCase):
    """
    Tests for L{_runAs} through twistd's real options, as root.
    """

    def setUp(self) -> None:
        """
        Skip unless running as root (as CI does).
        """
        keepTrialReactor(self)
        if os.getuid() != 0:
            raise self.skipTest("needs root")
        self.path = self.mktemp()
        with open(self.path, "w") as f:
            f.write(
                '[netd]\nuser = "nobody"\n'
                '[services.x]\ntype = "echo"\nlisten = ["tcp:0"]\n'
            )

    def test_user(self) -> None:
        """
        As root, C{user = "nobody"} becomes twistd's uid and gid.
        """
        from twisted.scripts.twistd import ServerOptions

        keepTrialReactor(self)
        server = ServerOptions()
        self.addCleanup(unguardRunner)
        server.parseOptions(["netd", "--config", self.path])
        self.assertEqual((server["uid"], server["gid"]), (None, None))
        makeService(server.subOptions)
        self.assertEqual((server["uid"], server["gid"]), (NOBODY.pw_uid, NOBODY.pw_gid))

    def test_twistdUidWins(self) -> None:
        """
        As root, twistd's C{--uid} wins over C{user}.
        """
        from twisted.scripts.twistd import ServerOptions

        server = ServerOptions()
        self.addCleanup(unguardRunner)
        server.parseOptions(
            ["--uid", "4242", "--gid", "4242", "netd", "--config", self.path]
        )
        makeService(server.subOptions)
        self.assertEqual(server["uid"], 4242)


class HelpTests(SynchronousTestCase):
    """
    C{twistd netd --help} describes what netd does.
    """

    def test_mentions(self) -> None:
        """
        The help names every service type, the drop-in files, the rate
        limits, the metrics endpoint and the converters.
        """
        text = " ".join(Options().getUsage().split())
        for name in serviceTypes():
            self.assertIn(f"{name} (", text)
        for phrase in (
            "include = [",
            "max_connections_per_second",
            "[netd.metrics]",
            "--convert-inetd",
            "--convert-xinetd",
        ):
            self.assertIn(phrase, text)
