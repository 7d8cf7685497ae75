# -*- test-case-name: tests.test_chat_text -*-
"""
Tests for L{netd.chat.text}: sanitising and names.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netd.chat.text import FORBIDDEN, checkName, decode, nameKey, sanitise


class SanitiseTests(SynchronousTestCase):
    """
    Tests for L{sanitise} and L{decode}.
    """

    def test_plainTextUnchanged(self) -> None:
        """
        Printable text, in any script, with emoji and combining marks, is
        returned as it is.
        """
        for text in [
            "hello, world!",
            "héllo wörld",
            "日本語 ✓ 🎉",
            "a\u0301 ok",
            "x < y & z",
        ]:
            self.assertEqual(sanitise(text), text)

    def test_csiRemovedWhole(self) -> None:
        """
        ANSI CSI sequences (colours, cursor moves, screen clearing), 7-bit
        and 8-bit, are removed with their parameters.
        """
        self.assertEqual(sanitise("\x1b[31mred\x1b[0m"), "red")
        self.assertEqual(sanitise("a\x1b[2J\x1b[1;1Hb"), "ab")
        self.assertEqual(sanitise("a\x9b31mb"), "ab")
        self.assertEqual(sanitise("tail\x1b[1;2"), "tail")

    def test_oscAndStringsRemovedWhole(self) -> None:
        """
        OSC (window title, clipboard writes, hyperlinks), DCS, PM and APC
        strings are removed up to their terminator (BEL or ST), or to the
        end of the line when unterminated.
        """
        self.assertEqual(sanitise("a\x1b]0;pwned\x07b"), "ab")
        self.assertEqual(sanitise("a\x1b]52;c;Y3VybCBldmlsfHNo\x1b\\b"), "ab")
        self.assertEqual(
            sanitise("\x1b]8;;http://evil/\x1b\\click\x1b]8;;\x1b\\"), "click"
        )
        self.assertEqual(sanitise("a\x1bPqpayload\x1b\\b"), "ab")
        self.assertEqual(sanitise("a\x9d0;title\x9cb"), "ab")
        self.assertEqual(sanitise("a\x1b]0;unterminated"), "a")

    def test_otherEscapes(self) -> None:
        """
        Other escape sequences (charset switches, keypad modes, RIS) go too.
        """
        self.assertEqual(sanitise("a\x1b(0b\x1bcc\x1b=d"), "abcd")

    def test_controlsRemoved(self) -> None:
        """
        C0 controls, DEL and C1 controls are removed; tab, CR and LF become
        spaces.
        """
        self.assertEqual(sanitise("a\x00b\x07c\x08d\x7fe\x85f"), "abcdef")
        self.assertEqual(sanitise("a\tb\rc\nd"), "a b c d")

    def test_bidiControlsRemoved(self) -> None:
        """
        Bidi overrides, embeddings, isolates and marks are removed, so a
        line cannot display reversed (e.g. a file name ending in "gnp.exe").
        """
        text = "photo\u202egnp.exe \u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c!"
        self.assertEqual(sanitise(text), "photognp.exe !")

    def test_separatorsRemoved(self) -> None:
        """
        U+2028 and U+2029 (which some clients render as line breaks) are
        removed.
        """
        self.assertEqual(sanitise("a\u2028b\u2029c"), "abc")

    def test_invalidUTF8Replaced(self) -> None:
        """
        Invalid UTF-8 decodes to U+FFFD, never an exception; an encoded C1
        control decodes and is then removed.
        """
        self.assertEqual(decode(b"ok\xff\xfe\xc3"), "ok\ufffd\ufffd\ufffd")
        self.assertEqual(sanitise(decode(b"a\xc2\x9b31mb")), "ab")
        self.assertEqual(decode(b"\xed\xa0\x80"), "\ufffd\ufffd\ufffd")

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=200))
    def test_neverForbidden(self, data: bytes) -> None:
        """
        Whatever bytes come in, the sanitised text has no control, bidi or
        separator character, and sanitising it again changes nothing.
        """
        text = sanitise(decode(data))
        self.assertIsNone(FORBIDDEN.search(text))
        self.assertEqual(sanitise(text), text)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [
                    "\x1b",
                    "[",
                    "]",
                    "\x07",
                    "\\",
                    "\x9b",
                    "\x9c",
                    "\x9d",
                    "1",
                    ";",
                    "m",
                    "a",
                    "\u202e",
                    "\n",
                ]
            ),
            max_size=40,
        )
    )
    def test_escapeSoupNeverForbidden(self, parts: list[str]) -> None:
        """
        Arbitrary mixtures of escape sequence fragments never leave a
        forbidden character behind.
        """
        self.assertIsNone(FORBIDDEN.search(sanitise("".join(parts))))


class NameTests(SynchronousTestCase):
    """
    Tests for L{nameKey} and L{checkName}.
    """

    def test_caseAndCompatibilityVariantsShareAKey(self) -> None:
        """
        Case variants, fullwidth forms, ligatures and German sharp s map to
        one key.
        """
        self.assertEqual(
            {nameKey(name) for name in ["Bob", "BOB", "bob", "ｂｏｂ", "Ｂｏｂ"]},
            {"bob"},
        )
        self.assertEqual(nameKey("ﬀoo"), nameKey("FFOO"))
        self.assertEqual(nameKey("Straße"), nameKey("STRASSE"))
        self.assertEqual(nameKey("ǅemal"), nameKey("DŽEMAL"))

    def test_displayFormIsNormalised(self) -> None:
        """
        The display form is the NFKC form, case preserved.
        """
        self.assertEqual(checkName("Ｂｏｂ", 20), "Bob")
        self.assertEqual(checkName("e\u0301mile", 20), "émile")

    def test_charset(self) -> None:
        """
        Letters (any script), digits, '-', '_' and '.' are accepted;
        spaces, controls, invisible characters and other punctuation are
        not.
        """
        for good in ["alice", "Zoë", "李雷", "x_y-z.1"]:
            self.assertEqual(checkName(good, 20), good)
        for bad in [
            "a b",
            "a\x1b",
            "a\u200bb",
            "bob\u202e",
            "<bob>",
            "a*",
            "*",
            "/nick",
        ]:
            with self.assertRaises(ValueError, msg=repr(bad)):
                checkName(bad, 20)

    def test_length(self) -> None:
        """
        Names are 1 to C{maxLength} characters, counted after
        normalisation.
        """
        self.assertEqual(checkName("a" * 5, 5), "aaaaa")
        with self.assertRaises(ValueError):
            checkName("a" * 6, 5)
        with self.assertRaises(ValueError):
            checkName("", 5)
        self.assertEqual(checkName("ｂｏｂ", 3), "bob")
