# -*- test-case-name: tests.test_logsetup -*-
"""
Log destinations chosen in the configuration file.

twistd owns the process's main log observer (C{--logfile}, C{--syslog},
C{--logger}); it creates it after C{makeService} and before binding. netd
adds its own destinations from C{[netd]} in one of two ways:

    - C{twistd --logger netd.logsetup.observer netd ...}: the configuration
      alone decides, and twistd writes nowhere else. Events go to
      C{log_file} if it is set, else to standard output; C{log_syslog} adds
      syslog. Standard output connected to the journal (C{JOURNAL_STREAM},
      as under a systemd unit) gets plain lines with C{<N>} priority
      prefixes and no timestamps, since journald adds its own.
    - without it: twistd's destination stays as it is, and C{log_file} and
      C{log_syslog} are added beside it when netd starts (as root, before
      privileges are dropped, so the file may live in a root-owned
      directory; it is then handed to the service user).

C{log_format} (C{"text"} or C{"json"}, see L{netd.logs}) applies to netd's
destinations. Twisted's own port lines (C{Factory starting on 7}) are left
out of them (L{netd.startup.twistedNoise}). A reload (SIGHUP) reopens the file (for logrotate) and applies
changed C{log_*} keys.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import IO, Any, cast

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    Logger,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from twisted.python.log import ILogObserver as ILegacyLogObserver
from twisted.python.logfile import LogFile
from zope.interface import implementer

from netd.logs import eventAsJSONLine
from netd.startup import quiet

_log = Logger()

_PRIORITIES = {
    LogLevel.critical: 2,
    LogLevel.error: 3,
    LogLevel.warn: 4,
    LogLevel.info: 6,
    LogLevel.debug: 7,
}


def journalLine(event: dict[str, Any]) -> str | None:
    """
    Format an event for journald: a C{<N>} priority prefix, the message, no
    timestamp (the journal records its own).

    @param event: A log event.
    @return: The line, or L{None} if there is nothing to write.
    """
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}"
    if not text:
        return None
    priority = _PRIORITIES.get(event.get("log_level"), 6)
    return "".join(f"<{priority}>{line}\n" for line in text.splitlines())


def isJournal(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """
    Whether a stream is connected to the systemd journal.

    @param stream: The stream (standard output).
    @param environ: The environment (L{os.environ} if L{None}).
    @return: C{True} if C{JOURNAL_STREAM} names this stream's device and inode.
    """
    value = (environ if environ is not None else os.environ).get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        device, inode = (int(part) for part in value.split(":"))
        info = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


@implementer(ILogObserver)
class LogDestinations:
    """
    The observers netd's configuration asks for.

    @ivar primary: Whether this is twistd's observer (C{--logger
        netd.logsetup.observer}): then it writes to standard output unless a
        file is configured.
    @ivar settings: The C{log_*} settings in use.
    @ivar logFile: The open L{LogFile}, if any.
    """

    def __init__(self, publisher: Any = globalLogPublisher, stdout: Any = None) -> None:
        self.publisher = publisher
        self.stdout = stdout
        self.primary = False
        self.settings: tuple[Any, ...] | None = None
        self.logFile: LogFile | None = None
        self._observers: list[Any] = []
        self._added = False

    def configure(self, config: Any) -> None:
        """
        Remember the settings of a configuration (opens nothing).

        @param config: A L{NetdConfig<netd.config.NetdConfig>}.
        """
        self.settings = (
            config.logFormat,
            config.logFile,
            config.logRotateSize,
            config.logRotateKeep,
            config.logSyslog,
        )

    @property
    def isOpen(self) -> bool:
        """
        Whether the destinations are open.
        """
        return bool(self._observers)

    def open(self) -> None:
        """
        Open the configured destinations; outside the primary role, add them
        to the global log publisher.
        """
        if self.isOpen:
            return
        logFormat, path, rotateSize, rotateKeep, syslog = self.settings or (
            "text",
            None,
            0,
            1,
            False,
        )
        formatter: Callable[[dict[str, Any]], str | None] | None = (
            eventAsJSONLine if logFormat == "json" else None
        )
        if path is not None:
            directory, name = os.path.split(path)
            self.logFile = LogFile(
                name,
                directory,
                rotateLength=rotateSize,
                defaultMode=0o640,
                maxRotatedFiles=rotateKeep,
            )
            # LogFile is a file-like object, not an IO (no typing stub says so).
            logFile = cast(IO[Any], self.logFile)
            self._observers.append(
                quiet(
                    FileLogObserver(logFile, formatter or formatEventAsClassicLogText)
                )
            )
        elif self.primary:
            # Kept from the first time: once twistd starts logging,
            # sys.stdout is redirected into the log itself.
            if self.stdout is None:
                self.stdout = sys.stdout
            stream = self.stdout
            if formatter is None:
                formatter = journalLine if isJournal(stream) else None
            self._observers.append(
                quiet(FileLogObserver(stream, formatter or formatEventAsClassicLogText))
            )
        if syslog:
            from twisted.python.syslog import SyslogObserver

            self._observers.append(
                LegacyLogObserverWrapper(
                    cast(ILegacyLogObserver, SyslogObserver("netd").emit)
                )
            )
        if not self.primary and self._observers:
            for observer in self._observers:
                self.publisher.addObserver(observer)
            self._added = True

    def close(self) -> None:
        """
        Close every destination (removing them from the publisher).
        """
        if self._added:
            for observer in self._observers:
                self.publisher.removeObserver(observer)
            self._added = False
        self._observers = []
        if self.logFile is not None:
            self.logFile.close()
            self.logFile = None

    def paths(self) -> list[str]:
        """
        @return: The files written, to hand to the service user.
        """
        return [self.logFile.path] if self.logFile is not None else []

    def reopen(self) -> None:
        """
        Reopen the log file (after logrotate moved it away).
        """
        if self.logFile is not None:
            self.logFile.reopen()

    def reconfigure(self, config: Any) -> bool:
        """
        Apply a reloaded configuration: reopen the file, and switch
        destinations if a C{log_*} key changed.

        @param config: The new configuration.
        @return: Whether the destinations changed.
        """
        before = self.settings
        self.configure(config)
        if self.settings == before:
            self.reopen()
            return False
        self.close()
        try:
            self.open()
        except OSError as e:
            self.close()
            _log.error(
                "cannot open the new log destinations ({error}); "
                "twistd's own log goes on",
                error=e.strerror or str(e),
            )
        return True

    def __call__(self, event: dict[str, Any]) -> None:
        """
        As twistd's observer: pass an event to every destination.

        @param event: A log event.
        """
        if not self._observers and self.primary:
            self.open()
        for observer in list(self._observers):
            observer(event)


destinations = LogDestinations()


def observer() -> LogDestinations:
    """
    The observer factory for C{twistd --logger netd.logsetup.observer}:
    netd's configuration decides where the log goes.

    @return: The process's L{LogDestinations}, opened.
    @raise SystemExit: With status 78 if the log file cannot be opened.
    """
    destinations.primary = True
    try:
        destinations.open()
    except OSError as e:
        sys.stderr.write(
            f"netd: netd.log_file: cannot open {e.filename or 'the log file'}: "
            f"{e.strerror or e}\n"
        )
        sys.stderr.flush()
        raise SystemExit(78)
    return destinations
