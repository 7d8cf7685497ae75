# -*- test-case-name: tests.test_privileges -*-
"""
Dropping root for good after binding.

twistd switches users itself (C{--uid}/C{--gid}, which L{netd.tap} fills
from C{[netd] user}/C{group}): in C{UnixApplicationRunner.startApplication}
it calls C{privilegedStartService} as root, then C{shedPrivileges}
(C{setgid}, C{initgroups} with the user's own groups, C{setuid}), then
C{startService}. That switch is not enough for a daemon that serves the
network: it leaves C{PR_SET_NO_NEW_PRIVS} unset and checks nothing (and
C{--euid} keeps the saved uid 0). So netd:

    - in C{privilegedStartService}, as root, after binding: hands the
      pidfile and the log files to the account (L{chownFiles}) and imports
      what it needs later (L{preload});
    - in C{startService}, after twistd's switch: L{dropPrivileges} switches
      itself if nobody did (supplementary groups, then group, then user,
      each real, effective and saved; L{switchAccount}), then proves there
      is no way back (L{verifyDropped}: all ids, exactly the account's
      groups, C{setuid(0)} fails, no capability left) and sets
      C{PR_SET_NO_NEW_PRIVS}. Any failure ends start-up (status 71).
"""

from __future__ import annotations

import ctypes
import errno
import grp
import importlib
import os
import pwd
from typing import Any

from attrs import frozen

PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39

# Imported before the drop: after it the interpreter may no longer be able
# to read its own library (a Python installed under a private home, a
# chroot), and these are first needed later (reload, shutdown, logging).
PRELOAD = (
    "json",
    "tomllib",
    "syslog",
    "twisted.python.syslog",
    "twisted.python.logfile",
    "twisted.internet.endpoints",
    "twisted.internet.ssl",
    "twisted.protocols.tls",
    "netd.config",
    "netd.drain",
    "netd.logs",
    "netd.logsetup",
    "netd.reload",
    "encodings.idna",
)


class PrivilegeError(Exception):
    """
    Privileges could not be dropped, or could be regained.
    """


@frozen
class Account:
    """
    The account netd runs as after binding.

    @ivar uid: The user id.
    @ivar gid: The group id.
    @ivar groups: The supplementary groups: the user's own (from the group
        database), always including L{gid}.
    @ivar name: The user name, or the uid in decimal if it has no entry.
    """

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str

    def describe(self) -> str:
        """
        @return: e.g. C{nobody (uid 65534, gid 65534, groups 65534)}.
        """
        groups = ",".join(map(str, self.groups))
        return f"{self.name} (uid {self.uid}, gid {self.gid}, groups {groups})"


def resolveAccount(
    user: str | None,
    group: str | None,
    uid: int | None = None,
    gid: int | None = None,
) -> Account | None:
    """
    Work out the account to switch to.

    twistd's C{--uid}/C{--gid} win over the configuration's C{user}/C{group};
    without a group the user's primary group is used.

    @param user: C{[netd] user}: a name or a decimal uid, or L{None}.
    @param group: C{[netd] group}: a name or a decimal gid, or L{None}.
    @param uid: twistd's C{--uid}, or L{None}.
    @param gid: twistd's C{--gid}, or L{None}.
    @return: The account, or L{None} if no user is configured.
    @raise KeyError: If a user or group does not exist.
    """
    entry: pwd.struct_passwd | None = None
    if uid is None:
        if user is None:
            return None
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid = entry.pw_uid
    else:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            entry = None
    if gid is None and group is not None:
        gid = (
            grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
        ).gr_gid
    if gid is None:
        if entry is None:
            raise KeyError(f"uid {uid} has no entry in the user database: give a group")
        gid = entry.pw_gid
    if entry is not None:
        groups = sorted(set(os.getgrouplist(entry.pw_name, gid)) | {gid})
        name = entry.pw_name
    else:
        groups, name = [gid], str(uid)
    return Account(uid, gid, tuple(groups), name)


def setNoNewPrivileges() -> None:
    """
    Set C{PR_SET_NO_NEW_PRIVS}: from now on no C{execve} can grant
    privileges (set-user-id bits, file capabilities).

    @raise OSError: If the kernel refuses.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    one, zero = ctypes.c_ulong(1), ctypes.c_ulong(0)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def noNewPrivileges() -> bool:
    """
    @return: Whether C{PR_SET_NO_NEW_PRIVS} is set on this process.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    zero = ctypes.c_ulong(0)
    return bool(libc.prctl(PR_GET_NO_NEW_PRIVS, zero, zero, zero, zero) == 1)


def capabilities(statusPath: str = "/proc/self/status") -> dict[str, int]:
    """
    The capability sets of this process.

    @param statusPath: The status file to read.
    @return: C{{"CapEff": ..., "CapPrm": ..., ...}}, empty if unreadable.
    """
    sets: dict[str, int] = {}
    try:
        with open(statusPath) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
                    sets[key] = int(value.strip(), 16)
    except OSError:
        pass
    return sets


def preload(modules: tuple[str, ...] = PRELOAD) -> None:
    """
    Import the modules netd may need after dropping privileges.

    @param modules: Their names; one that cannot be imported is skipped.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def switchAccount(account: Account, osModule: Any = os) -> None:
    """
    Switch to C{account}: supplementary groups, then group, then user, each
    real, effective and saved.

    @param account: The account.
    @param osModule: The L{os} module (replaced in tests).
    @raise PrivilegeError: If a step fails.
    """
    uid, gid = account.uid, account.gid
    try:
        osModule.setgroups(list(account.groups))
        osModule.setresgid(gid, gid, gid)
        osModule.setresuid(uid, uid, uid)
    except OSError as e:
        raise PrivilegeError(
            f"cannot switch to {account.describe()}: {e.strerror or e}"
        ) from e


def verifyDropped(
    account: Account, osModule: Any = os, readCapabilities: Any = capabilities
) -> None:
    """
    Prove that the process runs as C{account} with no way back to root:
    every user and group id is the account's, the supplementary groups are
    exactly its groups, C{setuid(0)} and C{setgid(0)} fail, and no
    capability is left.

    @param account: The account.
    @param osModule: The L{os} module (replaced in tests).
    @param readCapabilities: Returns the capability sets (replaced in tests).
    @raise PrivilegeError: Naming what is wrong.
    """
    uid, gid, groups = account.uid, account.gid, sorted(set(account.groups))
    if osModule.getresuid() != (uid, uid, uid):
        raise PrivilegeError(
            f"user ids (real, effective, saved) are {osModule.getresuid()}, "
            f"not all {uid} (twistd --euid keeps root recoverable: do not use it)"
        )
    if osModule.getresgid() != (gid, gid, gid):
        raise PrivilegeError(
            f"group ids (real, effective, saved) are {osModule.getresgid()}, "
            f"not all {gid}"
        )
    if sorted(set(osModule.getgroups())) != groups:
        raise PrivilegeError(
            f"supplementary groups are {sorted(osModule.getgroups())}, not {groups}"
        )
    if uid == 0:
        return
    for regain, what in ((osModule.setuid, "user"), (osModule.setgid, "group")):
        if what == "group" and gid == 0:
            continue
        try:
            regain(0)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EACCES):
                raise PrivilegeError(
                    f"checking the {what} switch: {e.strerror or e}"
                ) from e
        else:
            raise PrivilegeError(f"root {what} id could be regained after the switch")
    left = {k: v for k, v in readCapabilities().items() if k != "CapInh" and v}
    if left:
        raise PrivilegeError(
            "capabilities left after the switch: "
            + ", ".join(f"{k}={v:x}" for k, v in sorted(left.items()))
        )


def dropPrivileges(
    account: Account,
    osModule: Any = os,
    setNoNewPrivs: Any = setNoNewPrivileges,
    readCapabilities: Any = capabilities,
) -> None:
    """
    Switch to C{account} for good and prove there is no way back.

    Under twistd the switch itself is twistd's (C{--uid}/C{--gid}, which
    netd fills from C{[netd] user}: C{setgid}, C{initgroups}, C{setuid},
    after C{privilegedStartService}); this does it when it has not been
    done (still root), then checks it either way and sets
    C{PR_SET_NO_NEW_PRIVS}.

    @param account: The account.
    @param osModule: The L{os} module (replaced in tests).
    @param setNoNewPrivs: Sets C{PR_SET_NO_NEW_PRIVS} (replaced in tests).
    @param readCapabilities: Returns the capability sets (replaced in tests).
    @raise PrivilegeError: If a step fails or root can be regained.
    """
    uid = account.uid
    if osModule.getresuid() != (uid, uid, uid) and osModule.geteuid() == 0:
        switchAccount(account, osModule)
    verifyDropped(account, osModule, readCapabilities)
    try:
        setNoNewPrivs()
    except OSError as e:
        raise PrivilegeError(
            f"cannot set PR_SET_NO_NEW_PRIVS: {e.strerror or e}"
        ) from e


def chownFiles(paths: list[str], account: Account, osModule: Any = os) -> list[str]:
    """
    Hand files created as root (pidfile, log files) to the account, so that
    it can still write, reopen and rotate them.

    @param paths: The files; those that do not exist are skipped.
    @param account: The account.
    @param osModule: The L{os} module (replaced in tests).
    @return: The files changed.
    """
    changed = []
    for path in paths:
        try:
            osModule.chown(path, account.uid, account.gid)
        except FileNotFoundError:
            continue
        changed.append(path)
    return changed
