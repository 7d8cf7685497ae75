# -*- test-case-name: tests.test_checks -*-
"""
Tests for L{netd.checks} and the checks C{--check} makes beyond the file:
root with no user, and paths the service user cannot read.
"""

from __future__ import annotations

import io
import os
import pwd
from textwrap import dedent

from twisted.trial.unittest import SynchronousTestCase

from netd.checks import NeededPath, accessProblems, neededPaths, rootProblem
from netd.config import loadConfig
from netd.privileges import resolveAccount
from netd.services import serviceTypes
from netd.tap import Options
from tests.support import writeSelfSignedCertificate


def nobody() -> pwd.struct_passwd:
    """
    @return: The C{nobody} account, the non-root user the tests switch to.
    """
    return pwd.getpwnam("nobody")


class ChecksTestCase(SynchronousTestCase):
    """
    Helpers.
    """

    def writeConfig(self, text: str) -> str:
        """
        @param text: TOML, indented as in the test.
        @return: The path of a file holding it (readable by anyone).
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(dedent(text))
        os.chmod(path, 0o644)
        return path

    def privateDirectory(self) -> str:
        """
        @return: A directory only its owner (root, in CI) can use.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        os.chmod(path, 0o700)
        return path

    def check(self, *argv: str) -> tuple[int | str | None, str, str]:
        """
        Run C{--check}.

        @param argv: More arguments.
        @return: The exit status, standard output and standard error.
        """
        options = Options()
        options.stdout, options.stderr = io.StringIO(), io.StringIO()
        e = self.assertRaises(SystemExit, options.parseOptions, ["--check", *argv])
        return e.code, options.stdout.getvalue(), options.stderr.getvalue()


class NeededPathsTests(ChecksTestCase):
    """
    L{neededPaths} finds what services read.
    """

    def test_rootAndKeys(self) -> None:
        """
        An http service's C{root} (a directory) and the key and certificate
        of its C{ssl:} listener.
        """
        certificates = os.path.abspath(self.mktemp())
        os.makedirs(certificates)
        key, cert = writeSelfSignedCertificate(certificates)
        www = os.path.abspath(self.mktemp())
        os.makedirs(www)
        config = loadConfig(
            serviceTypes(),
            self.writeConfig(f"""
                [services.web]
                type = "http"
                root = "{www}"
                listen = ["ssl:0:privateKey={key}:certKey={cert}"]
                """),
        )
        self.assertEqual(
            neededPaths(config),
            [
                NeededPath("services.web.root", www, True),
                NeededPath("services.web.listen (privateKey)", key, False),
                NeededPath("services.web.listen (certKey)", cert, False),
            ],
        )


class AccessTests(ChecksTestCase):
    """
    L{accessProblems} checks as the account netd switches to.
    """

    def test_asOtherUser(self) -> None:
        """
        As root, a directory only root can list is a problem for C{nobody},
        named with the setting, the path, the user and the cause; one
        anybody can list is not.
        """
        if os.geteuid() != 0:
            raise self.skipTest("needs root to switch to another user (CI is root)")
        private = self.privateDirectory()
        public = os.path.abspath(self.mktemp())
        os.makedirs(public)
        os.chmod(os.path.dirname(public), 0o755)
        os.chmod(public, 0o755)
        account = resolveAccount("nobody", None)
        problems = accessProblems(
            [
                NeededPath("services.web.root", private, True),
                NeededPath("services.other.root", public, True),
            ],
            account,
        )
        self.assertEqual(
            problems,
            [
                f"services.web.root: user nobody cannot list {private}: "
                "Permission denied"
            ],
        )

    def test_asSelf(self) -> None:
        """
        Without an account, the current process checks: a missing file is a
        problem.
        """
        missing = os.path.abspath(self.mktemp())
        self.assertEqual(
            accessProblems([NeededPath("k", missing, False)], None),
            [f"k: netd's user cannot read {missing}: No such file or directory"],
        )

    def test_switchFails(self) -> None:
        """
        If the child cannot switch, every path says so.
        """
        if os.geteuid() != 0:
            raise self.skipTest("the check forks only as root")

        def refuse(account: object) -> None:
            raise OSError("refused")

        account = resolveAccount("nobody", None)
        assert account is not None
        (line,) = accessProblems([NeededPath("k", "/", True)], account, refuse)
        self.assertIn("cannot switch to nobody", line)


class RootProblemTests(ChecksTestCase):
    """
    L{rootProblem} is start-up's refusal to run as root.
    """

    def test_cases(self) -> None:
        """
        Root with no account is a problem naming the key and the fixes;
        an account, C{--allow-root} or a non-root start is not.
        """
        config = loadConfig(serviceTypes(), None)
        line = rootProblem(config, False, 0, None)
        assert line is not None
        self.assertIn("netd.user: started as root", line)
        self.assertIn("--allow-root", line)
        self.assertIsNone(rootProblem(config, True, 0, None))
        self.assertIsNone(rootProblem(config, False, 1000, None))
        self.assertIsNone(rootProblem(config, False, 0, resolveAccount("nobody", None)))


class CheckCommandTests(ChecksTestCase):
    """
    C{--check} reports what would stop netd from starting or serving.
    """

    def test_rootWithoutUser(self) -> None:
        """
        As root, a file with no C{user} fails C{--check} with exit 78, as
        start-up would; C{--allow-root} passes.
        """
        if os.geteuid() != 0:
            raise self.skipTest("needs root (CI is root)")
        path = self.writeConfig("""
            [services.echo]
            type = "echo"
            listen = ["tcp:0:interface=127.0.0.1"]
            """)
        code, out, err = self.check("--config", path)
        self.assertEqual(code, 78)
        self.assertIn("netd.user: started as root", err)
        self.assertIn("netd: 1 problem; the file is valid but netd would not", err)
        self.assertEqual(out, "")
        self.assertEqual(self.check("--allow-root", "--config", path)[0], 0)

    def test_unreadableRoot(self) -> None:
        """
        As root with C{user = "nobody"}, a document root nobody cannot list
        fails C{--check} (every request would get 403).
        """
        if os.geteuid() != 0:
            raise self.skipTest("needs root to switch to another user (CI is root)")
        private = self.privateDirectory()
        path = self.writeConfig(f"""
            [netd]
            user = "nobody"
            [services.web]
            type = "http"
            root = "{private}"
            listen = ["tcp:0:interface=127.0.0.1"]
            """)
        code, out, err = self.check("--config", path)
        self.assertEqual(code, 78, err)
        self.assertIn(
            f"netd: {path}: services.web.root: user nobody cannot list {private}: "
            "Permission denied\n",
            err,
        )
        os.chmod(private, 0o755)
        os.chmod(os.path.dirname(private), 0o755)
        code, out, err = self.check("--config", path)
        self.assertEqual(code, 0, err)
