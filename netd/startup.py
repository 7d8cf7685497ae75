# -*- test-case-name: tests.test_startup -*-
"""
How a start-up failure reaches the operator under twistd, daemonized or not:
one line, and netd's exit status.

twistd's daemonizing runner reports a failure in the daemon through a pipe
to the process that started it, which prints C{An error has occurred:} and
the C{repr} of the exception's first 100 bytes, and exits 1; the exception's
traceback goes to the log. netd replaces both ends of that pipe (the only
place twistd lets a plugin in is its runner class, which a plugin cannot
choose, so L{guardRunner} wraps two of its methods, see the canary in
C{tests.test_twisted_canary}):

    - in the daemon, L{_startApplication} catches netd's own C{SystemExit}
      (the line netd wrote is in a L{StartupReport}) and any other exception
      (an L{OSError} from twistd itself, e.g. a pidfile that cannot be
      written), sends C{netd STATUS LINE} down the pipe, removes the pidfile
      and exits with that status, logging one line and no traceback;
    - in the starting process, L{_waitForStart} prints that line as it is
      and exits with that status.

It also filters Twisted's own port lines (C{Factory starting on 7}, C{(TCP
Port 7 Closed)}) from twistd's log observer: netd logs one line of its own
per listener (L{twistedNoise}).
"""

from __future__ import annotations

import functools
import io
import os
import re
import sys
from typing import Any, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    Logger,
    PredicateResult,
    globalLogPublisher,
)

_log = Logger()

EX_SOFTWARE = 70
EX_OSERR = 71
EX_CANTCREAT = 73

_MARK = b"netd "

# The lines twisted.internet.tcp, udp and unix ports log themselves.
_NOISE = re.compile(r"^(?:\S.* starting on \S+|\((?:TCP|UDP|UNIX) Port \S+ Closed\))$")


def twistedNoise(event: dict[str, Any]) -> PredicateResult:
    """
    A log predicate dropping the lines Twisted's ports log as they start and
    stop listening (netd logs its own, naming the service).

    @param event: A log event.
    @return: L{PredicateResult.no} for those lines, else
        L{PredicateResult.maybe}.
    """
    if event.get("log_namespace") == "log_legacy":
        message: tuple[Any, ...] = tuple(event.get("message") or ())
        if len(message) == 1 and _NOISE.match(str(message[0])):
            return PredicateResult.no
    return PredicateResult.maybe


def quiet(observer: Any) -> FilteringLogObserver:
    """
    @param observer: A log observer.
    @return: It, behind L{twistedNoise}.
    """
    return FilteringLogObserver(observer, [cast(ILogFilterPredicate, twistedNoise)])


class StartupReport(io.StringIO):
    """
    A text stream collecting what netd writes about a start-up failure in a
    daemon (where standard error is C{/dev/null}), for L{_startApplication}
    to send to the starting process.
    """

    def text(self) -> str:
        """
        @return: Everything written, without the trailing newline.
        """
        return self.getvalue().rstrip("\n")


def describeFailure(error: BaseException, pidfile: str | None) -> tuple[str, int]:
    """
    Put a start-up exception that netd did not report itself in one line.

    @param error: The exception.
    @param pidfile: twistd's C{--pidfile}.
    @return: The line (starting C{netd: }) and the exit status.
    """
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        cause = error.strerror or str(error)
        if pidfile and error.filename == pidfile:
            return (f"netd: cannot write the pidfile{where}: {cause}", EX_CANTCREAT)
        return (f"netd: cannot start:{where}: {cause}", EX_OSERR)
    return (
        f"netd: cannot start: {type(error).__name__}: {error} (a bug in netd: "
        "the log has the traceback)",
        EX_SOFTWARE,
    )


def _send(runner: Any, line: str, code: int) -> None:
    """
    Send a failure to the starting process (if daemonized: twistd's status
    pipe), or write it to standard error.

    @param runner: twistd's runner.
    @param line: The one line.
    @param code: The exit status.
    """
    pipe = runner.config.get("statusPipe")
    if pipe is None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        return
    runner.config["statusPipe"] = None
    message = _MARK + b"%d %s\0" % (code, line.encode("utf-8", "replace"))
    while message:
        message = message[os.write(pipe, message) :]
    os.close(pipe)


def _removePID(runner: Any) -> None:
    """
    Remove twistd's pidfile if it was written (twistd's own C{removePID}
    logs a traceback for one that never was).

    @param runner: twistd's runner.
    """
    pidfile = runner.config.get("pidfile")
    if pidfile and os.path.exists(pidfile):
        runner.removePID(pidfile)


def _startApplication(runner: Any, application: Any, report: StartupReport) -> None:
    """
    twistd's C{startApplication}, reporting a failure as one line and
    netd's exit status.

    @param runner: twistd's runner.
    @param application: The application.
    @param report: Where netd wrote its line, in a daemon.
    @raise SystemExit: With netd's exit status, if start-up failed.
    """
    observer = getattr(runner.logger, "_observer", None)
    if observer is not None and not isinstance(observer, FilteringLogObserver):
        # Private Twisted API: AppLogger._observer, what AppLogger.stop removes.
        filtered = quiet(observer)
        globalLogPublisher.removeObserver(observer)
        globalLogPublisher.addObserver(filtered)
        runner.logger._observer = filtered
    try:
        _original["startApplication"](runner, application)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else EX_SOFTWARE
        if code != 0 and runner.config.get("statusPipe") is not None:
            line = report.text() or f"netd: start-up failed (exit status {code})"
            _send(runner, line, code)
        _removePID(runner)
        raise
    except Exception as e:
        line, code = describeFailure(e, runner.config.get("pidfile"))
        if code == EX_SOFTWARE:
            _log.failure("start-up failed")
        else:
            _log.critical("{error}", error=line[len("netd: ") :])
        _send(runner, line, code)
        _removePID(runner)
        raise SystemExit(code)


def _waitForStart(runner: Any, readPipe: int) -> int:
    """
    twistd's C{_waitForStart}, in the process that started the daemon:
    print netd's line as it is, and return netd's exit status.

    @param runner: twistd's runner.
    @param readPipe: The status pipe.
    @return: The exit status for the starting process.
    """
    data = b""
    while not data.endswith(b"\0"):
        chunk = os.read(readPipe, 4096)
        if not chunk:
            break
        data += chunk
        if data == b"0" or not _MARK.startswith(data[: len(_MARK)]):
            break
    stream = sys.__stderr__ or sys.stderr
    if data == b"0":
        return 0
    if not data.startswith(_MARK):
        # twistd's own format, "1 " and the exception's last line.
        text = data[2:].decode("utf-8", "replace")
        stream.write(f"netd: start-up failed: {text} (see the log)\n")
        stream.flush()
        return 1
    code, _, line = data[len(_MARK) :].rstrip(b"\0").partition(b" ")
    stream.write(line.decode("utf-8", "replace") + "\n")
    stream.flush()
    return int(code)


_original: dict[str, Any] = {}


def guardRunner(report: StartupReport, runnerClass: Any = None) -> None:
    """
    Wrap twistd's Unix runner (see the module docstring). Idempotent: a
    second call only replaces the report.

    @param report: Where netd writes its start-up failure in a daemon.
    @param runnerClass: The runner class (twistd's
        C{UnixApplicationRunner} if L{None}; replaced in tests).
    """
    if runnerClass is None:
        from twisted.scripts._twistd_unix import UnixApplicationRunner

        runnerClass = UnixApplicationRunner
    if "startApplication" not in _original:
        _original["startApplication"] = runnerClass.startApplication
        _original["_waitForStart"] = runnerClass._waitForStart
        _original["class"] = runnerClass

    @functools.wraps(_original["startApplication"])
    def startApplication(self: Any, application: Any) -> None:
        _startApplication(self, application, report)

    @functools.wraps(_original["_waitForStart"])
    def waitForStart(self: Any, readPipe: int) -> int:
        return _waitForStart(self, readPipe)

    # Private Twisted API: UnixApplicationRunner._waitForStart.
    runnerClass.startApplication = startApplication
    runnerClass._waitForStart = waitForStart


def unguardRunner() -> None:
    """
    Undo L{guardRunner} (for tests).
    """
    if "class" in _original:
        runnerClass = _original.pop("class")
        runnerClass.startApplication = _original.pop("startApplication")
        runnerClass._waitForStart = _original.pop("_waitForStart")
