# -*- test-case-name: tests.test_reload,tests.test_drain,tests.test_listeners -*-
"""
The service tree of a netd process.

L{NetdService} (the root, returned by L{netd.tap.makeService}) holds one
L{ServiceInstance} per configured service; each holds one listener service
per configured address (L{netd.listeners}). Everything is built from a
L{NetdConfig<netd.config.NetdConfig>} without binding; ports are bound when
twistd starts the tree.

L{NetdService} also runs the process's life cycle under twistd: the
privilege drop after binding (L{netd.privileges}), systemd notifications
and the watchdog (L{netd.systemd}), reloads on SIGHUP (L{netd.reload}) and
the graceful stop on SIGTERM (L{netd.drain}).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from netd.config import (
    EMBEDDED_DEFAULT,
    ConfigError,
    NetdConfig,
    ServiceConfig,
    loadConfig,
)
from netd.drain import Drain, openSessions
from netd.drops import DropLog
from netd.listeners import (
    ListenerService,
    ListenError,
    StreamListenerService,
    buildListenerService,
    socketKey,
)
from netd.logsetup import LogDestinations
from netd.policy import SessionPolicy
from netd.privileges import (
    Account,
    PrivilegeError,
    chownFiles,
    dropPrivileges,
    preload,
    setNoNewPrivileges,
)
from netd.reload import planReload
from netd.services import serviceTypes
from netd.servicetype import ServiceContext
from netd.systemd import Notifier, Watchdog, watchdogInterval

EX_OSERR = 71
EX_CONFIG = 78


class ServiceInstance(MultiService):
    """
    One configured service, with its listeners as children.

    @ivar context: The state its listeners share.
    """

    _log = Logger()

    def __init__(
        self,
        config: ServiceConfig,
        ownPorts: set[int],
        statsInterval: float,
        reactor: Any = None,
        instances: dict[str, ServiceContext] | None = None,
        sockets: Mapping[str, int] | None = None,
        drainTimeout: float = 30.0,
    ) -> None:
        """
        @param config: The service's configuration.
        @param ownPorts: The ports netd listens on (shared, live).
        @param statsInterval: Seconds between periodic counter events.
        @param reactor: The reactor (the global one if L{None}).
        @param instances: The registry of every instance, which it joins.
        @param sockets: In a worker process, the descriptors the main process
            passed, by listener service name: the listeners adopt them
            (L{ListenerService.passedFd}) instead of binding.
        @param drainTimeout: C{drain_timeout}, for the work of
            L{ServiceType.buildServices}' services.
        """
        super().__init__()
        self.setName(config.name)
        if reactor is None:
            from twisted.internet import reactor
        serviceType = serviceTypes()[config.type]
        context = ServiceContext(
            config=config,
            policy=SessionPolicy(
                config.limits,
                DropLog(config.name, "refused a session from", reactor, statsInterval),
            ),
            datagramDrops=DropLog(
                config.name, "dropped a datagram from", reactor, statsInterval
            ),
            ownPorts=ownPorts,
            statsInterval=statsInterval,
            reactor=reactor,
            instances=instances if instances is not None else {},
            drainTimeout=drainTimeout,
        )
        context.instances[config.name] = context
        self.context = context
        if serviceType.buildServices is not None:
            for extra in serviceType.buildServices(context):
                extra.setServiceParent(self)
        streamFactory = None
        if any(listener.transport == "stream" for listener in config.listeners):
            assert serviceType.buildStreamFactory is not None
            streamFactory = serviceType.buildStreamFactory(context)
        for listener in config.listeners:
            child = buildListenerService(context, serviceType, listener, streamFactory)
            if sockets is not None:
                child.passedFd = sockets[child.name]
            child.setServiceParent(self)
        self._stats: LoopingCall | None = None
        self._lastCounters = context.counters.snapshot()

    def startService(self) -> None:
        """
        Start the listeners and the periodic datagram counters.
        """
        super().startService()
        if any(
            listener.transport == "datagram"
            for listener in self.context.config.listeners
        ):
            self._stats = LoopingCall(self.logCounters)
            self._stats.clock = self.context.reactor
            self._stats.start(self.context.statsInterval, now=False)

    def stopService(self) -> Any:
        """
        Stop the listeners, log the last counters.

        @return: A L{Deferred} that fires when every listener is closed.
        """
        if self._stats is not None and self._stats.running:
            self._stats.stop()
            self.logCounters()
        self.context.policy.refusals.stop()
        self.context.datagramDrops.stop()
        return super().stopService()

    def listenerServices(self) -> list[ListenerService]:
        """
        @return: Its listeners.
        """
        return [child for child in self if isinstance(child, ListenerService)]

    def sessionFactories(self) -> list[Any]:
        """
        @return: The L{SessionFactory} of each stream listener: their
            C{protocols} are the open sessions.
        """
        return [
            child.factory for child in self if isinstance(child, StreamListenerService)
        ]

    def logCounters(self) -> None:
        """
        Log the datagram counters of the last interval, if anything moved.
        """
        now = self.context.counters.snapshot()
        delta = {key: now[key] - self._lastCounters[key] for key in now}
        self._lastCounters = now
        if not any(
            delta[key] for key in ("datagramsIn", "datagramsOut", "datagramsDropped")
        ):
            return
        self._log.info(
            "{service} udp: {datagramsIn} datagrams ({datagramBytesIn} bytes) in, "
            "{datagramsOut} ({datagramBytesOut} bytes) out, {datagramsDropped} dropped "
            "in the last {interval:g}s",
            service=self.context.name,
            interval=self.context.statsInterval,
            totals=now,
            **{k: delta[k] for k in delta if k.startswith("datagram")},
        )


class NetdService(MultiService):
    """
    The root of a netd process.

    Besides holding the service instances it runs the process's life cycle
    when started by twistd (see L{netd.tap.makeService}): binds, then drops
    root (L{netd.privileges}); tells systemd it is ready, reloading or
    stopping (L{netd.systemd}); reloads on SIGHUP (L{reload}); and on
    SIGTERM stops listening at once and drains open sessions for up to
    C{drain_timeout} seconds (L{stopService}).

    @ivar config: The configuration it runs (replaced by a reload).
    @ivar configPath: The file reloads read (L{None}: the embedded default).
    @ivar ownPorts: Every port netd listens on (filled as they are bound).
    @ivar instances: Every service instance's context, by name (shared by
        all of them, kept current across reloads).
    @ivar stderr: Where a start-up failure is reported when running in the
        foreground; L{None} to raise L{ListenError} instead (under a
        daemonizing twistd, which reports exceptions itself, and in tests).
    @ivar account: The account to switch to after binding, if any.
    @ivar notifier: Where readiness and status go (systemd).
    @ivar logs: netd's own log destinations.
    @ivar ownedFiles: Files created as root before start (twistd's pidfile
        and log file) to hand to L{account}.
    @ivar handleSignals: Whether to install the SIGHUP (reload) and SIGTERM
        (drain, then exit 0) handlers when started.
    @ivar hardening: Whether to set C{PR_SET_NO_NEW_PRIVS} at start even
        with no account to switch to (under twistd).
    """

    _log = Logger()

    def __init__(
        self,
        config: NetdConfig,
        reactor: Any = None,
        stderr: TextIO | None = None,
        *,
        account: Account | None = None,
        notifier: Notifier | None = None,
        logs: LogDestinations | None = None,
        ownedFiles: Sequence[str] = (),
        handleSignals: bool = False,
        hardening: bool = False,
        environ: dict[str, str] | None = None,
        dropPrivileges: Callable[[Account], None] | None = None,
    ) -> None:
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
        self.logs = logs if logs is not None else LogDestinations()
        self.logs.configure(config)
        self.ownedFiles = list(ownedFiles)
        self.handleSignals = handleSignals
        self.hardening = hardening
        self._environ = environ
        self._dropPrivileges = dropPrivileges
        self.ownPorts: set[int] = set()
        self.instances: dict[str, ServiceContext] = {}
        self.retired: list[ServiceInstance] = []
        self.drain: Drain | None = None
        self.watchdog: Watchdog | None = None
        self._prepared = False
        self._handedOver: list[str] = []
        self._savedHandlers: dict[int, Any] = {}
        self._buildServices(config)

    def _buildServices(self, config: NetdConfig) -> None:
        """
        Build the children that serve a configuration.

        @param config: The configuration.
        """
        for service in config.services:
            self._buildInstance(service, config, self.instances).setServiceParent(self)

    def _buildInstance(
        self,
        service: ServiceConfig,
        config: NetdConfig,
        instances: dict[str, ServiceContext],
    ) -> ServiceInstance:
        """
        @param service: One service's configuration.
        @param config: The whole configuration.
        @param instances: The registry the instance joins.
        @return: A new, unstarted L{ServiceInstance}.
        """
        return ServiceInstance(
            service,
            self.ownPorts,
            config.statsInterval,
            self.reactor,
            instances,
            drainTimeout=config.drainTimeout,
        )

    def serviceInstances(self) -> list[ServiceInstance]:
        """
        @return: The running service instances.
        """
        return [child for child in self if isinstance(child, ServiceInstance)]

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
        Open netd's log destinations; hand files to the account.

        @raise SystemExit: With L{EX_CONFIG} if the log file cannot be opened.
        """
        if self._prepared:
            return
        self._prepared = True
        try:
            self._openLogs()
        except OSError as e:
            self._fail(
                f"{self.config.source}: netd.log_file: cannot open "
                f"{e.filename or 'the log file'}: {e.strerror or e}",
                EX_CONFIG,
            )
        if self.account is not None:
            self._handedOver = chownFiles(
                self.ownedFiles + self.logs.paths(), self.account
            )
            preload()

    def _openLogs(self) -> None:
        """
        Open netd's own log destinations (L{logs}).

        @raise OSError: If the log file cannot be opened.
        """
        self.logs.open()

    def startService(self) -> None:
        """
        Start every service (binding what L{privilegedStartService} did not),
        make sure root is gone for good, install the signal handlers, start
        the watchdog, and tell systemd netd is ready once the reactor runs.

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
        Every listener is up: tell systemd.
        """
        self.notifier.ready(self.status())

    def status(self) -> str:
        """
        @return: One line for systemd's status: what is being served.
        """
        instances = self.serviceInstances()
        listeners = sum(len(i.listenerServices()) for i in instances)
        return f"serving {len(instances)} services on {listeners} listeners"

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
        if not self.running:
            self._log.info("received SIGHUP while stopping: ignored")
            return
        self._log.info("received SIGHUP: reloading {path}", path=self.configPath)
        self.reload()

    def _onSIGTERM(self) -> None:
        """
        SIGTERM: stop (draining open sessions), and exit with status 0. A
        second SIGTERM while draining closes the sessions left at once.
        """
        if self.drain is not None:
            self._log.info("received SIGTERM again: closing the open sessions now")
            self.drain.abortNow()
            return
        self._log.info("received SIGTERM, shutting down")
        from twisted.internet.error import ReactorNotRunning

        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass

    def stopService(self) -> defer.Deferred[None]:
        """
        Stop listening at once, then let open sessions finish, for up to
        C{drain_timeout} seconds; abort those still open then.

        @return: A L{Deferred} that fires when every listener is closed and
            every session has ended.
        """
        self.notifier.stopping("stopping: closing listeners, draining sessions")
        listenersClosed = defer.maybeDeferred(super().stopService)
        self.drain = Drain(
            self.openSessions, self.reactor, self.config.drainTimeout, "stopping"
        )
        drained = self.drain.start()
        return defer.gatherResults(
            [listenersClosed, drained], consumeErrors=True
        ).addBoth(self._stopped)

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

    def openSessions(self) -> list[Any]:
        """
        @return: Every open stream session, of running and retired services.
        """
        factories = [
            factory
            for instance in self.serviceInstances() + self.retired
            for factory in instance.sessionFactories()
        ]
        return openSessions(factories)

    def reload(self) -> bool:
        """
        Re-read the configuration file and apply it (SIGHUP).

        The new file is validated first; if it is invalid, one error is
        logged and nothing changes. Then unchanged services are left alone
        (their sessions never notice); added and changed services are
        built and bound (an address that stays keeps its socket); if a
        bind fails, everything new is closed again and the running
        configuration stays. Otherwise removed and replaced services stop
        listening and their sessions drain. Log files are reopened and the
        certificates of unchanged TLS listeners re-read.

        @return: Whether the new configuration is now running.
        """
        self.notifier.reloading()
        new = self._readConfig()
        if new is None:
            return False
        return self.applyConfig(new)

    def _readConfig(self) -> NetdConfig | None:
        """
        Read and validate the configuration file for a reload; if it is
        invalid, log one error and tell systemd the reload failed.

        @return: The new configuration, or L{None} if it is invalid.
        """
        source = self.configPath or EMBEDDED_DEFAULT
        try:
            return loadConfig(serviceTypes(), self.configPath)
        except ConfigError as e:
            lines = e.lines()
            self._log.error(
                "reload failed, still running the previous configuration: "
                "{problems}",
                problems="; ".join(lines),
                path=source,
            )
            self.notifier.ready(f"{self.status()}; reload failed: {lines[0]}")
            return None

    def applyConfig(self, new: NetdConfig) -> bool:
        """
        Apply a new, valid configuration (see L{reload}).

        @param new: The configuration.
        @return: Whether it is now running (binding a new address failed
            otherwise, and the previous configuration stays).
        """
        source = self.configPath or EMBEDDED_DEFAULT
        plan = planReload(self.config, new)
        byName = {instance.name: instance for instance in self.serviceInstances()}
        retiring = [byName[name] for name in plan.retired]
        staging = {
            name: context
            for name, context in self.instances.items()
            if name not in plan.retired
        }
        started = {service.name for service in plan.started}
        fresh = [
            self._buildInstance(service, new, staging)
            for service in new.services
            if service.name in started
        ]
        available = {}
        for instance in retiring:
            for listener in instance.listenerServices():
                key = socketKey(listener.listener)
                if key is not None and listener.port is not None:
                    available[key] = listener
        handovers: list[tuple[ListenerService, ListenerService]] = []
        bound: list[ListenerService] = []
        try:
            for instance in fresh:
                for listener in instance.listenerServices():
                    previous = available.pop(socketKey(listener.listener), None)
                    if previous is not None:
                        handovers.append((listener, previous))
                    else:
                        listener.bind()
                        bound.append(listener)
        except ListenError as e:
            for listener in bound:
                listener.stopService()
            self._recountPorts()
            return self._reloadFailed(e, source)

        for listener, previous in handovers:
            listener.takeOver(previous)
        for instance in retiring:
            instance.disownServiceParent()
            self._retire(instance, new.drainTimeout)
        self.instances.clear()
        self.instances.update(staging)
        for instance in fresh:
            instance.context.instances = self.instances
            instance.setServiceParent(self)
        self.config = new
        self._recountPorts()
        for instance in self.serviceInstances():
            if instance.name in {s.name for s in plan.unchanged}:
                self._reloadCertificates(instance)
        self._reconfigureLogs(new)
        self._log.info(
            "reloaded {path}: {summary}", path=source, summary=plan.describe()
        )
        if plan.restartOnly:
            self._log.warn(
                "reload: {keys} changed but only apply at the next start",
                keys=", ".join(plan.restartOnly),
            )
        self.notifier.ready(self.status())
        return True

    def _reconfigureLogs(self, config: NetdConfig) -> None:
        """
        Apply a reloaded configuration's C{log_*} keys (and reopen the log
        file).

        @param config: The new configuration.
        """
        self.logs.reconfigure(config)

    def _reloadFailed(self, error: ListenError, source: str) -> bool:
        """
        A reload could not bind a new listener: say so; the previous
        configuration keeps running.

        @param error: What failed.
        @param source: The configuration file.
        @return: C{False}, for L{reload} to return.
        """
        self._log.error(
            "reload failed, still running the previous configuration: {error}",
            error=str(error),
            service=error.service,
            listener=error.listener,
            path=source,
        )
        self.notifier.ready(f"{self.status()}; reload failed: {error}")
        return False

    def _retire(self, instance: ServiceInstance, timeout: float) -> None:
        """
        Let a replaced or removed service's open sessions finish, for up to
        C{timeout} seconds.

        @param instance: The instance, no longer listening.
        @param timeout: The drain deadline.
        """
        factories = instance.sessionFactories()
        if not openSessions(factories):
            return
        self.retired.append(instance)
        drain = Drain(
            lambda: openSessions(factories),
            self.reactor,
            timeout,
            f"{instance.name} (replaced by the reload)",
        )

        def drained(result: Any) -> None:
            if instance in self.retired:
                self.retired.remove(instance)

        drain.start().addBoth(drained)

    def _reloadCertificates(self, instance: ServiceInstance) -> None:
        """
        Re-read the certificates of an unchanged service's TLS listeners.

        @param instance: The service.
        """
        for listener in instance.listenerServices():
            if not isinstance(listener, StreamListenerService):
                continue
            try:
                if listener.reloadCertificate():
                    self._log.info(
                        "{service} reloaded the certificate of {listener}",
                        service=instance.name,
                        listener=listener.listener.description,
                    )
            except ValueError as e:
                self._log.error(
                    "{service} keeps its old certificate on {listener}: {error}",
                    service=instance.name,
                    listener=listener.listener.description,
                    error=str(e),
                )

    def _recountPorts(self) -> None:
        """
        Make L{ownPorts} exactly the ports bound now (the set is shared
        with every service, so it is updated in place).
        """
        ports = {
            number
            for instance in self.serviceInstances()
            for listener in instance.listenerServices()
            if (number := listener.boundPortNumber())
        }
        self.ownPorts.clear()
        self.ownPorts.update(ports)

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
