# -*- test-case-name: tests.test_manpages -*-
"""
Tests for L{netd.manpages}: the files shipped in C{netd/data/} are current.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from netd import manpages
from netd.configreference import GLOBAL_SETTINGS


class DataFilesTests(SynchronousTestCase):
    """
    C{netd/data/} matches its sources.
    """

    def test_current(self) -> None:
        """
        Every shipped file equals what its source gives (the copies of
        C{etc/} byte for byte, the man pages as generated); otherwise the
        failure names the command that regenerates them.
        """
        self.assertEqual(
            manpages.stale(), [], f"netd/data is stale: run {manpages.REGENERATE}"
        )

    def test_checkNamesStale(self) -> None:
        """
        C{--check} exits 1 naming a file that differs.
        """
        self.patch(manpages, "DATA", os.path.abspath(self.mktemp()))
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        self.assertEqual(manpages.main(["--check"]), 1)
        self.assertIn("netd.8", stderr.getvalue())
        self.assertIn(manpages.REGENERATE, stderr.getvalue())

    def test_sources(self) -> None:
        """
        C{netd(8)} has every command and C{twistd netd}'s options;
        C{netd.toml(5)} every C{[netd]} key.
        """
        page = manpages.netdPage()
        for command in ("run", "check", "status", "reload", "stop", "install\\-files"):
            self.assertIn(f".SS netd {command}", page)
        self.assertIn("\\fB\\-\\-allow\\-root\\fR", page)
        config = manpages.configPage()
        for setting in GLOBAL_SETTINGS:
            self.assertIn(manpages.roffText(setting.key), config)

    def test_manRenders(self) -> None:
        """
        C{man} renders both pages without a warning.
        """
        if shutil.which("man") is None:
            raise self.skipTest("man is missing (Debian package man-db)")
        for name in ("netd.8", "netd.toml.5"):
            done = subprocess.run(
                ["man", "--warnings", "-l", os.path.join(manpages.DATA, name)],
                capture_output=True,
                text=True,
                env=dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0"),
            )
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertEqual(done.stderr, "", name)
