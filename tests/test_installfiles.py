# -*- test-case-name: tests.test_installfiles -*-
"""
Tests for L{netd.installfiles}: C{netd install-files}.
"""

from __future__ import annotations

import io
import os

from twisted.trial.unittest import SynchronousTestCase

from netd.installfiles import destinations, installFiles


class InstallTests(SynchronousTestCase):
    """
    The shipped files are written, existing ones kept.
    """

    def test_writesAndKeeps(self) -> None:
        """
        Every file is written under the prefix, the units pointing at the
        given program directory; a second run, after an edit, keeps the
        edited file and says so.
        """
        prefix = os.path.abspath(self.mktemp())
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(installFiles(prefix, out, err, "/usr/bin"), 0, err.getvalue())
        places = destinations(prefix)
        self.assertEqual(
            places["netd.toml"], os.path.join(prefix, "etc", "netd", "netd.toml")
        )
        for path in places.values():
            self.assertTrue(os.path.isfile(path), path)
            self.assertIn(f"wrote {path}", out.getvalue())
        with open(places["netd.service"]) as f:
            unit = f.read()
        self.assertIn("ExecStart=/usr/bin/twistd -n", unit)
        self.assertNotIn("/opt/netd", unit)
        with open(places["netd.toml"], "w") as f:
            f.write("# mine\n")
        out = io.StringIO()
        self.assertEqual(installFiles(prefix, out, err), 0)
        with open(places["netd.toml"]) as f:
            self.assertEqual(f.read(), "# mine\n")
        self.assertIn(f"kept {places['netd.toml']} (it exists", out.getvalue())

    def test_systemPrefix(self) -> None:
        """
        With C{/}, the configuration goes to /etc/netd, the units to
        /etc/systemd/system, the man pages under /usr/local.
        """
        places = destinations("/")
        self.assertEqual(places["netd.toml"], "/etc/netd/netd.toml")
        self.assertEqual(places["netd.service"], "/etc/systemd/system/netd.service")
        self.assertEqual(places["netd.8"], "/usr/local/share/man/man8/netd.8")

    def test_cannotWrite(self) -> None:
        """
        A file that cannot be written is named, exit 73.
        """
        prefix = os.path.abspath(self.mktemp())
        with open(prefix, "w") as f:
            f.write("a file, not a directory")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(installFiles(prefix, out, err), 73)
        self.assertIn("netd install-files: cannot write", err.getvalue())
