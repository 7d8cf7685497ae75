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

from twisted.application.app import ReactorSelectionMixin
from twisted.python import usage

from netd import __version__
from netd.config import (
    ConfigError,
    NetdConfig,
    describeWorkers,
    loadConfig,
    lookupGroup,
    lookupUser,
    resolveWorkers,
)
from netd.daemon import NetdService
from netd.logsetup import destinations
from netd.privileges import Account, resolveAccount
from netd.reactor import ReactorConflict, selectReactor
from netd.services import serviceTypes
from netd.systemd import Notifier

EX_CONFIG = 78
EX_UNAVAILABLE = 69

# Without --check, a broken file shows at most this many problems, so that
# the whole report (problems and the count) stays within three lines.
MAX_PROBLEM_LINES = 2


class Options(usage.Options):
    """
    The options of C{twistd netd}.
    """

    synopsis = "[--config FILE] [--check [--probe]] [--allow-root]"

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
        [
            "probe",
            None,
            "With --check: also connect to every configured listener over "
            "loopback and check that it behaves (echo echoes, discard "
            "swallows, ...); exit 0, or 69 naming the failing listener. For "
            "ExecStartPost= or a health check.",
        ],
        [
            "allow-root",
            None,
            "Run as root when no user is configured (the same as allow_root = "
            "true in [netd]); otherwise netd refuses to start as root without "
            "a user to switch to.",
        ],
    ]

    compData = usage.Completions(optActions={"config": usage.CompleteFiles("*.toml")})

    longdesc = (
        "netd hosts any number of service instances in one process, each on "
        "its own TCP, TLS, UNIX and UDP listeners, all described in one TOML "
        "file. Service types: "
        + "; ".join(f"{t.name} ({t.description})" for t in serviceTypes().values())
        + ". See etc/netd.toml for every key, and the README for the reference. "
        "Started as root, netd binds every listener, then switches to [netd] "
        "user for good. Signals: SIGHUP reloads the configuration (unchanged "
        "services keep their sessions), SIGTERM stops listening at once and "
        "lets open sessions finish for up to drain_timeout seconds. Under "
        "systemd it reports readiness (Type=notify), pings the watchdog and "
        "serves sockets passed by socket activation (systemd:NAME listeners). "
        'Workers: with workers = N (or "auto", one per CPU) in [netd], the '
        "main process binds every listener, drops privileges and starts N "
        "worker processes that serve the sockets it hands them; it restarts "
        "a worker that dies, passes SIGHUP and SIGTERM on, and logs for them "
        "all; chat services (and http services mounting one) run in worker 0 "
        "only, session limits apply per worker, and a UDP listener with "
        "reuse_port gets one socket per worker. "
        "netd runs on its own epoll reactor (netd.reactor; twistd --reactor "
        "epoll netd keeps Twisted's). "
        "Logs: log_file/log_format/log_syslog in [netd]; with "
        "twistd --logger netd.logsetup.observer the configuration alone "
        "decides; twistd --logger netd.logs.json for JSON on stdout. Exit "
        "status: 78 invalid configuration, 71 cannot bind or drop privileges, "
        "69 a probe failed."
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

        Under twistd, first make sure of the reactor (L{_selectReactor}).

        @raise SystemExit: With status 78 if the configuration is invalid, or
            0 after a successful C{--check}.
        @raise usage.UsageError: If another reactor was installed first and
            not asked for with C{twistd --reactor}.
        """
        _selectReactor(self.parent)
        try:
            config = loadConfig(serviceTypes(), self["config"])
        except ConfigError as e:
            lines = e.lines()
            shown = (
                lines if self["check"] or self["probe"] else lines[:MAX_PROBLEM_LINES]
            )
            for line in shown:
                self.stderr.write(f"netd: {line}\n")
            more = ""
            if len(shown) < len(lines):
                more = (
                    f" ({len(lines) - len(shown)} more not shown: "
                    "twistd netd --check --config FILE lists them all)"
                )
            self.stderr.write(
                f"netd: {len(e.problems)} problem(s){more}; nothing was started\n"
            )
            self.stderr.flush()
            raise SystemExit(EX_CONFIG)
        self["netdConfig"] = config
        if self["check"] or self["probe"]:
            listeners = sum(len(service.listeners) for service in config.services)
            workers = (
                "" if config.workers == 1 else f", {describeWorkers(config.workers)}"
            )
            self.stdout.write(
                f"netd: {config.source}: configuration is valid "
                f"({len(config.services)} services, {listeners} listeners{workers})\n"
            )
            for service in config.services:
                addresses = ", ".join(l.description for l in service.listeners)
                self.stdout.write(f"  {service.name} ({service.type}): {addresses}\n")
                if (notes := service.serviceType.checkNotes) is not None:
                    for note in notes(service):
                        self.stdout.write(f"    {note}\n")
            self.stdout.flush()
            if self["probe"]:
                from netd.probe import probeConfig

                failed = probeConfig(config, self.stdout)
                self.stdout.flush()
                raise SystemExit(EX_UNAVAILABLE if failed else 0)
            raise SystemExit(0)


def _selectReactor(twistdOptions: Any) -> None:
    """
    Under twistd, before anything imports the reactor: netd's, installed
    through Twisted's reactor plugins, unless C{twistd --reactor} chose one
    (L{netd.reactor.selectReactor}). twistd parses its own options, and so
    installs a C{--reactor} one, before this subcommand's L{Options.postOptions}.

    @param twistdOptions: twistd's options (the parent of L{Options}), or
        L{None} outside twistd.
    @raise usage.UsageError: If another reactor was installed first and not
        asked for.
    """
    if not isinstance(twistdOptions, ReactorSelectionMixin):
        return
    try:
        selectReactor(twistdOptions.get("reactor"))
    except ReactorConflict as e:
        raise usage.UsageError(str(e))


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


def _accountFor(twistdOptions: Any) -> Account | None:
    """
    The account twistd will switch to (after L{_runAs}), for netd to hand
    it its files and to check the switch.

    @param twistdOptions: twistd's options.
    @return: The account, or L{None} if no user is set (a C{gid} alone only
        changes the group: netd still runs as root).
    @raise KeyError: If the user or group does not exist.
    """
    uid, gid = twistdOptions.get("uid"), twistdOptions.get("gid")
    if uid is None:
        return None
    return resolveAccount(None, None, uid, gid)


def _filesForAccount(twistdOptions: Any) -> list[str]:
    """
    The files twistd creates as root before netd switches users: the pidfile
    and its log file.

    @param twistdOptions: twistd's options.
    @return: Their paths (relative ones are relative to twistd's C{--rundir},
        where netd runs by then).
    """
    files = []
    if twistdOptions.get("pidfile"):
        files.append(twistdOptions["pidfile"])
    logfile = twistdOptions.get("logfile")
    if not logfile and not twistdOptions.get("nodaemon"):
        logfile = "twistd.log"
    if logfile and logfile != "-" and not twistdOptions.get("syslog"):
        files.append(logfile)
    return files


def refuseRoot(config: NetdConfig, stderr: TextIO) -> None:
    """
    Refuse to run as root without an account to switch to.

    @param config: The configuration.
    @param stderr: Where the message goes.
    @raise SystemExit: With status 78, always.
    """
    source = config.source
    stderr.write(
        "netd: refusing to run as root with no user to switch to: set "
        f'user = "NAME" in [netd] of {source} (netd binds, then drops root),\n'
        "netd: or pass twistd --uid/--gid; to really run as root, set "
        "allow_root = true in [netd] or pass netd --allow-root\n"
    )
    stderr.flush()
    raise SystemExit(EX_CONFIG)


def makeService(options: Options) -> NetdService:
    """
    Build netd's service tree from parsed options. Binds nothing.

    Under twistd (C{options.parent}), it also decides the process's life
    cycle: the account twistd switches to after binding (checked by netd),
    the refusal to run as root without one, the files to hand to that
    account, systemd notifications, signal handlers and netd's log
    destinations (see L{netd.daemon.NetdService}).

    @param options: The parsed L{Options}.
    @return: The root service.
    @raise SystemExit: With status 78 when started as root with no user
        to switch to and root not allowed.
    """
    config: NetdConfig = options["netdConfig"]
    twistdOptions = getattr(options, "parent", None)
    destinations.configure(config)
    rootClass: Any = NetdService
    extra: dict[str, Any] = {}
    workers = resolveWorkers(config.workers)
    if workers > 1:
        from netd.workers import SupervisorService

        rootClass = SupervisorService
        extra["workers"] = workers
    if twistdOptions is None:
        return rootClass(config, logs=destinations, **extra)
    _runAs(config, twistdOptions)
    try:
        account = _accountFor(twistdOptions)
    except KeyError as e:
        options.stderr.write(f"netd: cannot switch users: {e.args[0]}\n")
        options.stderr.flush()
        raise SystemExit(EX_CONFIG)
    if account is not None and account.uid == 0:
        account = None
    allowRoot = config.allowRoot or bool(options.get("allow-root"))
    if os.geteuid() == 0 and account is None and not allowRoot:
        refuseRoot(config, options.stderr)
    foreground = bool(twistdOptions.get("nodaemon"))
    return rootClass(
        config,
        stderr=sys.stderr if foreground else None,
        account=account,
        notifier=Notifier.fromEnvironment(),
        logs=destinations,
        ownedFiles=_filesForAccount(twistdOptions),
        handleSignals=True,
        hardening=True,
        **extra,
    )
