# -*- test-case-name: tests.test_packaging -*-
"""
What C{pip install .} installs: every package of netd's source tree (a
package left out of C{setup.cfg} works from a checkout, whose directory is
on the module search path, and is missing once installed).
"""

from __future__ import annotations

import configparser
import os

from twisted.trial.unittest import SynchronousTestCase

import netd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(netd.__file__)))


class PackagesTests(SynchronousTestCase):
    """
    C{[options] packages} in C{setup.cfg}.
    """

    def test_everyPackageListed(self) -> None:
        """
        Every directory of C{netd/} holding Python modules is listed.
        """
        parser = configparser.ConfigParser()
        parser.read(os.path.join(REPO, "setup.cfg"))
        listed = set(parser["options"]["packages"].split())
        found = set()
        for directory, subdirectories, files in os.walk(os.path.join(REPO, "netd")):
            subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
            if any(name.endswith(".py") for name in files):
                relative = os.path.relpath(directory, REPO)
                found.add(relative.replace(os.sep, "."))
        self.assertEqual(sorted(found - listed), [])
