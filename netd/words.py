# -*- test-case-name: tests.test_words -*-
"""
Counted nouns in netd's messages: C{1 service}, C{2 services}.
"""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """
    @param count: How many.
    @param noun: The noun, singular (C{"service"}).
    @param many: Its plural if it is not C{noun + "s"}.
    @return: e.g. C{"1 service"}, C{"0 services"}, C{"2 processes"}.
    """
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {many if many is not None else noun + 's'}"
