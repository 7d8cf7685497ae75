# -*- test-case-name: tests.test_installfiles -*-
"""
C{netd install-files}: write the deployment files shipped in the package
(C{netd/data/}, see L{netd.manpages}) where a system expects them, never
overwriting a file that exists.

With C{--prefix /}: C{/etc/netd/netd.toml}, C{/etc/systemd/system/netd.service}
and C{netd.socket}, C{/usr/local/share/man/man8/netd.8} and
C{man5/netd.toml.5}. With any other prefix P (a staging tree, a package
build): C{P/etc/netd/netd.toml}, C{P/lib/systemd/system/}, C{P/share/man/}.
The units' C{/opt/netd/bin/} is replaced by the directory of this
installation's programs (where C{netd} and C{twistd} are).
"""

from __future__ import annotations

import os
import sysconfig
from typing import TextIO

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
EX_CANTCREAT = 73
UNIT_BIN = "/opt/netd/bin/"


def destinations(prefix: str) -> dict[str, str]:
    """
    @param prefix: The installation prefix.
    @return: Where each data file goes, by its name in C{netd/data/}.
    """
    root = os.path.abspath(prefix)
    if root == "/":
        units = "/etc/systemd/system"
        man = "/usr/local/share/man"
    else:
        units = os.path.join(root, "lib", "systemd", "system")
        man = os.path.join(root, "share", "man")
    return {
        "netd.toml": os.path.join(root, "etc", "netd", "netd.toml"),
        "netd.service": os.path.join(units, "netd.service"),
        "netd.socket": os.path.join(units, "netd.socket"),
        "netd.8": os.path.join(man, "man8", "netd.8"),
        "netd.toml.5": os.path.join(man, "man5", "netd.toml.5"),
    }


def content(name: str, binDirectory: str | None = None) -> bytes:
    """
    @param name: A data file's name.
    @param binDirectory: The directory of netd's programs (this
        installation's scripts directory if L{None}).
    @return: What to write: the file, with the units pointing at
        C{binDirectory}.
    """
    with open(os.path.join(DATA, name), "rb") as f:
        data = f.read()
    if name.endswith((".service", ".socket")):
        directory = binDirectory or sysconfig.get_path("scripts")
        data = data.replace(UNIT_BIN.encode(), directory.rstrip("/").encode() + b"/")
    return data


def installFiles(
    prefix: str, stdout: TextIO, stderr: TextIO, binDirectory: str | None = None
) -> int:
    """
    Write every data file under C{prefix}, keeping existing ones.

    @param prefix: The installation prefix.
    @param stdout: Where each written or kept file is named.
    @param stderr: Where failures go.
    @param binDirectory: See L{content}.
    @return: 0, or 73 (EX_CANTCREAT) if a file could not be written.
    """
    status = 0
    for name, path in destinations(prefix).items():
        if os.path.lexists(path):
            stdout.write(f"kept {path} (it exists; the shipped one is not written)\n")
            continue
        try:
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(content(name, binDirectory))
        except OSError as e:
            stderr.write(
                f"netd install-files: cannot write {path}: {e.strerror or e}\n"
            )
            status = EX_CANTCREAT
            continue
        stdout.write(f"wrote {path}\n")
    return status
