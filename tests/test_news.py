# -*- test-case-name: tests.test_news -*-
"""
Tests for the news fragments that towncrier gathers into C{NEWS.rst}.
"""

from __future__ import annotations

import os
import re
import tomllib

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAGMENTS = os.path.join(REPO, "newsfragments")
TYPES = ("feature", "bugfix", "doc", "removal", "misc")


class FragmentTests(SynchronousTestCase):
    """
    Every fragment in C{newsfragments/} is one towncrier understands.
    """

    def test_configuredTypes(self) -> None:
        """
        C{[tool.towncrier]} in C{pyproject.toml} gathers C{newsfragments/}
        into C{NEWS.rst}, with exactly the types feature, bugfix, doc,
        removal and misc.
        """
        with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
            config = tomllib.load(f)["tool"]["towncrier"]
        self.assertEqual(config["package"], "netd")
        self.assertEqual(config["filename"], "NEWS.rst")
        self.assertEqual(config["directory"].rstrip("/"), "newsfragments")
        self.assertEqual(tuple(entry["directory"] for entry in config["type"]), TYPES)

    def test_names(self) -> None:
        """
        Every fragment is named C{<issue>.<type>} (an issue number and one of
        the configured types), or C{<issue>.<type>.<n>} when several changes of
        one issue have the same type (towncrier reads the part after the type
        as a counter, or ignores it), and says something unless it is
        C{misc}.
        """
        pattern = re.compile(
            r"^[1-9][0-9]*\.(%s)(\.[A-Za-z0-9_-]+)?$" % "|".join(TYPES)
        )
        for name in os.listdir(FRAGMENTS):
            if name.startswith("."):
                continue
            self.assertRegex(name, pattern, f"newsfragments/{name}: not <issue>.<type>")
            if not name.endswith(".misc"):
                with open(os.path.join(FRAGMENTS, name), encoding="utf-8") as f:
                    self.assertTrue(f.read().strip(), f"newsfragments/{name} is empty")

    def test_newsReleaseMarker(self) -> None:
        """
        C{NEWS.rst} has the marker towncrier inserts new releases after.
        """
        with open(os.path.join(REPO, "NEWS.rst"), encoding="utf-8") as f:
            self.assertIn(".. towncrier release notes start", f.read())
