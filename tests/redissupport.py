# -*- test-case-name: tests.test_redishub -*-
"""
A real C{redis-server} for tests: started on a free loopback port (or a
UNIX socket) in a temporary directory, without persistence, stopped by its
PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from tests.support import stopProcess

REDIS_SERVER = shutil.which("redis-server")

#: Why Redis tests skip, or L{None}.
SKIP = None if REDIS_SERVER else "redis-server is not installed (Debian: redis-server)"


class _PortTaken(AssertionError):
    """
    redis-server could not bind its port.
    """


def freePort() -> int:
    """
    @return: A TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """
    One C{redis-server} process.

    @ivar port: Its TCP port on 127.0.0.1 (0: none).
    @ivar unixPath: Its UNIX socket (C{""}: none).
    @ivar process: The running process, or L{None}.
    """

    def __init__(
        self,
        password: str = "",
        unix: bool = False,
        extra: tuple[str, ...] = (),
        tls: bool = False,
    ) -> None:
        """
        @param password: C{requirepass}, or C{""}.
        @param unix: Listen on a UNIX socket instead of TCP.
        @param extra: More C{redis-server} arguments.
        @param tls: Speak TLS on the TCP port, with a fresh self-signed
            certificate (L{certificate}) for 127.0.0.1.
        """
        self.directory = tempfile.mkdtemp(prefix="netd-redis-")
        self.password = password
        self.port = 0 if unix else freePort()
        self.tls = tls
        self.certificate = ""
        self.key = ""
        if tls:
            from tests.support import writeSelfSignedCertificate

            self.key, self.certificate = writeSelfSignedCertificate(self.directory)
        self.unixPath = os.path.join(self.directory, "redis.sock") if unix else ""
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.started = False

    @property
    def url(self) -> str:
        """
        The C{hub} URL for it.
        """
        if self.unixPath:
            return f"unix://{self.unixPath}"
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """
        Start it and wait until it answers. The first time, if its port was
        taken meanwhile (by another program on the machine), pick another
        one; later (a restart) it keeps its port.

        @param timeout: Seconds to wait.
        """
        for attempt in range(3):
            try:
                self._start(timeout)
            except _PortTaken:
                if self.started or attempt == 2 or self.unixPath:
                    raise
                self.port = freePort()
                continue
            self.started = True
            return

    def _start(self, timeout: float) -> None:
        """
        Start it once.

        @param timeout: Seconds to wait.
        @raise _PortTaken: If its port was in use.
        """
        assert REDIS_SERVER is not None
        arguments = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            "0" if self.tls else str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
            "--daemonize",
            "no",
            "--loglevel",
            "notice",
            "--logfile",
            os.path.join(self.directory, "redis.log"),
        ]
        if self.unixPath:
            arguments += ["--unixsocket", self.unixPath, "--unixsocketperm", "700"]
        if self.password:
            arguments += ["--requirepass", self.password]
        if self.tls:
            arguments += [
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                self.certificate,
                "--tls-key-file",
                self.key,
                "--tls-auth-clients",
                "no",
            ]
        arguments += list(self.extra)
        before = len(self.log())
        # Its log goes to its file; it never holds the test's output open.
        self.process = subprocess.Popen(
            arguments,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log()
                if "Address already in use" in log:
                    os.unlink(os.path.join(self.directory, "redis.log"))
                    raise _PortTaken(log)
                raise AssertionError(f"redis-server exited: {log}")
            # Its own word, not a connect: another program could hold the
            # port, and a TLS port answers no plain PING.
            if "ready to accept connections" not in self.log()[before:].lower():
                time.sleep(0.02)
                continue
            return
        raise AssertionError(f"redis-server did not start: {self.log()}")

    def log(self) -> str:
        """
        @return: Its log file's text.
        """
        try:
            with open(os.path.join(self.directory, "redis.log")) as f:
                return f.read()
        except OSError:
            return ""

    def command(self, *arguments: str) -> str:
        """
        Run one command through C{redis-cli} (Debian's, beside the server).

        @param arguments: The command.
        @return: Its output.
        """
        where = (["-s", self.unixPath] if self.unixPath else ["-p", str(self.port)]) + (
            ["-a", self.password, "--no-auth-warning"] if self.password else []
        )
        return subprocess.run(
            ["redis-cli", *where, *arguments],
            capture_output=True,
            check=True,
            timeout=10,
        ).stdout.decode()

    def kill(self) -> None:
        """
        Kill it (SIGKILL, by PID) and wait for it: a crash.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """
        Stop it (SIGSTOP): Redis there but answering nothing, as when
        partitioned.
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """
        Let it go on (SIGCONT).
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """
        Stop it and remove its directory.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            stopProcess(self.process)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)
