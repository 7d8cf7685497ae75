# -*- test-case-name: tests.test_checks -*-
"""
The start-up checks that need the running system, not just the file: for
C{twistd netd --check} (and C{netd check}), so that a configuration it
calls valid also starts, and serves.

    - started as root with no C{user} to switch to (and root not allowed),
      netd refuses to start (L{netd.tap.refuseRoot}): L{rootProblem};
    - the files and directories a service reads at run time (an http
      service's C{root}, the TLS key and certificate of C{ssl:} listeners,
      re-read on reload) must be readable by the account netd switches to,
      not just by root: L{accessProblems} checks them as that account, in a
      child process that switches to it (so groups, ACLs and every
      directory on the way count, exactly as for netd itself).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from attrs import frozen

from netd.config import NetdConfig
from netd.descriptions import splitDescription
from netd.privileges import Account, switchAccount


@frozen
class NeededPath:
    """
    A path a service reads at run time.

    @ivar setting: Where it comes from, for the message (e.g.
        C{services.web.root}).
    @ivar path: The path.
    @ivar directory: Whether it is a directory to list and enter (else a
        file to read).
    """

    setting: str
    path: str
    directory: bool


def neededPaths(config: NetdConfig) -> list[NeededPath]:
    """
    Every path the services of a configuration read at run time: what their
    types declare (L{ServiceType.readPaths<netd.servicetype.ServiceType>}),
    and the key and certificate of every C{ssl:} listener.

    @param config: The configuration.
    @return: The paths, in file order.
    """
    paths = []
    for service in config.services:
        declared = service.serviceType.readPaths
        if declared is not None:
            for key, path, directory in declared(service.settings):
                paths.append(
                    NeededPath(f"services.{service.name}.{key}", path, directory)
                )
        for listener in service.listeners:
            args, kwargs = splitDescription(listener.description)
            if args[:1] != ["ssl"]:
                continue
            for key in ("privateKey", "certKey"):
                if key in kwargs:
                    paths.append(
                        NeededPath(
                            f"services.{service.name}.listen ({key})",
                            kwargs[key],
                            False,
                        )
                    )
    return paths


def _why(path: NeededPath) -> str | None:
    """
    Try to use a path as the current process's account.

    @param path: The path.
    @return: L{None} if it can be used, else why not (the OS's words).
    """
    try:
        if path.directory:
            os.listdir(path.path)
        else:
            with open(path.path, "rb") as f:
                f.read(1)
    except OSError as e:
        return e.strerror or str(e)
    return None


def accessProblems(
    paths: Iterable[NeededPath],
    account: Account | None,
    switch: Callable[[Account], None] = switchAccount,
) -> list[str]:
    """
    Check that every path can be used by the account netd will run as.

    With an account (netd running as root, about to switch), the checks run
    in a child process that switches to it first: the answer is the one
    netd itself will get. Without one, they run as the current process.

    @param paths: The paths (L{neededPaths}).
    @param account: The account netd switches to, or L{None}.
    @param switch: Switches the child to the account (replaced in tests).
    @return: One line per unusable path: the setting, the path, the account
        and the cause.
    """
    paths = list(paths)
    if not paths:
        return []
    if account is None:
        causes = [_why(p) for p in paths]
        who = "netd's user"
    else:
        causes = _asAccount(paths, account, switch)
        who = f"user {account.name}"
    return [
        f"{p.setting}: {who} cannot {'list' if p.directory else 'read'} "
        f"{p.path}: {cause}"
        for p, cause in zip(paths, causes)
        if cause is not None
    ]


def _asAccount(
    paths: list[NeededPath], account: Account, switch: Callable[[Account], None]
) -> list[str | None]:
    """
    Run L{_why} for each path in a child process switched to an account.

    A child, because switching users is one way: the checking process keeps
    root. (Twisted's process API needs a reactor; this runs before any.)

    @param paths: The paths.
    @param account: The account.
    @param switch: Switches the child to the account.
    @return: The cause for each path, or L{None} where it can be used.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child; its answers are tested)
        status = 0
        try:
            os.close(read)
            try:
                switch(account)
                lines = [_why(p) or "" for p in paths]
            except Exception as e:
                lines = [f"cannot switch to {account.describe()}: {e}"] * len(paths)
            os.write(write, "\0".join(lines).encode("utf-8", "replace"))
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    answers = b"".join(chunks).decode("utf-8").split("\0")
    if len(answers) != len(paths):
        return ["the checking process failed"] * len(paths)
    return [answer or None for answer in answers]


def rootProblem(
    config: NetdConfig, allowRoot: bool, euid: int, account: Account | None
) -> str | None:
    """
    The refusal start-up would make: root with no account to switch to.

    @param config: The configuration.
    @param allowRoot: C{--allow-root} was given.
    @param euid: The effective uid netd would start with.
    @param account: The account netd switches to (configured or twistd's
        C{--uid}), or L{None}.
    @return: The problem, or L{None}.
    """
    if euid != 0 or config.allowRoot or allowRoot:
        return None
    if account is not None and account.uid != 0:
        return None
    return (
        f"{config.source}: netd.user: started as root, netd refuses to run "
        'with no user to switch to: set user = "NAME" in [netd] (netd binds, '
        "then drops root), or allow_root = true, or pass --allow-root"
    )
