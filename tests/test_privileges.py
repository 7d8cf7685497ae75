# -*- test-case-name: tests.test_privileges -*-
"""
Tests for L{netd.privileges} and the privilege handling of L{netd.tap} and
L{netd.daemon}: the os calls are recorded by a fake, as in Twisted's
C{test_twistd}, and twistd's own start-up order is run with a fake reactor.
"""

from __future__ import annotations

import errno
import grp
import io
import os
import pwd
from typing import Any

from twisted.application import service
from twisted.scripts import _twistd_unix, twistd
from twisted.trial.unittest import SynchronousTestCase

from netd import daemon, tap
from netd.services import serviceTypes
from netd.daemon import EX_OSERR, NetdService
from netd.privileges import (
    Account,
    PrivilegeError,
    chownFiles,
    dropPrivileges,
    noNewPrivileges,
    resolveAccount,
    switchAccount,
    verifyDropped,
)
from netd.tap import EX_CONFIG, Options, makeService
from tests.support import keepTrialReactor

NOBODY = pwd.getpwnam("nobody")
ACCOUNT = Account(65534, 65534, (65534,), "nobody")


class FakeOS:
    """
    The part of L{os} that switching users touches, recording every call;
    it behaves like the kernel for a process that starts as root.

    @ivar calls: C{(name, args)} in order.
    @ivar resuid: The real, effective and saved user ids.
    @ivar resgid: The real, effective and saved group ids.
    @ivar groups: The supplementary groups.
    @ivar regainable: Whether C{setuid(0)} succeeds even after the switch
        (a broken kernel or a kept capability).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.resuid = (0, 0, 0)
        self.resgid = (0, 0, 0)
        self.groups: list[int] = [0]
        self.regainable = False

    def _root(self) -> bool:
        return self.resuid[1] == 0 or self.regainable

    def setgroups(self, groups: list[int]) -> None:
        self.calls.append(("setgroups", (list(groups),)))
        if not self._root():
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self.groups = list(groups)

    def setresgid(self, r: int, e: int, s: int) -> None:
        self.calls.append(("setresgid", (r, e, s)))
        if not self._root():
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self.resgid = (r, e, s)

    def setresuid(self, r: int, e: int, s: int) -> None:
        self.calls.append(("setresuid", (r, e, s)))
        if not self._root():
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self.resuid = (r, e, s)

    def setuid(self, uid: int) -> None:
        self.calls.append(("setuid", (uid,)))
        if not self._root():
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self.resuid = (uid, uid, uid)

    def setgid(self, gid: int) -> None:
        self.calls.append(("setgid", (gid,)))
        if not self._root():
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self.resgid = (gid, gid, gid)

    def getresuid(self) -> tuple[int, int, int]:
        return self.resuid

    def getresgid(self) -> tuple[int, int, int]:
        return self.resgid

    def getgroups(self) -> list[int]:
        return list(self.groups)

    def geteuid(self) -> int:
        return self.resuid[1]

    def chown(self, path: str, uid: int, gid: int) -> None:
        self.calls.append(("chown", (path, uid, gid)))
        if path.endswith("missing"):
            raise FileNotFoundError(errno.ENOENT, "No such file")


def noCapabilities() -> dict[str, int]:
    """
    @return: Capability sets with nothing left.
    """
    return {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0}


class DropTests(SynchronousTestCase):
    """
    Tests for L{switchAccount}, L{verifyDropped} and L{dropPrivileges}.
    """

    def drop(self, fake: FakeOS, **kwargs: Any) -> list[str]:
        """
        Run L{dropPrivileges} on a fake.

        @param fake: The fake L{os}.
        @param kwargs: Overrides of its other collaborators.
        @return: The names of the calls made, C{"no_new_privs"} included.
        """
        calls = fake.calls

        def setNoNewPrivs() -> None:
            calls.append(("no_new_privs", ()))

        dropPrivileges(
            kwargs.pop("account", ACCOUNT),
            osModule=fake,
            setNoNewPrivs=kwargs.pop("setNoNewPrivs", setNoNewPrivs),
            readCapabilities=kwargs.pop("readCapabilities", noCapabilities),
        )
        return [name for name, args in calls]

    def test_order(self) -> None:
        """
        As root: supplementary groups (exactly the account's), then the group,
        then the user, each real, effective and saved; then the proof that
        neither can go back to 0; then C{PR_SET_NO_NEW_PRIVS}.
        """
        fake = FakeOS()
        account = Account(1000, 1001, (1001, 27), "alice")
        names = self.drop(fake, account=account)
        self.assertEqual(
            fake.calls,
            [
                ("setgroups", ([1001, 27],)),
                ("setresgid", (1001, 1001, 1001)),
                ("setresuid", (1000, 1000, 1000)),
                ("setuid", (0,)),
                ("setgid", (0,)),
                ("no_new_privs", ()),
            ],
        )
        self.assertEqual(names[-1], "no_new_privs")

    def test_alreadySwitchedByTwistd(self) -> None:
        """
        After twistd's own switch, only the checks and C{PR_SET_NO_NEW_PRIVS}
        remain.
        """
        fake = FakeOS()
        fake.resuid, fake.resgid, fake.groups = (65534,) * 3, (65534,) * 3, [65534]
        self.assertEqual(self.drop(fake), ["setuid", "setgid", "no_new_privs"])

    def test_rootRegainable(self) -> None:
        """
        If C{setuid(0)} still works after the switch, L{PrivilegeError} says
        root could be regained, and C{PR_SET_NO_NEW_PRIVS} is not reported as
        done.
        """
        fake = FakeOS()
        fake.regainable = True
        error = self.assertRaises(PrivilegeError, self.drop, fake)
        self.assertIn("root user id could be regained", str(error))
        self.assertNotIn(("no_new_privs", ()), fake.calls)

    def test_savedUid(self) -> None:
        """
        A saved user id of 0 (twistd C{--euid}) is refused.
        """
        fake = FakeOS()
        fake.resuid, fake.resgid, fake.groups = (65534, 65534, 0), (65534,) * 3, [65534]
        error = self.assertRaises(
            PrivilegeError, verifyDropped, ACCOUNT, fake, noCapabilities
        )
        self.assertIn("--euid", str(error))

    def test_extraGroups(self) -> None:
        """
        Supplementary groups other than the account's are refused.
        """
        fake = FakeOS()
        fake.resuid, fake.resgid, fake.groups = (65534,) * 3, (65534,) * 3, [0, 65534]
        error = self.assertRaises(
            PrivilegeError, verifyDropped, ACCOUNT, fake, noCapabilities
        )
        self.assertIn("supplementary groups are [0, 65534]", str(error))

    def test_capabilitiesLeft(self) -> None:
        """
        A capability left in the permitted, effective or ambient set is
        refused.
        """
        fake = FakeOS()
        error = self.assertRaises(
            PrivilegeError,
            self.drop,
            fake,
            readCapabilities=lambda: {"CapEff": 0x400, "CapPrm": 0x400, "CapInh": 1},
        )
        self.assertIn(
            "capabilities left after the switch: CapEff=400, CapPrm=400", str(error)
        )

    def test_switchFails(self) -> None:
        """
        A refused switch (not root) names the account.
        """
        fake = FakeOS()
        fake.resuid = (1000, 1000, 1000)
        error = self.assertRaises(PrivilegeError, switchAccount, ACCOUNT, fake)
        self.assertIn("cannot switch to nobody (uid 65534", str(error))

    def test_noNewPrivsFails(self) -> None:
        """
        A kernel refusing C{PR_SET_NO_NEW_PRIVS} is an error.
        """

        def refuse() -> None:
            raise OSError(errno.EINVAL, "Invalid argument")

        error = self.assertRaises(
            PrivilegeError, self.drop, FakeOS(), setNoNewPrivs=refuse
        )
        self.assertIn("PR_SET_NO_NEW_PRIVS", str(error))

    def test_realPrctl(self) -> None:
        """
        L{noNewPrivileges} reads the real flag through C{prctl} (the trial
        process may have it set or not; the call itself must work).
        """
        self.assertIn(noNewPrivileges(), (True, False))


class AccountTests(SynchronousTestCase):
    """
    Tests for L{resolveAccount} and L{chownFiles}.
    """

    def test_user(self) -> None:
        """
        A user name gives its uid, primary group and its supplementary groups.
        """
        account = resolveAccount("nobody", None)
        assert account is not None
        self.assertEqual((account.uid, account.gid), (NOBODY.pw_uid, NOBODY.pw_gid))
        self.assertEqual(
            set(account.groups), set(os.getgrouplist("nobody", NOBODY.pw_gid))
        )
        self.assertEqual(account.name, "nobody")

    def test_twistdIdsWin(self) -> None:
        """
        twistd's uid and gid win over the configuration; a uid without a
        user entry needs a gid, and then has only that group.
        """
        root = grp.getgrgid(0).gr_name
        account = resolveAccount("root", root, NOBODY.pw_uid, 0)
        assert account is not None
        self.assertEqual(
            (account.uid, account.gid, account.name), (NOBODY.pw_uid, 0, "nobody")
        )
        self.assertEqual(
            resolveAccount(None, None, 4242, 4243), Account(4242, 4243, (4243,), "4242")
        )
        self.assertRaises(KeyError, resolveAccount, None, None, 4242, None)
        self.assertIsNone(resolveAccount(None, "0"))

    def test_chown(self) -> None:
        """
        L{chownFiles} hands each existing file to the account and skips the
        missing ones.
        """
        fake = FakeOS()
        changed = chownFiles(
            ["twistd.pid", "missing", "/var/log/netd.log"], ACCOUNT, fake
        )
        self.assertEqual(changed, ["twistd.pid", "/var/log/netd.log"])
        self.assertEqual(fake.calls[0], ("chown", ("twistd.pid", 65534, 65534)))


class FakeTwistdOptions(dict):  # type: ignore[type-arg]
    """
    The twistd options L{makeService} reads.
    """

    def __init__(self, **values: Any) -> None:
        super().__init__(
            uid=None, gid=None, nodaemon=True, pidfile="", logfile=None, syslog=False
        )
        self.update(values)


class RootPolicyTests(SynchronousTestCase):
    """
    Tests for the refusal to run as root without a user to switch to.
    """

    def options(self, netd: str, *args: str, euid: int = 0) -> Options:
        """
        @param netd: Lines of the C{[netd]} table.
        @param args: Further command line arguments.
        @param euid: The effective uid to pretend.
        @return: Parsed options under a fake twistd.
        """
        self.patch(tap.os, "geteuid", lambda: euid)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                f'[netd]\n{netd}\n[services.e]\ntype = "echo"\nlisten = ["tcp:0"]\n'
            )
        options = Options()
        options.stderr = io.StringIO()
        options.parseOptions(["--config", path, *args])
        options.parent = FakeTwistdOptions()
        return options

    def test_refused(self) -> None:
        """
        As root with no user, L{makeService} exits with status 78 and two
        lines naming the file and every fix.
        """
        options = self.options("")
        exit = self.assertRaises(SystemExit, makeService, options)
        self.assertEqual(exit.code, EX_CONFIG)
        lines = options.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("refusing to run as root", lines[0])
        self.assertIn(options["config"], lines[0])
        for fix in ('user = "NAME"', "--uid", "allow_root = true", "--allow-root"):
            self.assertIn(fix, options.stderr.getvalue())

    def test_allowed(self) -> None:
        """
        C{allow_root = true} or C{--allow-root} lets root run netd.
        """
        self.assertIsInstance(
            makeService(self.options("allow_root = true")), NetdService
        )
        self.assertIsInstance(
            makeService(self.options("", "--allow-root")), NetdService
        )

    def test_userGiven(self) -> None:
        """
        With a user, root is fine: the account is handed to the service,
        along with the pidfile and log file twistd creates as root.
        """
        self.patch(tap.os, "getuid", lambda: 0)
        options = self.options('user = "nobody"')
        options.parent.update(pidfile="/run/netd.pid", logfile="/var/log/x.log")
        root = makeService(options)
        assert root.account is not None
        self.assertEqual(root.account.uid, NOBODY.pw_uid)
        self.assertEqual(root.ownedFiles, ["/run/netd.pid", "/var/log/x.log"])
        self.assertTrue(root.handleSignals)

    def test_notRoot(self) -> None:
        """
        Not root (with or without C{CAP_NET_BIND_SERVICE}): nothing to refuse,
        nothing to switch.
        """
        root = makeService(self.options("", euid=1000))
        self.assertIsNone(root.account)


class TwistdOrderTests(SynchronousTestCase):
    """
    netd inside twistd's real start-up sequence (after Twisted's
    C{test_twistd._applicationStartsWithConfiguredID}).
    """

    def test_bindThenSwitchThenVerify(self) -> None:
        """
        With C{user = "nobody"} and twistd run as root: every listener is
        bound in C{privilegedStartService}; then twistd switches to nobody's
        uid and gid; then, in C{startService}, netd checks the switch and
        sets C{PR_SET_NO_NEW_PRIVS}.
        """
        self.patch(tap.os, "getuid", lambda: 0)
        self.patch(tap.os, "geteuid", lambda: 0)
        keepTrialReactor(self)
        events: list[Any] = []
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                '[netd]\nuser = "nobody"\n[services.e]\ntype = "echo"\n'
                'listen = ["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]\n'
            )
        config = twistd.ServerOptions()
        config.parseOptions(["-n", "--pidfile=", "netd", "--config", path])
        root = makeService(config.subOptions)
        self.addCleanup(root.stopService)
        # makeService wrapped twistd's runner class (netd.startup): undo it.
        from netd.startup import unguardRunner

        self.addCleanup(unguardRunner)

        def bound() -> list[bool]:
            return [
                listener.port is not None
                for instance in root.served.serviceInstances()
                for listener in instance.listenerServices()
            ]

        originalPrivileged = root.privilegedStartService

        def privileged() -> None:
            originalPrivileged()
            events.append(("privilegedStartService", bound()))

        root.privilegedStartService = privileged  # type: ignore[method-assign]
        self.patch(daemon, "preload", lambda: events.append("preload"))
        self.patch(
            daemon,
            "dropPrivileges",
            lambda account: events.append(("verify", account.uid)),
        )
        self.patch(
            _twistd_unix,
            "switchUID",
            lambda uid, gid, euid: events.append(("switchUID", uid, gid, euid)),
        )

        class Runner(twistd._SomeApplicationRunner):  # type: ignore[misc,name-defined]
            def setupEnvironment(self, *args: Any) -> None:
                events.append("environment")

            def startReactor(self, *args: Any) -> None:
                events.append("reactor")

            def removePID(self, pidfile: str) -> None:
                pass

        application = service.Application("netd")
        root.setServiceParent(application)
        runner = Runner(config)
        runner.preApplication()
        runner.application = application
        runner.postApplication()
        self.assertEqual(
            events,
            [
                "environment",
                "preload",
                ("privilegedStartService", [True, True]),
                ("switchUID", NOBODY.pw_uid, NOBODY.pw_gid, 0),
                ("verify", NOBODY.pw_uid),
                "reactor",
            ],
        )

    def test_failedDropExits(self) -> None:
        """
        A failed check ends start-up with status 71 and one line on stderr.
        """
        from netd.config import parseConfig

        stderr = io.StringIO()

        def fail(account: Account) -> None:
            raise PrivilegeError("root user id could be regained after the switch")

        root = NetdService(
            parseConfig(
                serviceTypes(),
                '[services.e]\ntype = "echo"\nlisten = ["tcp:0:interface=127.0.0.1"]\n',
                "t",
            ),
            stderr=stderr,
            account=ACCOUNT,
            dropPrivileges=fail,
        )
        self.patch(daemon, "chownFiles", lambda files, account: [])
        self.patch(daemon, "preload", lambda: None)
        self.addCleanup(root.stopService)
        exit = self.assertRaises(SystemExit, root.startService)
        self.assertEqual(exit.code, EX_OSERR)
        self.assertEqual(
            stderr.getvalue(),
            "netd: cannot drop privileges: root user id could be regained after the switch\n",
        )
