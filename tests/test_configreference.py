# -*- test-case-name: tests.test_configreference -*-
"""
Tests for L{netd.configreference}: the configuration reference is rendered
from the settings and the committed C{docs/configuration.md} is not stale.
"""

from __future__ import annotations

import io
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from netd import configreference
from netd.config import GLOBAL_SETTINGS
from netd.limits import LIMIT_SETTINGS
from netd.services import serviceTypes
from netd.settings import Setting, integer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(REPO, "docs", "configuration.md")


class CommittedReferenceTests(SynchronousTestCase):
    """
    The committed C{docs/configuration.md}.
    """

    def test_notStale(self) -> None:
        """
        C{docs/configuration.md} is exactly what L{configreference.render}
        produces from the settings; the failure says how to regenerate it.
        """
        with open(REFERENCE, encoding="utf-8") as f:
            committed = f.read()
        self.assertTrue(
            committed == configreference.render(),
            f"docs/configuration.md is stale; run: {configreference.REGENERATE}",
        )

    def test_everyKeyDocumented(self) -> None:
        """
        Every C{[netd]} key, every limit and every key of every service type
        appears in the committed reference as a table row, with its
        description.
        """
        with open(REFERENCE, encoding="utf-8") as f:
            committed = f.read()
        settings = list(GLOBAL_SETTINGS) + list(LIMIT_SETTINGS)
        for serviceType in serviceTypes().values():
            settings.extend(serviceType.settings)
            self.assertIn(f'`type = "{serviceType.name}"`', committed)
        for setting in settings:
            self.assertIn(f"| `{setting.key}` |", committed, setting.key)
            self.assertIn(" ".join(setting.help.split()), committed, setting.key)


class RenderTests(SynchronousTestCase):
    """
    Tests for L{configreference.render} and its parts.
    """

    def test_descriptionAppears(self) -> None:
        """
        A setting's description, type and default appear in its row.
        """
        table = configreference.settingsTable(
            [Setting("max_things", 5, integer(1, 9), "most things at once")]
        )
        self.assertIn(
            "| `max_things` | an integer (1 to 9) | `5` | most things at once |",
            table,
        )

    def test_newSettingChangesOutput(self) -> None:
        """
        Adding a setting changes the rendering, so the committed file would
        be stale.
        """
        before = configreference.render()
        extra = Setting("brand_new_key", False, lambda v: v, "a key added later")
        after = configreference.render(globalSettings=GLOBAL_SETTINGS + (extra,))
        self.assertNotEqual(before, after)
        self.assertIn("| `brand_new_key` |", after)
        self.assertNotIn("brand_new_key", before)

    def test_allTypes(self) -> None:
        """
        Every registered service type has a section.
        """
        text = configreference.render()
        for name in serviceTypes():
            self.assertIn(f'### `type = "{name}"`', text)

    def test_formatValue(self) -> None:
        """
        Defaults are written as they would be in TOML.
        """
        self.assertEqual(configreference.formatValue(None), "none")
        self.assertEqual(configreference.formatValue(True), "true")
        self.assertEqual(configreference.formatValue(60.0), "60")
        self.assertEqual(configreference.formatValue(0.5), "0.5")
        self.assertEqual(configreference.formatValue('a"b'), '"a\\"b"')
        self.assertEqual(configreference.formatValue(("x", "y")), '["x", "y"]')
        self.assertEqual(configreference.formatValue((), "a table"), "{}")


class MainTests(SynchronousTestCase):
    """
    Tests for L{configreference.main}, the command line.
    """

    def runMain(self, *args: str) -> tuple[int, str, str]:
        """
        Run L{configreference.main} with captured output.

        @param args: The arguments.
        @return: The status, standard output and standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        status = configreference.main(list(args))
        return status, out.getvalue(), err.getvalue()

    def test_print(self) -> None:
        """
        Without arguments it prints the reference.
        """
        self.assertEqual(self.runMain(), (0, configreference.render(), ""))

    def test_checkCurrent(self) -> None:
        """
        C{--check FILE} exits 0, silently, when the file is current.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(configreference.render())
        self.assertEqual(self.runMain("--check", path), (0, "", ""))

    def test_checkStale(self) -> None:
        """
        C{--check FILE} exits 1 naming the file and the command to
        regenerate it when the file is stale.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("old\n")
        self.assertEqual(
            self.runMain("--check", path),
            (
                1,
                "",
                f"{path} is stale: it differs from the settings' descriptions; "
                f"run: {configreference.REGENERATE}\n",
            ),
        )

    def test_checkMissing(self) -> None:
        """
        C{--check FILE} exits 1 when the file cannot be read.
        """
        status, out, err = self.runMain("--check", self.mktemp())
        self.assertEqual((status, out), (1, ""))
        self.assertIn(configreference.REGENERATE, err)

    def test_usage(self) -> None:
        """
        Other arguments are a usage error, status 2.
        """
        self.assertEqual(
            self.runMain("--bogus"),
            (2, "", "usage: python -m netd.configreference [--check FILE]\n"),
        )
