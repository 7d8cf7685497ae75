# -*- test-case-name: tests.test_manpages -*-
"""
The files netd ships inside its package (C{netd/data/}), for C{netd
install-files} and the Debian package: generated or copied from their one
source, so that they cannot drift.

    - C{netd.8}: from the command lines themselves (L{netd.cli.NetdOptions}
      and its subcommands, L{netd.tap.Options}: the same text as
      C{--help});
    - C{netd.toml.5}: from the configuration reference
      (L{netd.configreference.render}, the source of
      C{docs/configuration.md}), turned from Markdown into roff;
    - C{netd.toml}, C{netd.service}, C{netd.socket}: copies of
      C{etc/netd.toml} and C{etc/systemd/}, the files people edit.

Regenerate them with::

    python -m netd.manpages --write

and check them (as C{tests.test_manpages} does) with::

    python -m netd.manpages --check
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from twisted.python import usage

from netd import __version__
from netd.cli import NetdOptions
from netd.configreference import render
from netd.tap import Options as TapOptions

REGENERATE = "python -m netd.manpages --write"
PACKAGE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(PACKAGE, "data")
TREE = os.path.dirname(PACKAGE)

# Files copied verbatim: data name -> path in the tree.
COPIES = {
    "netd.toml": os.path.join("etc", "netd.toml"),
    "netd.service": os.path.join("etc", "systemd", "netd.service"),
    "netd.socket": os.path.join("etc", "systemd", "netd.socket"),
}


def roffText(text: str) -> str:
    """
    Escape text for roff and turn Markdown's inline marks into fonts.

    @param text: One line of Markdown.
    @return: The roff line.
    """
    text = text.replace("\\", "\\e")
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", text)
    text = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"\\fI\1\\fR", text)
    text = text.replace("-", "\\-")
    if text[:1] in (".", "'"):
        text = "\\&" + text
    return text


def markdownToRoff(markdown: str) -> str:
    """
    Turn the configuration reference's Markdown (headings, paragraphs,
    tables, fenced code, HTML comments) into man page body text.

    @param markdown: The Markdown.
    @return: roff.
    """
    out: list[str] = []
    lines = markdown.splitlines()
    header: list[str] | None = None
    inCode = inComment = False
    for line in lines:
        if inComment:
            inComment = "-->" not in line
            continue
        if line.startswith("<!--"):
            inComment = "-->" not in line
            continue
        if line.startswith("```"):
            out.append(".EE" if inCode else ".EX")
            inCode = not inCode
            continue
        if inCode:
            out.append(roffText(line).replace("\\fB", "").replace("\\fR", ""))
            continue
        if line.startswith("# "):
            continue
        if line.startswith("## "):
            out.append(f".SH {roffText(line[3:]).upper()}")
            continue
        if line.startswith("### "):
            out.append(f".SS {roffText(line[4:])}")
            continue
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not all(set(cell) <= {"-", ":"} for cell in cells):
                out.append(".TP")
                out.append(roffText(cells[0]))
                extra = [
                    f"{name}: {value}"
                    for name, value in zip(header[1:-1], cells[1:-1])
                    if value
                ]
                out.append(
                    roffText(cells[-1] + (f" ({'; '.join(extra)})" if extra else ""))
                )
            continue
        header = None
        if not line.strip():
            out.append(".PP")
            continue
        if line.startswith("- "):
            out.append(".IP \\(bu 2")
            line = line[2:]
        out.append(roffText(line))
    cleaned: list[str] = []
    for line in out:
        if line == ".PP" and (
            not cleaned or cleaned[-1].startswith((".PP", ".SH", ".SS", ".TP"))
        ):
            continue
        cleaned.append(line)
    return "\n".join(cleaned) + "\n"


def _options(options: usage.Options) -> list[str]:
    """
    @param options: A parsed-options class instance.
    @return: roff for its flags and parameters.
    """
    out = []
    for long, short, default, doc, *rest in getattr(options, "optParameters", []):
        flag = f"\\fB\\-\\-{roffText(long)}\\fR \\fIVALUE\\fR" + (
            f", \\fB\\-{short}\\fR" if short else ""
        )
        if long == "control" and default:
            # Computed per user at run time (netd.control.defaultControlPath).
            default = (
                "/run/netd/control.sock as root, else netd-UID.sock in "
                "$XDG_RUNTIME_DIR or /tmp"
            )
        suffix = (
            f" (default: {roffText(str(default))})" if default not in (None, "") else ""
        )
        out += [".TP", flag, roffText(doc) + suffix]
    for long, short, doc in getattr(options, "optFlags", []):
        flag = f"\\fB\\-\\-{roffText(long)}\\fR" + (
            f", \\fB\\-{short}\\fR" if short else ""
        )
        out += [".TP", flag, roffText(doc)]
    return out


def _paragraph(text: str) -> list[str]:
    """
    @param text: A long description (one paragraph).
    @return: roff lines.
    """
    return [roffText(text)]


def netdPage() -> str:
    """
    @return: C{netd(8)}, from the command lines' own help.
    """
    netd = NetdOptions()
    tap = TapOptions()
    out = [
        f'.TH NETD 8 "" "netd {__version__}" "System Administration"',
        ".SH NAME",
        "netd \\- multi-service network daemon (echo, discard, http, chat) on Twisted",
        ".SH SYNOPSIS",
        "\\fBnetd\\fR \\fICOMMAND\\fR [\\fIoptions\\fR]",
        ".br",
        f"\\fBtwistd\\fR [\\fItwistd options\\fR] \\fBnetd\\fR {roffText(tap.synopsis)}",
        ".SH DESCRIPTION",
        *_paragraph(netd.longdesc),
        ".SH COMMANDS",
    ]
    commands: list[Any] = list(NetdOptions.subCommands)
    for name, _, optionsClass, doc in commands:
        sub: Any = optionsClass()
        synopsis = getattr(optionsClass, "synopsis", "") or ""
        out += [
            ".SS " + f"netd {roffText(name)} {roffText(synopsis)}".strip(),
            roffText(doc),
        ]
        if getattr(optionsClass, "longdesc", ""):
            out += [".PP", *_paragraph(optionsClass.longdesc)]
        out += _options(sub)
    out += [
        ".SH TWISTD NETD",
        "The same daemon as a twistd plugin; \\fBnetd run\\fR is \\fBtwistd \\-n "
        "\\-\\-pidfile= \\-\\-logger netd.logsetup.observer netd\\fR with a control "
        "socket.",
        ".PP",
        *_paragraph(tap.longdesc),
        *_options(tap),
        ".SH FILES",
        ".TP",
        "\\fI/etc/netd/netd.toml\\fR",
        "The configuration (see \\fBnetd.toml\\fR(5)); \\fBnetd install\\-files\\fR "
        "writes the commented example there.",
        ".TP",
        "\\fI/run/netd/control.sock\\fR",
        "The control socket of \\fBnetd run\\fR started as root or by systemd.",
        ".SH SEE ALSO",
        "\\fBnetd.toml\\fR(5), \\fBtwistd\\fR(1), \\fBsystemd.service\\fR(5)",
    ]
    return "\n".join(out) + "\n"


def configPage() -> str:
    """
    @return: C{netd.toml(5)}, from the configuration reference.
    """
    head = [
        f'.TH NETD.TOML 5 "" "netd {__version__}" "File Formats"',
        ".SH NAME",
        "netd.toml \\- netd configuration file",
        ".SH DESCRIPTION",
    ]
    return (
        "\n".join(head)
        + "\n"
        + markdownToRoff(render())
        + ".SH SEE ALSO\n\\fBnetd\\fR(8)\n"
    )


def expected() -> dict[str, bytes]:
    """
    @return: Every file of C{netd/data/}, as it should be.
    """
    files = {"netd.8": netdPage().encode(), "netd.toml.5": configPage().encode()}
    for name, path in COPIES.items():
        with open(os.path.join(TREE, path), "rb") as f:
            files[name] = f.read()
    return files


def stale() -> list[str]:
    """
    @return: The files of C{netd/data/} that differ from L{expected} (or
        are missing).
    """
    names = []
    for name, content in expected().items():
        try:
            with open(os.path.join(DATA, name), "rb") as f:
                current: bytes | None = f.read()
        except OSError:
            current = None
        if current != content:
            names.append(name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """
    C{python -m netd.manpages --write | --check}.

    @param argv: The arguments.
    @return: The exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--write"]:
        os.makedirs(DATA, exist_ok=True)
        for name, content in expected().items():
            with open(os.path.join(DATA, name), "wb") as f:
                f.write(content)
        return 0
    if args == ["--check"]:
        names = stale()
        if names:
            sys.stderr.write(
                f"netd/data: {', '.join(names)} out of date: run {REGENERATE}\n"
            )
            return 1
        return 0
    sys.stderr.write("usage: python -m netd.manpages --write | --check\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
