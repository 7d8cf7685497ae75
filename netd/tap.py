# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd netd} command line: L{Options} and L{makeService}.

L{Options} reads and validates the configuration file as soon as the command
line is parsed, before twistd daemonizes or binds anything: a broken file
ends the process with one line per problem and exit status 78 (EX_CONFIG).
L{makeService} only builds the service tree; twistd binds its ports.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from twisted.python import usage

from netd import __version__
from netd.config import ConfigError, NetdConfig, loadConfig, lookupGroup, lookupUser
from netd.daemon import NetdService
from netd.services import serviceTypes

EX_CONFIG = 78


class Options(usage.Options):
    """
    The options of C{twistd netd}.
    """

    synopsis = "[--config FILE] [--check]"

    optParameters = [
        [
            "config",
            "c",
            None,
            "The TOML configuration file. Without it netd serves its embedded "
            "default: every service on 127.0.0.1 at unprivileged ports.",
        ],
    ]

    optFlags = [
        [
            "check",
            None,
            "Validate the configuration, print a summary and exit (0 if it is "
            "valid, 78 if not) without binding anything.",
        ],
    ]

    compData = usage.Completions(optActions={"config": usage.CompleteFiles("*.toml")})

    longdesc = (
        "netd hosts any number of service instances in one process, each on "
        "its own TCP, TLS, UNIX and UDP listeners, all described in one TOML "
        "file. Service types: "
        + "; ".join(f"{t.name} ({t.description})" for t in serviceTypes().values())
        + ". See etc/netd.toml for every key, and the README for the reference. "
        "Structured JSON logs: twistd --logger netd.logs.json netd ..."
    )

    stderr: TextIO = sys.stderr
    stdout: TextIO = sys.stdout

    def opt_version(self) -> None:
        """
        Print netd's version and exit.
        """
        self.stdout.write(f"netd {__version__}\n")
        raise SystemExit(0)

    def postOptions(self) -> None:
        """
        Load the configuration; with C{--check}, report on it and exit.

        @raise SystemExit: With status 78 if the configuration is invalid, or
            0 after a successful C{--check}.
        """
        try:
            config = loadConfig(self["config"])
        except ConfigError as e:
            for line in e.lines():
                self.stderr.write(f"netd: {line}\n")
            self.stderr.write(
                f"netd: {len(e.problems)} problem(s); nothing was started\n"
            )
            self.stderr.flush()
            raise SystemExit(EX_CONFIG)
        self["netdConfig"] = config
        if self["check"]:
            listeners = sum(len(service.listeners) for service in config.services)
            self.stdout.write(
                f"netd: {config.source}: configuration is valid "
                f"({len(config.services)} services, {listeners} listeners)\n"
            )
            for service in config.services:
                addresses = ", ".join(l.description for l in service.listeners)
                self.stdout.write(f"  {service.name} ({service.type}): {addresses}\n")
            self.stdout.flush()
            raise SystemExit(0)


def _runAs(config: NetdConfig, twistdOptions: Any) -> None:
    """
    Hand the configured user and group to twistd, which switches to them
    after binding (C{privilegedStartService}) and before starting services.

    twistd's own C{--uid}/C{--gid} win. Only a process running as root can
    switch; otherwise the keys are left to the caller's account.

    @param config: The configuration.
    @param twistdOptions: twistd's options (the parent of L{Options}).
    """
    if (
        twistdOptions is None
        or os.getuid() != 0
        or config.user is None
        and config.group is None
    ):
        return
    if twistdOptions.get("uid") is None and config.user is not None:
        entry = lookupUser(config.user)
        twistdOptions["uid"] = entry.pw_uid
        if twistdOptions.get("gid") is None and config.group is None:
            twistdOptions["gid"] = entry.pw_gid
    if twistdOptions.get("gid") is None and config.group is not None:
        twistdOptions["gid"] = lookupGroup(config.group).gr_gid


def makeService(options: Options) -> NetdService:
    """
    Build netd's service tree from parsed options. Binds nothing.

    @param options: The parsed L{Options}.
    @return: The root service.
    """
    config: NetdConfig = options["netdConfig"]
    twistdOptions = getattr(options, "parent", None)
    _runAs(config, twistdOptions)
    foreground = twistdOptions is not None and bool(twistdOptions.get("nodaemon"))
    return NetdService(config, stderr=sys.stderr if foreground else None)
