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
from netd.checks import accessProblems, neededPaths, rootProblem
from netd.config import (
    ConfigError,
    NetdConfig,
    describeWorkers,
    loadConfig,
    lookupGroup,
    lookupUser,
    resolveWorkers,
)
from netd.convert import ConvertError, convertInetd, convertXinetd
from netd.control import ControlService
from netd.daemon import NetdService
from netd.logsetup import destinations
from netd.privileges import Account, resolveAccount
from netd.reactor import ReactorConflict, selectReactor
from netd.services import serviceTypes
from netd.startup import StartupReport, guardRunner
from netd.systemd import Notifier
from netd.workers.plan import perProcessServices
from netd.words import plural

EX_USAGE = 64
EX_CONFIG = 78
EX_UNAVAILABLE = 69

# Without --check, a broken file shows at most this many problems, so that
# the whole report (problems and the count) stays within three lines.
MAX_PROBLEM_LINES = 2


class Options(usage.Options):
    """
    The options of C{twistd netd}.
    """

    synopsis = (
        "[--config FILE] [--check [--probe]] [--allow-root] [--control PATH] | "
        "--convert-inetd FILE | --convert-xinetd DIR-or-FILE"
    )

    optParameters = [
        [
            "config",
            "c",
            None,
            "The TOML configuration file. Without it netd serves its embedded "
            "default: every service on 127.0.0.1 at unprivileged ports.",
        ],
        [
            "convert-inetd",
            None,
            None,
            "Print the netd configuration equivalent to an inetd.conf FILE on "
            "stdout and exit; what cannot be converted is kept as a comment "
            "saying why.",
        ],
        [
            "convert-xinetd",
            None,
            None,
            "Print the netd configuration equivalent to an xinetd.conf FILE "
            "(with its include and includedir) or an xinetd.d DIRECTORY on "
            "stdout and exit.",
        ],
        [
            "control",
            None,
            None,
            "Serve netd's control socket (a UNIX socket, mode 0600) at PATH, for "
            "netd status, netd reload and netd stop (netd run sets it to "
            "/run/netd/control.sock as root).",
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

    compData = usage.Completions(
        optActions={
            "config": usage.CompleteFiles("*.toml"),
            "convert-inetd": usage.CompleteFiles(),
            "convert-xinetd": usage.CompleteFiles(),
            "control": usage.CompleteFiles("*.sock"),
        }
    )

    longdesc = (
        "netd hosts any number of service instances in one process, each on "
        "its own TCP, TLS, UNIX and UDP listeners, all described in one TOML "
        "file. Service types: "
        + "; ".join(f"{t.name} ({t.description})" for t in serviceTypes().values())
        + ". The example configuration (every key, commented) is netd.toml in "
        "the package's data (netd install-files writes it to "
        "/etc/netd/netd.toml); man netd.toml lists every key. "
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
        'Drop-in files: include = ["conf.d/*.toml"] in [netd] adds the '
        "services of each matching file, read in name order (a service "
        "defined twice is an error naming both files). Limits include "
        "max_connections_per_second(_per_peer) with connection_burst(_per_peer): "
        "a source over its rate is refused alone, the service keeps serving "
        "the others. "
        "Metrics: [netd.metrics] listen = [...] serves Prometheus metrics "
        "(loopback clients only by default; with workers, their sum). "
        "Logs: log_file/log_format/log_syslog in [netd]; with "
        "twistd --logger netd.logsetup.observer the configuration alone "
        "decides; twistd --logger netd.logs.json for JSON on stdout. "
        "--convert-inetd FILE and --convert-xinetd DIR-or-FILE print the "
        "netd configuration equivalent to an inetd.conf or xinetd "
        "configuration (built-ins, programs as exec services, redirect as "
        "forward, access lists, instances, per_source and cps as limits). Exit "
        "status: 64 bad command line, 78 invalid configuration (or root with "
        "no user), 71 cannot bind or drop privileges, 73 cannot write the "
        "pidfile, 69 a probe failed, 70 a bug in netd."
    )

    stderr: TextIO = sys.stderr
    stdout: TextIO = sys.stdout

    def opt_version(self) -> None:
        """
        Print netd's version and exit.
        """
        self.stdout.write(f"netd {__version__}\n")
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse the command line; a mistake in it (an unknown option, a
        missing value) is one line and a pointer to C{--help}, not the whole
        help text.

        @param options: The arguments (C{sys.argv[1:]} if L{None}).
        @raise SystemExit: With status 64 (EX_USAGE) on a mistake.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            command = "twistd netd" if self.parent is not None else "netd"
            self.stderr.write(
                f"{command}: {e}\n{command}: '{command} --help' lists the options\n"
            )
            self.stderr.flush()
            raise SystemExit(EX_USAGE)

    def postOptions(self) -> None:
        """
        Load the configuration; with C{--check}, report on it and exit.

        Under twistd, first make sure of the reactor (L{_selectReactor}).

        @raise SystemExit: With status 78 if the configuration is invalid, or
            0 after a successful C{--check}.
        @raise usage.UsageError: If another reactor was installed first and
            not asked for with C{twistd --reactor}.
        """
        if self["convert-inetd"] or self["convert-xinetd"]:
            self._convert()
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
                f"netd: {plural(len(e.problems), 'problem')}{more}; "
                "nothing was started\n"
            )
            self.stderr.flush()
            raise SystemExit(EX_CONFIG)
        self["netdConfig"] = config
        if self["check"] or self["probe"]:
            problems = self._systemProblems(config)
            if problems:
                for line in problems:
                    self.stderr.write(f"netd: {line}\n")
                self.stderr.write(
                    f"netd: {plural(len(problems), 'problem')}; the file is valid "
                    "but netd would not start or serve as configured\n"
                )
                self.stderr.flush()
                raise SystemExit(EX_CONFIG)
            listeners = sum(len(service.listeners) for service in config.services)
            workers = (
                "" if config.workers == 1 else f", {describeWorkers(config.workers)}"
            )
            self.stdout.write(
                f"netd: {config.source}: configuration is valid "
                f"({plural(len(config.services), 'service')}, "
                f"{plural(listeners, 'listener')}{workers})\n"
            )
            pinned = perProcessServices(config) if config.workers != 1 else None
            for service in config.services:
                addresses = ", ".join(l.description for l in service.listeners)
                self.stdout.write(
                    f"  {service.name} ({service.type}): {addresses}"
                    f"{workerPlacement(service, pinned)}\n"
                )
                if (notes := service.serviceType.checkNotes) is not None:
                    for note in notes(service, resolveWorkers(config.workers)):
                        self.stdout.write(f"    {note}\n")
            if config.included:
                self.stdout.write(f"  included: {', '.join(config.included)}\n")
            if config.metrics is not None:
                addresses = ", ".join(l.description for l in config.metrics.listeners)
                self.stdout.write(f"  metrics endpoint: {addresses}\n")
            self.stdout.flush()
            if self["probe"]:
                from netd.probe import probeConfig

                failed = probeConfig(config, self.stdout)
                self.stdout.flush()
                raise SystemExit(EX_UNAVAILABLE if failed else 0)
            raise SystemExit(0)

    def _convert(self) -> None:
        """
        Print the conversion C{--convert-inetd} or C{--convert-xinetd} asks
        for (L{netd.convert}) and exit.

        @raise SystemExit: 0 once printed, 78 if the file cannot be read.
        @raise usage.UsageError: If both options are given.
        """
        if self["convert-inetd"] and self["convert-xinetd"]:
            raise usage.UsageError(
                "--convert-inetd and --convert-xinetd: convert one at a time"
            )
        try:
            if self["convert-inetd"]:
                text = convertInetd(self["convert-inetd"])
            else:
                text = convertXinetd(self["convert-xinetd"])
        except ConvertError as e:
            self.stderr.write(f"netd: {e}\n")
            self.stderr.flush()
            raise SystemExit(EX_CONFIG)
        self.stdout.write(text)
        self.stdout.flush()
        raise SystemExit(0)

    def _systemProblems(self, config: NetdConfig) -> list[str]:
        """
        The checks start-up makes beyond the file (L{netd.checks}): root with
        no user to switch to, and the paths the services read, as the
        account netd will run as.

        @param config: The valid configuration.
        @return: One line per problem.
        """
        twistdOptions = self.parent
        try:
            if twistdOptions is not None and twistdOptions.get("uid") is not None:
                account = resolveAccount(
                    None, None, twistdOptions["uid"], twistdOptions.get("gid")
                )
            elif os.geteuid() == 0:
                account = resolveAccount(config.user, config.group)
            else:
                account = None
        except KeyError as e:
            return [f"{config.source}: netd.user: {e.args[0]}"]
        problems = []
        root = rootProblem(config, bool(self.get("allow-root")), os.geteuid(), account)
        if root is not None:
            problems.append(root)
        if account is not None and account.uid == os.geteuid():
            account = None
        problems.extend(
            f"{config.source}: {line}"
            for line in accessProblems(neededPaths(config), account)
        )
        return problems


def workerPlacement(service: Any, pinned: frozenset[str] | None) -> str:
    """
    What C{--check} says about where a service runs.

    @param service: A L{ServiceConfig<netd.config.ServiceConfig>}.
    @param pinned: L{perProcessServices}, or L{None} with one process.
    @return: C{""} with one process; otherwise C{" [worker 0 only: ...]"}
        or C{" [every worker]"}.
    """
    if pinned is None:
        return ""
    if service.name in pinned:
        return " [worker 0 only: its state lives in one process]"
    return " [every worker]"


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
    if not isinstance(twistdOptions, ReactorSelectionMixin) or not isinstance(
        twistdOptions, usage.Options
    ):
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
    extra: dict[str, Any] = {}
    workers = resolveWorkers(config.workers)
    if workers > 1:
        from netd.workers.supervisor import HeldSockets

        extra["served"] = HeldSockets(config, workers=workers)
    if twistdOptions is None:
        return _withControl(NetdService(config, logs=destinations, **extra), options)
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
    # A daemon's standard error is /dev/null: netd's line goes to the
    # process that started it (netd.startup).
    report = StartupReport()
    if isinstance(twistdOptions, ReactorSelectionMixin):
        guardRunner(report)
    root = NetdService(
        config,
        stderr=sys.stderr if foreground else report,
        account=account,
        notifier=Notifier.fromEnvironment(),
        logs=destinations,
        ownedFiles=_filesForAccount(twistdOptions),
        handleSignals=True,
        hardening=True,
        **extra,
    )
    return _withControl(root, options)


def _withControl(root: NetdService, options: Options) -> NetdService:
    """
    Add the control socket (L{netd.control}) to the root service if
    C{--control} asks for one.

    @param root: The root service.
    @param options: The parsed options.
    @return: C{root}.
    """
    path = options.get("control")
    if path:
        ControlService(os.path.abspath(path), root).setServiceParent(root)
    return root
