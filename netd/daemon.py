# -*- test-case-name: tests.test_reload,tests.test_drain,tests.test_privileges -*-
"""
The life cycle of a netd process.

L{NetdService} (the root, returned by L{netd.tap.makeService}) runs the
process's life cycle under twistd: binding as root, then the privilege drop
(L{netd.privileges}); systemd notifications and the watchdog
(L{netd.systemd}); reloads on SIGHUP (L{netd.reload}); and the graceful
stop on SIGTERM (L{netd.drain}). What the process serves is its one child,
an L{IServedSet<netd.served.IServedSet>} chosen by the process's role:
the services themselves (L{netd.instances.InProcessServices}, also in a
worker process), or the sockets the main process of a netd with workers
holds for them (L{netd.workers.supervisor.HeldSockets}).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python.failure import Failure

from netd.config import EMBEDDED_DEFAULT, ConfigError, NetdConfig, loadConfig
from netd.instances import InProcessServices
from netd.listeners import ListenError
from netd.logsetup import LogDestinations
from netd.metrics import MetricsService
from netd.privileges import (
    Account,
    PrivilegeError,
    chownFiles,
    dropPrivileges,
    preload,
    setNoNewPrivileges,
)
from netd.served import IServedSet, ReloadResult
from netd.services import serviceTypes
from netd.systemd import Notifier, Watchdog, watchdogInterval

EX_OSERR = 71
EX_CONFIG = 78


class NetdService(MultiService):
    """
    The root of a netd process: its life cycle around what it serves.

    When started by twistd (see L{netd.tap.makeService}) it binds (through
    L{served}), then drops root (L{netd.privileges}); tells systemd it is
    ready, reloading or stopping (L{netd.systemd}); reloads on SIGHUP
    (L{reload}); and on SIGTERM stops listening at once and lets L{served}
    drain for up to C{drain_timeout} seconds (L{stopService}).

    @ivar config: The configuration it runs (replaced by a reload).
    @ivar configPath: The file reloads read (L{None}: the embedded default).
    @ivar served: What the process serves (its only child).
    @ivar stderr: Where a start-up failure is reported when running in the
        foreground; L{None} to raise L{ListenError} instead (under a
        daemonizing twistd, which reports exceptions itself, and in tests).
    @ivar account: The account to switch to after binding, if any.
    @ivar notifier: Where readiness and status go (systemd).
    @ivar logs: netd's own log destinations; L{None} in a worker process,
        whose events the main process logs.
    @ivar ownedFiles: Files created as root before start (twistd's pidfile
        and log file) to hand to L{account}.
    @ivar handleSignals: Whether to install the SIGHUP (reload) and SIGTERM
        (drain, then exit 0) handlers when started.
    @ivar hardening: Whether to set C{PR_SET_NO_NEW_PRIVS} at start even
        with no account to switch to (under twistd).
    @ivar ignoreSIGHUP: If set, SIGHUP does not reload: this line is logged
        instead (a worker's reloads come from the main process).
    @ivar parentDeathSignal: Whether a SIGTERM may come from the kernel as
        the parent process dies (a worker, see
        L{netd.workers.child.setParentDeathSignal}): then the first SIGTERM
        after a stop began some other way does not count as a second stop
        request.
    @ivar stopping: Whether it is stopping.
    """

    _log = Logger()

    def __init__(
        self,
        config: NetdConfig,
        reactor: Any = None,
        stderr: TextIO | None = None,
        *,
        served: IServedSet | None = None,
        account: Account | None = None,
        notifier: Notifier | None = None,
        logs: LogDestinations | None = None,
        ownLogs: bool = True,
        ownedFiles: Sequence[str] = (),
        handleSignals: bool = False,
        hardening: bool = False,
        environ: dict[str, str] | None = None,
        dropPrivileges: Callable[[Account], None] | None = None,
        ignoreSIGHUP: str | None = None,
        parentDeathSignal: bool = False,
    ) -> None:
        """
        @param served: What it serves; by default, the configuration's
            services in this process (L{InProcessServices}).
        @param ownLogs: Whether it has log destinations of its own (not in a
            worker process).
        @param environ: The environment systemd's variables are read from.
        @param dropPrivileges: How to switch to L{account} (for tests).
        """
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.configPath = (
            None
            if config.source == EMBEDDED_DEFAULT
            else os.path.abspath(config.source)
        )
        self.stderr = stderr
        self.account = account
        self.notifier = notifier if notifier is not None else Notifier(None)
        self.logs: LogDestinations | None = None
        if ownLogs:
            self.logs = logs if logs is not None else LogDestinations()
            self.logs.configure(config)
        self.ownedFiles = list(ownedFiles)
        self.handleSignals = handleSignals
        self.hardening = hardening
        self.ignoreSIGHUP = ignoreSIGHUP
        self.parentDeathSignal = parentDeathSignal
        self.stopping = False
        self.watchdog: Watchdog | None = None
        self._environ = environ
        self._dropPrivileges = dropPrivileges
        self._prepared = False
        self._handedOver: list[str] = []
        self._savedHandlers: dict[int, Any] = {}
        self._reloading = False
        self._sigtermSeen = False
        self.served: IServedSet = (
            served if served is not None else InProcessServices(config, reactor)
        )
        self.served.setServiceParent(self)
        if config.metrics is not None:
            MetricsService(
                config.metrics,
                self.served.metricsSeries,
                self.served.ownPorts,
                reactor,
                config.statsInterval,
            ).setServiceParent(self)

    def privilegedStartService(self) -> None:
        """
        As root, before twistd switches users: bind every listener (on the
        first failure, stop with one clear line), open netd's log files,
        hand the files created as root to the account, and import what is
        needed later (see L{netd.privileges}).

        @raise SystemExit: With L{EX_OSERR}, when L{stderr} is set.
        @raise ListenError: When it is not.
        """
        try:
            super().privilegedStartService()
        except ListenError as e:
            self._listenFailed(e)
        self._prepare()

    def _prepare(self) -> None:
        """
        Open netd's log destinations; create the files L{served} needs and
        hand every file to the account.

        @raise SystemExit: With L{EX_CONFIG} if the log file cannot be opened.
        """
        if self._prepared:
            return
        self._prepared = True
        if self.logs is not None:
            try:
                self.logs.open()
            except OSError as e:
                self._fail(
                    f"{self.config.source}: netd.log_file: cannot open "
                    f"{e.filename or 'the log file'}: {e.strerror or e}",
                    EX_CONFIG,
                )
        if self.account is not None:
            files = list(self.ownedFiles)
            for path in self.served.ownedFiles():
                try:
                    os.close(
                        os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                    )
                except OSError:
                    continue
                files.append(path)
            if self.logs is not None:
                files += self.logs.paths()
            self._handedOver = chownFiles(files, self.account)
            preload()

    def startService(self) -> None:
        """
        Start serving (binding what L{privilegedStartService} did not), make
        sure root is gone for good, install the signal handlers, start the
        watchdog, and tell systemd netd is ready once the reactor runs and
        everything serves.

        @raise SystemExit: With L{EX_OSERR}, when L{stderr} is set.
        @raise ListenError: When it is not.
        """
        try:
            super().startService()
        except ListenError as e:
            self._listenFailed(e)
        self._prepare()
        if self.account is not None:
            try:
                (self._dropPrivileges or dropPrivileges)(self.account)
            except PrivilegeError as e:
                self._fail(f"cannot drop privileges: {e}", EX_OSERR)
            self._log.info(
                "running as {account}, no way back to root; files handed over: "
                "{files}",
                account=self.account.describe(),
                files=", ".join(self._handedOver) or "none",
            )
        elif self.hardening:
            try:
                setNoNewPrivileges()
            except OSError as e:
                self._log.warn(
                    "cannot set PR_SET_NO_NEW_PRIVS: {error}", error=e.strerror
                )
        if self.handleSignals:
            self._installHandler(signal.SIGHUP, self._onSIGHUP)
            self.reactor.callWhenRunning(
                self._installHandler, signal.SIGTERM, self._onSIGTERM
            )
        interval = watchdogInterval(self._environ)
        if self.notifier.enabled and interval is not None:
            self.watchdog = Watchdog(self.notifier, interval, self.reactor)
            self.watchdog.startService()
        self.reactor.callWhenRunning(self._ready)

    def _ready(self) -> None:
        """
        The reactor runs and root is gone: once everything serves, tell
        systemd.
        """
        if not self.running:
            return

        def serving(ready: bool) -> None:
            if ready and self.running:
                self.notifier.ready(self.status())

        self.served.serving().addCallback(serving)

    def status(self) -> str:
        """
        @return: One line for systemd's status: what is being served.
        """
        return self.served.status()

    def _installHandler(self, number: int, handler: Any) -> None:
        """
        Install a signal handler that defers the work to the reactor.

        @param number: The signal.
        @param handler: Called in the reactor thread.
        """

        def onSignal(signum: int, frame: Any) -> None:
            self.reactor.callFromThread(handler)

        if not self.running:
            return
        self._savedHandlers.setdefault(number, signal.getsignal(number))
        signal.signal(number, onSignal)

    def _restoreHandlers(self) -> None:
        """
        Put back the signal handlers found at start.
        """
        for number, previous in self._savedHandlers.items():
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._savedHandlers.clear()

    def _onSIGHUP(self) -> None:
        """
        SIGHUP: reload the configuration (not while stopping).
        """
        if self.ignoreSIGHUP is not None:
            self._log.info("{why}", why=self.ignoreSIGHUP)
            return
        if not self.running:
            self._log.info("received SIGHUP while stopping: ignored")
            return
        self._log.info("received SIGHUP: reloading {path}", path=self.configPath)
        self.reload()

    def _onSIGTERM(self) -> None:
        """
        SIGTERM: stop (draining open sessions), and exit with status 0. A
        second SIGTERM while draining ends the sessions left at once.
        """
        if self.stopping:
            if self.parentDeathSignal and not self._sigtermSeen:
                self._sigtermSeen = True
                return
            self._log.info("received SIGTERM again: closing the open sessions now")
            self.served.abortNow()
            return
        self._sigtermSeen = True
        self._log.info("received SIGTERM, shutting down")
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            return

    def stopService(self) -> Deferred[None]:
        """
        Stop what is served: listening stops at once, open sessions finish,
        for up to C{drain_timeout} seconds (see L{IServedSet.stopService}).

        @return: A L{Deferred} that fires when everything served has ended.
        """
        self.stopping = True
        self.notifier.stopping(self.served.stoppingStatus)
        stopped: Deferred[Any] = defer.maybeDeferred(super().stopService)
        return stopped.addBoth(self._stopped)

    def _stopped(self, result: Any) -> None:
        """
        Everything has stopped: give the signals back, stop the watchdog,
        close the systemd notifier, log a failure to stop.

        The handlers stay until now: SIGHUP is ignored while stopping, and a
        second SIGTERM cuts the drain short.

        @param result: The result of stopping, or a L{Failure}.
        """
        self._restoreHandlers()
        if self.watchdog is not None:
            self.watchdog.stopService()
            self.watchdog = None
        self.notifier.close()
        if isinstance(result, Failure):
            self._log.failure("while stopping", result)

    def reload(self) -> Deferred[ReloadResult]:
        """
        Re-read the configuration file and apply it (SIGHUP).

        The new file is validated first; if it is invalid, one error is
        logged and nothing changes. Otherwise L{served} applies it (see
        L{InProcessServices.reload} and
        L{netd.workers.supervisor.HeldSockets.reload}); log files are
        reopened.

        @return: A L{Deferred} firing with how the reload ended (never
            failing).
        """
        if self._reloading:
            self._log.warn("received SIGHUP while a reload is being applied: ignored")
            return defer.succeed(
                ReloadResult(False, "a reload is being applied", self.config)
            )
        self.notifier.reloading()
        source = self.configPath or EMBEDDED_DEFAULT
        try:
            new = loadConfig(serviceTypes(), self.configPath)
        except ConfigError as e:
            lines = e.lines()
            self._log.error(
                "reload failed, still running the previous configuration: "
                "{problems}",
                problems="; ".join(lines),
                path=source,
            )
            self.notifier.ready(f"{self.status()}; reload failed: {lines[0]}")
            return defer.succeed(ReloadResult(False, lines[0], self.config))
        return self.apply(new)

    def apply(self, new: NetdConfig) -> Deferred[ReloadResult]:
        """
        Serve a new, valid configuration (see L{reload}): log how it went
        and tell systemd.

        @param new: The configuration.
        @return: A L{Deferred} firing with how it ended (never failing).
        """
        source = self.configPath or EMBEDDED_DEFAULT
        self._reloading = True

        def done(result: ReloadResult) -> ReloadResult:
            self._reloading = False
            if result.applied:
                self.config = result.config
                if self.logs is not None:
                    self.logs.reconfigure(result.config)
                self._log.info(
                    "reloaded {path}: {summary}", path=source, summary=result.summary
                )
                if result.restartOnly:
                    self._log.warn(
                        "reload: {keys} changed but only apply at the next start",
                        keys=", ".join(result.restartOnly),
                    )
                self.notifier.ready(self.status())
            else:
                self._log.error(
                    "reload failed, still running the previous configuration: "
                    "{error}",
                    error=result.summary,
                    path=source,
                    **dict(result.fields),
                )
                self.notifier.ready(f"{self.status()}; reload failed: {result.summary}")
            return result

        return self.served.reload(new).addCallback(done)

    def _listenFailed(self, error: ListenError) -> None:
        """
        Report a listener that could not be bound, and stop start-up.

        @param error: The failure.
        @raise SystemExit: With L{EX_OSERR}, when L{stderr} is set.
        @raise ListenError: When it is not.
        """
        self._log.critical(
            "{error}", error=str(error), service=error.service, listener=error.listener
        )
        if self.stderr is None:
            raise error
        self.stderr.write(f"netd: {error}\n")
        self.stderr.flush()
        raise SystemExit(EX_OSERR)

    def _fail(self, message: str, code: int) -> None:
        """
        Stop start-up with one line.

        @param message: What went wrong.
        @param code: The exit status.
        @raise SystemExit: Always.
        """
        self._log.critical("{error}", error=message)
        stream = self.stderr
        if stream is not None:
            stream.write(f"netd: {message}\n")
            stream.flush()
        raise SystemExit(code)
