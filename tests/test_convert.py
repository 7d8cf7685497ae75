# -*- test-case-name: tests.test_convert -*-
"""
Tests for L{netd.convert} and C{twistd netd --convert-inetd/--convert-xinetd}:
on the files Debian's C{openbsd-inetd} and C{xinetd} packages ship (copies in
C{tests/fixtures/}, see its README) and on hand-written ones.
"""

from __future__ import annotations

import filecmp
import io
import os
import re
import shutil
import socket
import subprocess
import tomllib

from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from netd.config import ConfigError, parseConfig
from netd.convert import (
    ConvertError,
    Converted,
    convertAddresses,
    convertInetd,
    convertXinetd,
    includedFiles,
    listeners,
)
from netd.services import serviceTypes
from netd.tap import Options
from tests.test_endtoend import Daemon, freePorts
from tests.test_listeners import LOOPBACK, tcpExchange

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
DEBIAN_INETD = os.path.join(FIXTURES, "openbsd-inetd", "inetd.conf")
DEBIAN_XINETD = os.path.join(FIXTURES, "xinetd")
HANDWRITTEN = os.path.join(FIXTURES, "handwritten")
XINETD_VERSION = "1:2.3.15.3-1+b1"


def requireServicesFile() -> None:
    """
    Skip unless C{/etc/services} knows the names the hand-written files use.

    @raise SkipTest: If it does not (package netbase).
    """
    try:
        socket.getservbyname("git", "tcp")
        socket.getservbyname("tftp", "udp")
    except OSError:
        raise SkipTest("/etc/services is missing or incomplete (install netbase)")


def run(*argv: str) -> tuple[int | str | None, str, str]:
    """
    Parse a C{twistd netd} command line that exits.

    @param argv: The arguments after C{netd}.
    @return: The exit status, stdout and stderr.
    """
    options = Options()
    options.stdout = io.StringIO()
    options.stderr = io.StringIO()
    try:
        options.parseOptions(list(argv))
    except SystemExit as e:
        return e.code, options.stdout.getvalue(), options.stderr.getvalue()
    raise AssertionError("did not exit")


def services(text: str) -> dict[str, dict[str, object]]:
    """
    @param text: Converted TOML.
    @return: Its C{services} table (empty if none).
    """
    return dict(tomllib.loads(text).get("services", {}))


def block(text: str, name: str) -> str:
    """
    The lines of one converted service, from its comment to the next one.

    @param text: Converted TOML.
    @param name: A service name.
    @return: The lines from C{[services.NAME]} to the blank line after it.
    """
    match = re.search(
        rf"^\[services\.{re.escape(name)}\]\n(.*?)(?=\n\n|\Z)",
        text,
        re.MULTILINE | re.DOTALL,
    )
    assert match is not None, text
    return match.group(0)


class ConvertTestCase(SynchronousTestCase):
    """
    Helpers: checking converted text with C{--check}.
    """

    def check(self, text: str) -> tuple[int | str | None, str, str]:
        """
        Write converted text to a file and run C{--check} on it.

        @param text: Converted TOML.
        @return: The exit status, stdout and stderr.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return run("--check", "--allow-root", "--config", path)

    def problems(self, text: str) -> list[str]:
        """
        @param text: Converted TOML.
        @return: The problems netd finds in it (C{[]} if valid).
        """
        try:
            parseConfig(serviceTypes(), text, "converted")
        except ConfigError as e:
            return e.lines()
        return []


class DebianInetdTests(ConvertTestCase):
    """
    The C{/etc/inetd.conf} that Debian's openbsd-inetd writes.
    """

    def test_shippedFile(self) -> None:
        """
        Every entry of the shipped file is commented out, so the conversion
        has no service; C{--check} says so.
        """
        text = convertInetd(DEBIAN_INETD)
        self.assertTrue(
            text.startswith(
                f"# netd configuration converted from {DEBIAN_INETD} by twistd "
                "netd --convert-inetd.\n"
            )
        )
        self.assertEqual(services(text), {})
        self.assertEqual(
            self.problems(text),
            [
                "converted: services: no services configured "
                "(add a [services.NAME] table)"
            ],
        )

    def test_internalServicesSwitchedOn(self) -> None:
        """
        With its internal services uncommented, as its comments invite, the
        file converts to netd's built-ins on every IPv4 and IPv6 address
        (openbsd-inetd's C{tcp} is both), and the result passes C{--check}.
        """
        with open(DEBIAN_INETD, encoding="utf-8") as f:
            original = f.read()
        switchedOn = re.sub(
            r"^#(echo|discard|daytime|time|chargen)(\s)",
            r"\1\2",
            original,
            flags=re.MULTILINE,
        )
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(switchedOn)
        text = convertInetd(path)
        self.assertEqual(
            {name: (s["type"], s["listen"]) for name, s in services(text).items()},
            {
                "echo": ("echo", ["tcp:7", "tcp6:7"]),
                "discard": ("discard", ["tcp:9", "tcp6:9"]),
                "discard-udp": ("discard", ["udp:9", "udp6:9"]),
                "daytime": ("daytime", ["tcp:13", "tcp6:13"]),
                "time": ("time", ["tcp:37", "tcp6:37"]),
                "chargen": ("chargen", ["tcp:19", "tcp6:19"]),
            },
        )
        self.assertIn(
            f"# {path}:17:\n# echo\t\tstream\ttcp\tnowait\troot\tinternal\n"
            "[services.echo]\n",
            text,
        )
        code, out, err = self.check(text)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("configuration is valid (6 services, 12 listeners)", out)


class DebianXinetdTests(ConvertTestCase):
    """
    The C{/etc/xinetd.conf} and C{/etc/xinetd.d/} Debian's xinetd ships.
    """

    def test_shippedFiles(self) -> None:
        """
        C{xinetd.conf}'s C{includedir /etc/xinetd.d} is followed (under the
        copy's root); every built-in becomes a disabled netd service (ids
        used twice are renamed, saying so), xinetd's own C{servers} and
        C{services} are kept as comments; the result is valid but for having
        nothing switched on.
        """
        text = convertXinetd(
            os.path.join(DEBIAN_XINETD, "etc", "xinetd.conf"), root=DEBIAN_XINETD
        )
        converted = services(text)
        self.assertEqual(
            {name: (s["type"], s["listen"]) for name, s in converted.items()},
            {
                "chargen-stream": ("chargen", ["tcp:19"]),
                "chargen-dgram": ("chargen", ["udp:19"]),
                "chargen-dgram-2": ("chargen", ["udp:19"]),
                "daytime-stream": ("daytime", ["tcp:13"]),
                "daytime-dgram": ("daytime", ["udp:13"]),
                "daytime-dgram-2": ("daytime", ["udp:13"]),
                "discard-stream": ("discard", ["tcp:9"]),
                "discard-dgram": ("discard", ["udp:9"]),
                "discard-dgram-2": ("discard", ["udp:9"]),
                "echo-stream": ("echo", ["tcp:7"]),
                "echo-dgram": ("echo", ["udp:7"]),
                "echo-dgram-2": ("echo", ["udp:7"]),
                "time-stream": ("time", ["tcp:37"]),
                "time-dgram": ("time", ["udp:37"]),
                "time-dgram-2": ("time", ["udp:37"]),
            },
        )
        self.assertTrue(all(s["enabled"] is False for s in converted.values()))
        self.assertIn(
            "# renamed to echo-dgram-2: an earlier service is named echo-dgram",
            text,
        )
        servers = os.path.join(DEBIAN_XINETD, "etc", "xinetd.d", "servers")
        self.assertIn(
            f"# {servers}:4: not converted: xinetd's internal 'servers' service "
            "has no netd equivalent (netd has echo, discard, chargen, daytime, "
            "time)\n# service servers\n",
            text,
        )
        self.assertEqual(
            self.problems(text),
            [
                "converted: services: every service is disabled "
                "(enabled = false): nothing to run"
            ],
        )

    def test_servicesSwitchedOn(self) -> None:
        """
        With C{disable = no} in the files that hold both TCP and UDP
        versions (as an administrator switches them on), the conversion
        passes C{--check}: ten services, one listener each.
        """
        root = os.path.abspath(self.mktemp())
        shutil.copytree(DEBIAN_XINETD, root)
        for name in BUILTIN_FILES:
            path = os.path.join(root, "etc", "xinetd.d", name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            with open(path, "w", encoding="utf-8") as f:
                f.write(text.replace("disable\t\t= yes", "disable\t\t= no"))
        text = convertXinetd(os.path.join(root, "etc", "xinetd.conf"), root=root)
        code, out, err = self.check(text)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("configuration is valid (10 services, 10 listeners)", out)
        self.assertIn("  echo-dgram (echo): udp:7\n", out)

    def test_directory(self) -> None:
        """
        A directory is read as C{includedir} reads it: the same services.
        """
        directory = os.path.join(DEBIAN_XINETD, "etc", "xinetd.d")
        viaFile = convertXinetd(
            os.path.join(DEBIAN_XINETD, "etc", "xinetd.conf"), root=DEBIAN_XINETD
        )
        self.assertEqual(services(convertXinetd(directory)), services(viaFile))

    def test_fixturesAreThePackagesFiles(self) -> None:
        """
        Where this version of xinetd is installed, unmodified, the fixtures
        are byte for byte its C{/etc/xinetd.d} and C{/etc/xinetd.conf}.
        """
        try:
            version = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", "xinetd"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            verify = subprocess.run(
                ["dpkg", "--verify", "xinetd"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except OSError:
            raise SkipTest("no dpkg")
        if version.returncode or version.stdout != XINETD_VERSION:
            raise SkipTest(f"xinetd {XINETD_VERSION} is not installed")
        if verify.stdout.strip():
            raise SkipTest(f"the installed xinetd is modified:\n{verify.stdout}")
        fixtures = os.path.join(DEBIAN_XINETD, "etc", "xinetd.d")
        names = sorted(os.listdir(fixtures))
        match, mismatch, errors = filecmp.cmpfiles(
            "/etc/xinetd.d", fixtures, names, shallow=False
        )
        self.assertEqual((mismatch, errors), ([], []))
        self.assertTrue(
            filecmp.cmp(
                "/etc/xinetd.conf",
                os.path.join(DEBIAN_XINETD, "etc", "xinetd.conf"),
                shallow=False,
            )
        )


BUILTIN_FILES = ("echo", "discard", "chargen", "daytime", "time")


class HandwrittenInetdTests(ConvertTestCase):
    """
    A hand-written C{inetd.conf}: every field form openbsd-inetd takes.
    """

    def setUp(self) -> None:
        requireServicesFile()
        self.path = os.path.join(HANDWRITTEN, "inetd.conf")
        self.text = convertInetd(self.path)

    def test_builtins(self) -> None:
        """
        A C{host:} line sets the address of the lines after it until C{*:};
        C{tcp6}/C{udp4} choose one family, C{tcp}/C{udp} take both; a
        datagram service is named C{NAME-udp}; C{nowait.max} (starts per
        minute) becomes a connection rate and burst, with the difference
        said.
        """
        converted = services(self.text)
        self.assertEqual(converted["echo"]["listen"], ["tcp:7:interface=127.0.0.1"])
        self.assertEqual(converted["discard-udp"]["listen"], ["udp:9", "udp6:9"])
        self.assertEqual(converted["daytime"]["listen"], ["tcp6:13"])
        self.assertEqual(converted["time-udp"]["listen"], ["udp:37"])
        self.assertEqual(
            block(self.text, "chargen"),
            "[services.chargen]\n"
            'type = "chargen"\n'
            'listen = ["tcp:19"]\n'
            "# nowait.120: inetd stops the service for ten minutes past 120 "
            "starts a minute; netd only refuses the connections over that rate "
            "(per address: max_connections_per_second_per_peer)\n"
            "[services.chargen.limits]\n"
            "max_connections_per_second = 2.0\n"
            "connection_burst = 120",
        )

    def test_programs(self) -> None:
        """
        Program lines become exec services: argv[0] leaves the argument list,
        C{wait} is the mode, C{user.group} and C{user:group} the account;
        C{tcpd} is dropped (saying where its rules go).
        """
        self.assertEqual(
            block(self.text, "git"),
            "[services.git]\n"
            'type = "exec"\n'
            'listen = ["tcp:9418", "tcp6:9418"]\n'
            'command = ["/usr/bin/git", "daemon", "--inetd", "--export-all", '
            '"/srv/git"]\n'
            'mode = "nowait"\n'
            'user = "nobody"\n'
            'group = "nogroup"\n'
            "# nowait.600: inetd stops the service for ten minutes past 600 "
            "starts a minute; netd only refuses the connections over that rate "
            "(per address: max_connections_per_second_per_peer)\n"
            "[services.git.limits]\n"
            "max_connections_per_second = 10.0\n"
            "connection_burst = 600",
        )
        self.assertEqual(
            block(self.text, "tftp-udp"),
            "[services.tftp-udp]\n"
            'type = "exec"\n'
            'listen = ["udp:69", "udp6:69"]\n'
            'command = ["/usr/sbin/in.tftpd", "--secure", "/srv/tftp"]\n'
            'mode = "wait"\n'
            'user = "root"\n'
            '# user = "root": an exec service runs as root only with allow_root; '
            "give it its own user if it does not need root",
        )
        finger = services(self.text)["finger"]
        self.assertEqual(finger["command"], ["/usr/sbin/in.fingerd", "-w"])
        self.assertIn(
            "# not converted: tcpd (TCP wrappers) is dropped: netd does not read "
            "/etc/hosts.allow or /etc/hosts.deny; put their rules in "
            "limits.allow and limits.deny",
            block(self.text, "finger"),
        )
        ident = services(self.text)["ident"]
        self.assertEqual(
            (ident["mode"], ident["user"], ident["group"]), ("wait", "identd", "identd")
        )
        self.assertIn(
            "# not converted: rcvbuf=64k: netd sets no socket buffer sizes per "
            "listener\n# not converted: argv[0] was 'oidentd'",
            block(self.text, "ident"),
        )

    def test_addressesAndSwitchedOff(self) -> None:
        """
        Several addresses before the service name give one listener each
        (IPv6 ones escaped); a C{#<off>#} line (update-inetd's) is a service
        with C{enabled = false}; a C{unix} line listens on its path.
        """
        converted = services(self.text)
        self.assertEqual(
            converted["ftp"]["listen"],
            ["tcp:21:interface=192.0.2.10", "tcp6:21:interface=2001\\:db8\\:\\:10"],
        )
        self.assertIs(converted["rsync"]["enabled"], False)
        self.assertEqual(converted["hello.sock"]["listen"], ["unix:/run/hello.sock"])
        self.assertEqual(converted["hello.sock"]["command"], ["/usr/local/bin/hello"])

    def test_notConverted(self) -> None:
        """
        RPC, inetd-only internal services, unknown service names and short
        lines are kept as comments saying why.
        """
        for number, why, line in (
            (21, "Sun RPC services have no netd equivalent", "rstatd/1-5\tdgram"),
            (22, "inetd's internal 'tcpmux' service has no netd equivalent", "tcpmux"),
            (
                23,
                "'nosuchservice' is neither a port number nor a service in "
                "/etc/services",
                "nosuchservice",
            ),
            (24, "expected at least 6 fields", "broken\t\tstream\ttcp"),
            (26, "no address to listen on", "mail.example:smtp"),
        ):
            self.assertIn(f"# {self.path}:{number}: not converted: {why}", self.text)
            self.assertIn(f"\n# {line}", self.text)
        self.assertEqual(len(services(self.text)), 13)
        self.assertEqual(
            block(self.text, "daytime-2"),
            "[services.daytime-2]\n"
            'type = "daytime"\n'
            'listen = ["tcp:13:interface=127.0.0.2"]\n'
            "# renamed to daytime-2: an earlier service is named daytime\n"
            "# not converted: host 'localhost': netd listens on addresses, not "
            "names; add a listener with its address",
        )

    def test_onlyTheMachineDiffers(self) -> None:
        """
        What netd refuses in the conversion is only what this machine or
        netd cannot give the exec services as written: programs and users
        it does not have, root without C{allow_root} (the converter keeps
        C{user = "root"} and says so rather than allow it silently), and a
        stream C{wait} service (the program would accept connections
        itself, which netd does not do).
        """
        if "exec" not in serviceTypes():
            raise SkipTest("no exec service type in this tree")
        found = sorted(
            tuple(problem.split(": ", 2)[1].rsplit(".", 1))
            for problem in self.problems(self.text)
        )
        self.assertEqual(
            found,
            [
                ("services.finger", "command"),
                ("services.ftp", "command"),
                ("services.ftp", "user"),
                ("services.hello.sock", "command"),
                ("services.ident", "mode"),
                ("services.ident", "user"),
                ("services.tftp-udp", "user"),
            ],
        )


class HandwrittenXinetdTests(ConvertTestCase):
    """
    A hand-written C{xinetd.conf} with C{defaults} and C{includedir}.
    """

    def setUp(self) -> None:
        requireServicesFile()
        self.text = convertXinetd(os.path.join(HANDWRITTEN, "xinetd.conf"))
        self.converted = services(self.text)

    def test_includedir(self) -> None:
        """
        Every file of the directory is read in name order, except names with
        a dot or ending in C{~}.
        """
        self.assertEqual(
            list(self.converted), ["echo-stream", "finger", "git", "tftp", "http-alt"]
        )
        self.assertEqual(
            [os.path.basename(p) for p in includedFiles(f"{HANDWRITTEN}/xinetd.d")],
            ["echo", "finger", "git", "tftp", "web"],
        )

    def test_defaultsAndAccess(self) -> None:
        """
        C{defaults} apply to every service; C{+=} adds to them; wildcard
        (C{10.0.0.0}), factorized (C{192.168.{1,2}}) and IPv6 addresses
        become prefixes; C{instances}, C{per_source} and C{cps} become
        limits (C{UNLIMITED} the largest value), with what differs said.
        """
        self.assertEqual(
            self.converted["echo-stream"]["limits"],
            {
                "allow": [
                    "127.0.0.1/32",
                    "10.0.0.0/8",
                    "192.168.1.0/24",
                    "192.168.2.0/24",
                    "::1/128",
                    "2001:db8::/32",
                ],
                "deny": ["10.1.0.0/16"],
                "max_sessions": 60,
                "max_sessions_per_peer": 10,
                "max_connections_per_second": 50,
                "connection_burst": 50,
            },
        )
        self.assertEqual(self.converted["echo-stream"]["listen"], ["tcp:7", "tcp6:7"])
        self.assertIn("# cps 50 10: xinetd switches the whole service off", self.text)
        self.assertEqual(
            self.converted["tftp"]["limits"]["max_sessions_per_peer"], 1_000_000
        )
        self.assertIn(
            "# not converted: defaults: log_type: netd logs every session and "
            "refusal itself",
            self.text,
        )

    def test_redirect(self) -> None:
        """
        C{redirect} becomes a forward service to the same target, on the
        C{bind} address; what has no equivalent is said.
        """
        web = self.converted["http-alt"]
        self.assertEqual(
            (web["type"], web["listen"], web["to"]),
            ("forward", ["tcp:8081:interface=127.0.0.1"], "tcp:127.0.0.1:8080"),
        )
        self.assertIn(
            "# not converted: access_times: netd has no time-of-day access rules",
            block(self.text, "http-alt"),
        )

    def test_programs(self) -> None:
        """
        C{server} and C{server_args} become C{command} (with C{NAMEINARGS},
        the first argument is argv[0], and C{tcpd} is dropped); C{wait},
        C{user}, C{group}, C{nice}, C{rlimit_as} (with its M suffix) and
        C{env} are kept; host names in C{only_from} are not.
        """
        git = self.converted["git"]
        self.assertEqual(
            git,
            {
                "type": "exec",
                "listen": ["tcp:9418"],
                "command": [
                    "/usr/bin/git",
                    "daemon",
                    "--inetd",
                    "--base-path=/srv/git",
                    "/srv/git",
                ],
                "mode": "nowait",
                "user": "nobody",
                "group": "nogroup",
                "nice": 10,
                "rlimit_as": 64 * 1024 * 1024,
                "env": {"GIT_TRACE": "0", "HOME": "/srv/git"},
                "limits": {
                    "allow": [
                        "127.0.0.1/32",
                        "10.0.0.0/8",
                        "192.168.1.0/24",
                        "192.168.2.0/24",
                    ],
                    "max_sessions": 60,
                    "max_sessions_per_peer": 10,
                },
            },
        )
        self.assertIn("# not converted: passenv:", block(self.text, "git"))
        self.assertEqual(
            (self.converted["tftp"]["mode"], self.converted["tftp"]["command"]),
            ("wait", ["/usr/sbin/in.tftpd", "-s", "/srv/tftp"]),
        )
        finger = block(self.text, "finger")
        self.assertIn('command = ["/usr/sbin/in.fingerd", "-w"]', finger)
        self.assertIn(
            "# not converted: only_from www.example.com: host, domain and "
            "network names are not matched by netd",
            finger,
        )
        self.assertNotIn("allow", self.converted["finger"].get("limits", {}))

    def test_builtinPartChecks(self) -> None:
        """
        The part of the configuration with no programs (C{include} of two
        files) passes C{--check}.
        """
        text = convertXinetd(os.path.join(HANDWRITTEN, "xinetd-builtin.conf"))
        code, out, err = self.check(text)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out.splitlines()[1:],
            [
                "  echo-stream (echo): tcp:7, tcp6:7",
                "  http-alt (forward): tcp:8081:interface=127.0.0.1",
            ],
        )


class ExecCheckTests(ConvertTestCase):
    """
    Converted exec services against the exec type, where it exists.
    """

    def test_execChecks(self) -> None:
        """
        An inetd line starting C{/bin/cat} as nobody converts to an exec
        service that C{--check} accepts.
        """
        if "exec" not in serviceTypes():
            raise SkipTest("no exec service type in this tree yet")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("127.0.0.1:\n12345 stream tcp nowait nobody /bin/cat cat\n")
        code, out, err = self.check(convertInetd(path))
        self.assertEqual((code, err), (0, ""), out)


class PiecesTests(SynchronousTestCase):
    """
    Tests for the converter's helpers.
    """

    def test_addresses(self) -> None:
        """
        xinetd's address forms become CIDR prefixes; names are noted.
        """
        entry = Converted("x", "f:1", [])
        self.assertEqual(
            convertAddresses(
                [
                    "0.0.0.0",
                    "10.0.0.0",
                    "172.16.5.0",
                    "192.0.2.7",
                    "10.{1,2}",
                    "198.51.100.{5,6}",
                    "2001:db8::/48",
                    "fe80::1",
                    "10.0.0.0/255.0.0.0",
                    "host.example",
                ],
                entry,
                "only_from",
            ),
            [
                "0.0.0.0/0",
                "10.0.0.0/8",
                "172.16.5.0/24",
                "192.0.2.7/32",
                "10.1.0.0/16",
                "10.2.0.0/16",
                "198.51.100.5/32",
                "198.51.100.6/32",
                "2001:db8::/48",
                "fe80::1/128",
                "10.0.0.0/8",
            ],
        )
        self.assertEqual(len(entry.notes), 1)
        self.assertTrue(entry.notes[0].startswith("only_from host.example: "))

    def test_listeners(self) -> None:
        """
        Families give one listener each; an interface picks its family.
        """
        self.assertEqual(listeners("dgram", (4, 6), 69, None), ["udp:69", "udp6:69"])
        self.assertEqual(listeners("stream", (4, 6), 7, "*"), ["tcp:7", "tcp6:7"])
        self.assertEqual(
            listeners("stream", (4,), 7, "::1"), ["tcp6:7:interface=\\:\\:1"]
        )

    def test_unreadable(self) -> None:
        """
        A missing file is a L{ConvertError} naming it.
        """
        missing = os.path.abspath(self.mktemp())
        e = self.assertRaises(ConvertError, convertInetd, missing)
        self.assertEqual(
            str(e), f"{missing}: cannot read it: No such file or directory"
        )
        e = self.assertRaises(ConvertError, convertXinetd, missing)
        self.assertEqual(
            str(e), f"{missing}: cannot read it: No such file or directory"
        )

    def test_xinetdSyntaxProblems(self) -> None:
        """
        Lines the xinetd reader does not understand, and an unclosed block,
        are noted at the end of the output; disabled and enabled lists of
        C{defaults} switch services off.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                "defaults\n{\n\tdisabled = b\n}\nbogus line\n"
                "service a {\n\tsocket_type = stream\n\tport = 7000\n"
                "\tserver = /bin/cat\n\twait = no\n}\n"
                "service b\n{\n\tsocket_type = stream\n\tport = 7001\n"
                "\tserver = /bin/cat\n\twait = no\n\tnot an attribute\n}\n"
                "service c\n{\n\tsocket_type = stream\n"
            )
        text = convertXinetd(path)
        self.assertIn(f"# not converted: {path}:5: not understood: bogus line", text)
        self.assertIn(
            f"# not converted: {path}:18: not an attribute line: not an attribute",
            text,
        )
        self.assertIn(f"# not converted: {path}:20: service block not closed", text)
        converted = services(text)
        self.assertEqual(list(converted), ["a", "b"])
        self.assertNotIn("enabled", converted["a"])
        self.assertIs(converted["b"]["enabled"], False)


class CommandLineTests(SynchronousTestCase):
    """
    The C{--convert-inetd} and C{--convert-xinetd} options.
    """

    def test_convertInetd(self) -> None:
        """
        C{--convert-inetd FILE} prints the conversion and exits 0.
        """
        self.assertEqual(
            run("--convert-inetd", DEBIAN_INETD), (0, convertInetd(DEBIAN_INETD), "")
        )

    def test_convertXinetd(self) -> None:
        """
        C{--convert-xinetd DIR} prints the conversion of the directory.
        """
        directory = os.path.join(DEBIAN_XINETD, "etc", "xinetd.d")
        self.assertEqual(
            run("--convert-xinetd", directory), (0, convertXinetd(directory), "")
        )

    def test_unreadable(self) -> None:
        """
        A file that cannot be read: one line on stderr, status 78.
        """
        missing = os.path.abspath(self.mktemp())
        self.assertEqual(
            run("--convert-xinetd", missing),
            (78, "", f"netd: {missing}: cannot read it: No such file or directory\n"),
        )

    def test_both(self) -> None:
        """
        Both options at once is a usage error: one line, a pointer to
        C{--help}, exit status 64.
        """
        options = Options()
        options.stderr = io.StringIO()
        e = self.assertRaises(
            SystemExit,
            options.parseOptions,
            ["--convert-inetd", "a", "--convert-xinetd", "b"],
        )
        self.assertEqual(e.code, 64)
        self.assertEqual(
            options.stderr.getvalue(),
            "netd: --convert-inetd and --convert-xinetd: convert one at a time\n"
            "netd: 'netd --help' lists the options\n",
        )

    def test_help(self) -> None:
        """
        C{--help} describes both options.
        """
        text = str(Options())
        self.assertIn("--convert-inetd=", text)
        self.assertIn("--convert-xinetd=", text)


class ConvertEndToEndTests(TestCase):
    """
    The real C{twistd netd --convert-xinetd}, then the real daemon on its
    output.
    """

    timeout = 60

    async def test_convertedServiceServes(self) -> None:
        """
        An xinetd daytime and a redirect to it, converted by the real
        command, serve: the daytime line comes straight and through the
        forward service.
        """
        daytimePort, redirectPort = freePorts(2)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "xinetd.d"))
        with open(os.path.join(directory, "xinetd.d", "daytime"), "w") as f:
            f.write(
                "service daytime\n{\n\ttype = INTERNAL UNLISTED\n"
                f"\tport = {daytimePort}\n\tbind = 127.0.0.1\n"
                "\tsocket_type = stream\n\twait = no\n}\n"
                "service relay\n{\n\ttype = UNLISTED\n"
                f"\tport = {redirectPort}\n\tbind = 127.0.0.1\n"
                "\tsocket_type = stream\n\twait = no\n"
                f"\tredirect = 127.0.0.1 {daytimePort}\n}}\n"
            )
        convert = Daemon(
            ["netd", "--convert-xinetd", os.path.join(directory, "xinetd.d")],
            directory,
        )
        self.addCleanup(convert.kill)
        convert.start()
        self.assertEqual(await convert.wait(), 0, convert.stderr)
        config = os.path.join(directory, "netd.toml")
        with open(config, "w") as f:
            f.write(convert.stdout)
        daemon = Daemon(["-n", "--pidfile=", "netd", "--config", config], directory)
        self.addCleanup(daemon.kill)
        daemon.start()
        await daemon.waitForOutput(
            rf"relay listening on tcp:127\.0\.0\.1:{redirectPort}"
        )
        direct = await deferToThread(tcpExchange, LOOPBACK, daytimePort)
        relayed = await deferToThread(tcpExchange, LOOPBACK, redirectPort)
        pattern = rb"^\w{3} \w{3} [ \d]\d \d{2}:\d{2}:\d{2} \d{4} \S+\r\n$"
        for result in (direct, relayed):
            self.assertRegex(result.received, pattern)
        code = await daemon.stop()
        self.assertNotIn("Traceback", daemon.stdout + daemon.stderr)
        self.assertIn(code, (0, -15))
