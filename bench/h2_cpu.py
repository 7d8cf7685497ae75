# -*- test-case-name: tests.test_bench -*-
"""
Server CPU time per HTTP/2 request over TLS: netd's http service (and nginx
beside it, the same way) under C{h2load}, the server's C{utime + stime}
read from C{/proc/PID/stat} before and after each run.

    python bench/h2_cpu.py [--requests 30000] [--clients 50] [--streams 10]
        [--size 1024] [--repeat 3]

CPU time per request does not depend on how loaded the machine is the way
requests per second do, so it shows what a change costs or saves even on a
shared machine. Needs C{h2load}, C{openssl} (and C{nginx} for its line).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from typing import Any

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(
    os.path.abspath(__file__)
):
    del sys.path[0]

HERE = os.path.dirname(os.path.abspath(__file__))


def _h2Bench() -> Any:
    """
    @return: C{bench/h2_bench.py} as a module (its servers and runner).
    """
    spec = importlib.util.spec_from_file_location(
        "netd_h2_bench", os.path.join(HERE, "h2_bench.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _h2Bench()


def cpuSeconds(pid: int) -> float:
    """
    @param pid: A process.
    @return: Its user and system CPU time so far, in seconds.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (1-based); the split dropped
    # the first two.
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def serverPid(server: Any) -> int:
    """
    @param server: A started server.
    @return: The pid of the server itself (C{taskset} execs it, so the
        child's pid is the server's).
    """
    pid: int = server.process.pid
    return pid


def main(argv: list[str] | None = None) -> int:
    """
    Measure and print.

    @param argv: Command-line arguments.
    @return: The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args(argv)
    pin = (os.cpu_count() or 1) >= 2
    serverCPU, loadCPU = (0, 1) if pin else (None, None)
    work = tempfile.mkdtemp(prefix="netd-bench-h2cpu-")
    os.chmod(work, 0o755)
    root = os.path.join(work, "root")
    os.makedirs(root)
    with open(os.path.join(root, "f.bin"), "wb") as f:
        f.write(os.urandom(args.size))
    key, cert = bench.certificate(work)
    servers = [
        s
        for s in (
            bench.netdServer(work, root, key, cert, serverCPU),
            bench.nginxServer(work, root, key, cert, serverCPU),
        )
        if s is not None
    ]
    try:
        for server in servers:
            server.start("/f.bin")
        for server in servers:
            url = f"https://127.0.0.1:{server.port}/f.bin"
            bench.runH2load(url, 1000, 10, 10, loadCPU, args.timeout)
            pid = serverPid(server)
            costs = []
            for _ in range(args.repeat):
                before = cpuSeconds(pid)
                result = bench.runH2load(
                    url,
                    args.requests,
                    args.clients,
                    args.streams,
                    loadCPU,
                    args.timeout,
                )
                costs.append((cpuSeconds(pid) - before) / args.requests * 1e6)
                if result["failed"]:
                    print(f"{server.name}: {int(result['failed'])} failed")
            print(
                f"{server.name}: {args.size} bytes, h2load -n {args.requests} -c "
                f"{args.clients} -m {args.streams}: server CPU per request "
                + ", ".join(f"{c:.1f}" for c in costs)
                + " us"
            )
    finally:
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
