# -*- test-case-name: tests.test_tomltext -*-
"""
Tests for L{netd.tomltext}: what it writes reads back the same.
"""

from __future__ import annotations

import datetime
import tomllib

from twisted.trial.unittest import SynchronousTestCase

from netd.tomltext import dumpDocument, tomlKey, tomlString, tomlValue


class TomlTextTests(SynchronousTestCase):
    """
    Tests for the TOML writer.
    """

    def assertRoundTrip(self, value: object) -> None:
        """
        @param value: A value; C{x = VALUE} must read back as it.
        """
        self.assertEqual(tomllib.loads(f"x = {tomlValue(value)}")["x"], value)

    def test_strings(self) -> None:
        """
        Quotes, backslashes, control characters (DEL too) and non-ASCII text
        survive.
        """
        for text in ['a "b" \\c', "tab\tnl\ncr\r\x00\x1f\x7f", "é 漢 🙂", ""]:
            self.assertRoundTrip(text)
        self.assertEqual(tomlString("\x7f"), '"\\u007f"')

    def test_scalars(self) -> None:
        """
        Booleans, integers, floats (with exponents, infinities), dates and
        times.
        """
        for value in [
            True,
            False,
            0,
            -7,
            2**62,
            1.5,
            1e300,
            -0.25,
            float("inf"),
            float("-inf"),
            datetime.date(2026, 12, 7),
            datetime.datetime(2026, 12, 7, 9, 30, 1),
            datetime.time(23, 59),
        ]:
            self.assertRoundTrip(value)
        self.assertEqual(tomlValue(float("nan")), "nan")

    def test_nested(self) -> None:
        """
        Arrays and tables nest inline, with keys quoted when they must be.
        """
        self.assertRoundTrip([1, ["a", {"b c": {"d.e": []}}], {}])
        self.assertEqual(tomlKey("a-b_1"), "a-b_1")
        self.assertEqual(tomlKey("a.b"), '"a.b"')

    def test_otherTypes(self) -> None:
        """
        A value TOML cannot hold is a L{TypeError}.
        """
        self.assertRaises(TypeError, tomlValue, object())

    def test_document(self) -> None:
        """
        A configuration-shaped document reads back equal.
        """
        document = {
            "title": "t",
            "netd": {"user": "nobody", "limits": {"max_sessions": 5}},
            "services": {
                "echo.1": {
                    "type": "echo",
                    "listen": ["tcp:7", {"address": "udp:7", "reuse_port": True}],
                    "limits": {"allow": ["10.0.0.0/8"]},
                },
                "www": {"type": "http", "headers": {"X-A": "b"}},
            },
        }
        self.assertEqual(tomllib.loads(dumpDocument(document)), document)
