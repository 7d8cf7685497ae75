# -*- test-case-name: tests.test_chat_text -*-
"""
What user text may contain once netd relays it.

Everything a client sends is decoded as UTF-8 (invalid bytes become
U+FFFD, never an exception) and sanitised before anyone else sees it:

  - ANSI/ECMA-48 escape sequences are removed whole: CSI (C{ESC [} ... and
    the 8-bit U+009B), OSC, DCS, SOS, PM and APC strings (up to their
    terminator, or the end of the line), and every other C{ESC} sequence;
  - every remaining C0 and C1 control character and DEL is removed, except
    that a tab, carriage return or line feed inside a line becomes a space;
  - bidirectional embedding, override and isolate controls (U+202A-U+202E,
    U+2066-U+2069) and the bidi marks (U+200E, U+200F, U+061C) are removed,
    as are the line and paragraph separators (U+2028, U+2029).

Nicknames and room names are compared by a key: NFKC normalisation then case
folding (then NFKC again, as Unicode's NFKC_Casefold does), so that
C{"Bob"}, C{"BOB"} and C{"ｂｏｂ"} (fullwidth) are one name.
"""

from __future__ import annotations

import re
import unicodedata

#: Escape sequences, removed whole.
_ESCAPES = re.compile(
    # OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \ or U+009C),
    # or to the end of the line when unterminated.
    r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    # CSI: parameters, intermediates, one final byte.
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    # Any other escape: intermediates and one final byte.
    r"|\x1b[ -/]*[0-~]?",
    re.DOTALL,
)

#: Single characters removed: C0 (except tab, CR, LF), DEL, C1, bidi
#: controls and marks, line and paragraph separators.
_CONTROLS = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)

#: Whitespace controls that become a space.
_SPACES = re.compile("[\t\n\r]")

#: What a sanitised string never contains (for tests and assertions).
FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)

#: Characters allowed in names besides letters and digits.
NAME_PUNCTUATION = frozenset("-_.")


def decode(data: bytes) -> str:
    """
    Decode bytes from a client.

    @param data: Raw bytes, valid UTF-8 or not.
    @return: The text, with each invalid sequence replaced by U+FFFD.
    """
    return data.decode("utf-8", "replace")


def sanitise(text: str) -> str:
    """
    Make user text safe to show on anyone's terminal or page.

    @param text: Decoded text (one line, or a line with stray line breaks).
    @return: The text without escape sequences, control characters or bidi
        controls (see the module docstring); tabs and stray line breaks
        become spaces.
    """
    # Fast path: printable text (letters, digits, punctuation, symbols and
    # the ASCII space) contains nothing to remove: every removed character
    # is in the Unicode categories Cc, Cf, Zl or Zp.
    if text.isprintable():
        return text
    text = _ESCAPES.sub("", text)
    text = _SPACES.sub(" ", text)
    return _CONTROLS.sub("", text)


def nameKey(name: str) -> str:
    """
    The key under which names are compared.

    @param name: A nickname or room name.
    @return: Its NFKC case-folded form.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def checkName(name: str, maxLength: int, what: str = "nickname") -> str:
    """
    Validate a nickname or room name and return its display form.

    @param name: The name as the client typed it (decoded, not sanitised).
    @param maxLength: The most characters it may have once normalised.
    @param what: C{"nickname"} or C{"room name"}, for the message.
    @return: The NFKC normalised name, which is what others see.
    @raise ValueError: With a message for the client, if it is empty, too
        long, or has characters other than letters, digits, C{-}, C{_} and
        C{.}.
    """
    normalised = unicodedata.normalize("NFKC", name)
    if not normalised:
        raise ValueError(f"a {what} cannot be empty")
    if len(normalised) > maxLength:
        raise ValueError(f"a {what} has at most {maxLength} characters")
    for character in normalised:
        if not (character.isalnum() or character in NAME_PUNCTUATION):
            raise ValueError(f"a {what} has only letters, digits, '-', '_' and '.'")
    if not nameKey(normalised):
        raise ValueError(f"a {what} cannot be empty")
    return normalised
