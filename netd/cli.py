# -*- test-case-name: tests.test_cli -*-
"""
The C{netd} command: the way operators expect a daemon to behave, built on
twistd rather than beside it.

    - C{netd run [--config FILE]}: twistd's own runner, in this process
      (L{twisted.scripts.twistd.run} with the command line netd's unit
      uses: C{-n --pidfile= --logger netd.logsetup.observer netd ...}):
      in the foreground, no pidfile, the configuration decides the log, a
      control socket for the commands below;
    - C{netd check [--probe] [--config FILE]}: C{twistd netd --check};
    - C{netd status}, C{netd reload}, C{netd stop}: ask the running netd
      through its control socket (L{netd.control}), or, for reload and
      stop, signal the process named by a pidfile (C{--pidfile}, for a
      C{twistd netd} started without C{--control});
    - C{netd version};
    - C{netd install-files [--prefix /]}: write the example configuration,
      the systemd units and the man pages (L{netd.installfiles}).

C{twistd netd} keeps working exactly as before.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, TextIO

from twisted.python import usage

from netd import __version__

EX_USAGE = 64
EX_UNAVAILABLE = 69


def _controlOption() -> list[Any]:
    """
    @return: The C{--control PATH} option, defaulting to where C{netd run}
        puts the socket.
    """
    from netd.control import defaultControlPath

    return [
        "control",
        None,
        defaultControlPath(),
        "The control socket of the running netd.",
    ]


class RunOptions(usage.Options):
    """
    C{netd run}.
    """

    synopsis = "[--config FILE] [--control PATH] [--allow-root] [-- TWISTD-OPTIONS]"
    longdesc = (
        "Run netd in the foreground, the way its systemd unit does: twistd's "
        "runner in this process with -n --pidfile= --logger "
        "netd.logsetup.observer (the configuration's log_* keys decide the "
        "log; standard output otherwise), and a control socket for netd "
        "status, reload and stop. Arguments after -- go to twistd."
    )
    optParameters = [
        [
            "config",
            "c",
            None,
            "The TOML configuration file (else the embedded default).",
        ],
        _controlOption(),
    ]
    optFlags = [["allow-root", None, "Run as root with no user to switch to."]]

    def parseArgs(self, *twistdArgs: str) -> None:
        """
        @param twistdArgs: Extra twistd options (after C{--}).
        """
        self["twistd"] = list(twistdArgs)


class CheckOptions(usage.Options):
    """
    C{netd check}.
    """

    synopsis = "[--probe] [--config FILE] [--allow-root]"
    longdesc = (
        "Validate the configuration and make every check start-up would "
        "(root with no user; paths the service user must read), binding "
        "nothing: exit 0, or 78 with one line per problem. With --probe, also "
        "talk to every listener of the running netd (exit 69 naming a "
        "failing one)."
    )
    optParameters = [
        [
            "config",
            "c",
            None,
            "The TOML configuration file (else the embedded default).",
        ]
    ]
    optFlags = [
        ["probe", None, "Also talk to every configured listener."],
        ["allow-root", None, "Check a file meant to run as root (or under systemd)."],
    ]


class StatusOptions(usage.Options):
    """
    C{netd status}.
    """

    synopsis = "[--control PATH] [--json]"
    longdesc = (
        "Ask the running netd what it serves: every service, its listeners "
        "and open sessions, the worker processes. Exit 0, or 69 if no netd "
        "answers."
    )
    optParameters = [_controlOption()]
    optFlags = [["json", None, "Print the daemon's answer as JSON."]]


class SignalOptions(usage.Options):
    """
    C{netd reload} and C{netd stop}.
    """

    synopsis = "[--control PATH | --pidfile FILE]"
    optParameters = [
        _controlOption(),
        [
            "pidfile",
            None,
            None,
            "Signal the process this pidfile names instead (a twistd netd started "
            "without --control).",
        ],
        ["timeout", None, 60.0, "stop: seconds to wait for netd to exit.", float],
    ]


class InstallOptions(usage.Options):
    """
    C{netd install-files}.
    """

    synopsis = "[--prefix DIR]"
    longdesc = (
        "Write netd's deployment files under DIR: etc/netd/netd.toml (the "
        "commented example), lib/systemd/system/netd.service and netd.socket, "
        "share/man/man8/netd.8 and man5/netd.toml.5 (with --prefix /, the "
        "configuration goes to /etc/netd and the rest under /usr/local). An "
        "existing file is never overwritten: it is named and kept."
    )
    optParameters = [["prefix", None, "/", "Where to install."]]


class NetdOptions(usage.Options):
    """
    The C{netd} command line.
    """

    synopsis = "netd COMMAND [options]"
    longdesc = (
        "netd is a multi-service network daemon on Twisted (twistd netd). "
        "Commands: run, check, status, reload, stop, version, install-files; "
        "netd COMMAND --help for each. Exit statuses: 0, 64 bad command line, "
        "69 no netd answers (or a probe failed), 70 a bug, 71 cannot bind, 73 "
        "cannot write the pidfile, 78 invalid configuration."
    )
    subCommands = [
        ["run", None, RunOptions, "Run netd in the foreground (the systemd form)."],
        ["check", None, CheckOptions, "Validate a configuration; bind nothing."],
        ["status", None, StatusOptions, "What the running netd serves."],
        ["reload", None, SignalOptions, "Reload the running netd's configuration."],
        ["stop", None, SignalOptions, "Stop the running netd (sessions drain)."],
        ["version", None, usage.Options, "Print netd's version."],
        [
            "install-files",
            None,
            InstallOptions,
            "Write the configuration, units, man pages.",
        ],
    ]

    def postOptions(self) -> None:
        """
        @raise usage.UsageError: Without a command.
        """
        if self.subCommand is None:
            raise usage.UsageError("a command is needed (netd --help lists them)")


def main(
    argv: list[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    The C{netd} console script.

    @param argv: The arguments (C{sys.argv[1:]} if L{None}).
    @param stdout: Standard output.
    @param stderr: Standard error.
    @return: The exit status.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    options = NetdOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        command = "netd" if options.subCommand is None else f"netd {options.subCommand}"
        err.write(f"{command}: {e}\n{command}: '{command} --help' lists the options\n")
        return EX_USAGE
    sub = options.subOptions
    handler = COMMANDS[options.subCommand]
    return handler(sub, out, err)


def _run(options: RunOptions, out: TextIO, err: TextIO) -> int:
    """
    C{netd run}: twistd's runner in this process.

    @return: twistd's exit status (0 after SIGTERM or C{netd stop}).
    """
    from twisted.scripts.twistd import run

    args = ["-n", "--pidfile=", "--logger", "netd.logsetup.observer"]
    args += options["twistd"] + ["netd"]
    if options["config"]:
        args += ["--config", options["config"]]
    if options["control"]:
        args += ["--control", options["control"]]
    if options["allow-root"]:
        args.append("--allow-root")
    saved = sys.argv
    sys.argv = ["netd run"] + args
    try:
        run()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def _check(options: CheckOptions, out: TextIO, err: TextIO) -> int:
    """
    C{netd check}: C{twistd netd --check}, without twistd.

    @return: 0, 69 or 78.
    """
    from netd.tap import Options

    args = ["--check"]
    if options["probe"]:
        args.append("--probe")
    if options["allow-root"]:
        args.append("--allow-root")
    if options["config"]:
        args += ["--config", options["config"]]
    tapOptions = Options()
    tapOptions.stdout, tapOptions.stderr = out, err
    try:
        tapOptions.parseOptions(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _ask(path: str, command: str, err: TextIO, **kwargs: Any) -> dict[str, Any] | None:
    """
    Send a command to the running netd.

    @return: Its answer, or L{None} (after saying why) if none answers.
    """
    from netd.control import ControlError, request

    try:
        return request(path, command, **kwargs)
    except ControlError as e:
        err.write(f"netd {command}: {e}\n")
        return None


def _status(options: StatusOptions, out: TextIO, err: TextIO) -> int:
    """
    C{netd status}.

    @return: 0, or 69 if no netd answers.
    """
    answer = _ask(options["control"], "status", err)
    if answer is None:
        return EX_UNAVAILABLE
    if options["json"]:
        out.write(json.dumps(answer, indent=2, sort_keys=True) + "\n")
        return 0
    out.write(formatStatus(answer))
    return 0


def formatStatus(answer: dict[str, Any]) -> str:
    """
    @param answer: The daemon's answer to C{status}.
    @return: It, for a person.
    """
    from netd.words import plural

    workers = answer["workers"]
    sessions = answer["sessions"]
    lines = [
        f"netd {answer['version']} (pid {answer['pid']}, up {answer['uptime']:.0f}s): "
        f"{answer['status']}",
        f"  configuration: {answer['config']}",
        f"  {plural(workers, 'process', 'processes')} serving, "
        + (
            plural(sessions, "open session")
            if sessions is not None
            else "sessions counted by each worker"
        ),
    ]
    for process in answer.get("workerProcesses", ()):
        lines.append(
            f"  worker {process['index']}: pid {process['pid']}, "
            + ("serving" if process["ready"] else "starting")
        )
    for service in answer["services"]:
        listeners = ", ".join(
            listener["listener"]
            + (f" (port {listener['port']})" if listener.get("port") else "")
            for listener in service["listeners"]
        )
        count = service.get("sessions")
        lines.append(
            f"  {service['name']} ({service['type']}): {listeners}"
            + (f"; {plural(count, 'open session')}" if count is not None else "")
        )
    return "\n".join(lines) + "\n"


def _signal(
    options: SignalOptions, command: str, number: int, out: TextIO, err: TextIO
) -> int:
    """
    C{netd reload} and C{netd stop}: through the control socket, or the
    pidfile's process.

    @return: 0; 1 if a reload failed; 69 if no netd answers.
    """
    pidfile = options["pidfile"]
    if pidfile:
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
            os.kill(pid, number)
        except (OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or str(e)
            err.write(f"netd {command}: pidfile {pidfile}: {why}\n")
            return EX_UNAVAILABLE
        out.write(f"netd {command}: sent {signal.Signals(number).name} to {pid}\n")
        if command == "stop":
            return _waitForExit(pid, options["timeout"], err)
        return 0
    if command == "stop":
        answer = _ask(options["control"], "stop", err, waitForClose=options["timeout"])
    else:
        answer = _ask(options["control"], "reload", err)
    if answer is None:
        return EX_UNAVAILABLE
    if not answer.get("ok"):
        err.write(f"netd {command}: {answer.get('error', 'failed')}\n")
        return 1
    if command == "stop":
        if not answer.get("closed"):
            err.write(
                f"netd stop: pid {answer.get('pid')} still running after "
                f"{options['timeout']:g}s\n"
            )
            return 1
        out.write(f"netd stop: pid {answer.get('pid')} stopped\n")
    else:
        out.write(f"netd reload: {answer.get('status')}\n")
    return 0


def _waitForExit(pid: int, timeout: float, err: TextIO) -> int:
    """
    Wait for a signalled process to exit.

    @return: 0 once it has, 1 if it has not in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return 0
        time.sleep(0.1)
    err.write(f"netd stop: pid {pid} still running after {timeout:g}s\n")
    return 1


def _alive(pid: int) -> bool:
    """
    @param pid: A process id.
    @return: Whether it runs (a zombie, exited but not yet reaped by its
        parent, does not).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _version(options: Any, out: TextIO, err: TextIO) -> int:
    """
    C{netd version}.

    @return: 0.
    """
    import platform

    import twisted

    out.write(
        f"netd {__version__} (Twisted {twisted.__version__}, "
        f"Python {platform.python_version()})\n"
    )
    return 0


def _install(options: InstallOptions, out: TextIO, err: TextIO) -> int:
    """
    C{netd install-files}.

    @return: 0, or 73 if a file could not be written.
    """
    from netd.installfiles import installFiles

    return installFiles(options["prefix"], out, err)


COMMANDS: dict[str | None, Any] = {
    "run": _run,
    "check": _check,
    "status": _status,
    "reload": lambda o, out, err: _signal(o, "reload", signal.SIGHUP, out, err),
    "stop": lambda o, out, err: _signal(o, "stop", signal.SIGTERM, out, err),
    "version": _version,
    "install-files": _install,
}


def script() -> None:
    """
    The console-script entry point.
    """
    sys.exit(main())


if __name__ == "__main__":
    script()
