"""A process's own peak resident memory, for the benches that run their subjects in children.

Linux starts a child's peak resident size (``ru_maxrss``, from ``getrusage`` or ``wait4``) at
its parent's resident size when it forked, and exec keeps it: a bench holding 300 MB made
every child it started report at least 300 MB. ``VmHWM`` in ``/proc/self/status`` belongs to
the process's address space, new at exec, so it is the child's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Run as `python -c LAUNCHER RESULT COMMAND...`: a small process starts COMMAND, so the
# command's peak starts from the launcher's few MB, not from the bench's; its exit code and
# peak (wait4) go to the file RESULT.
LAUNCHER = """
import json, os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
with open(sys.argv[1], "w") as result:
    json.dump({"returncode": os.waitstatus_to_exitcode(status), "peak_mb": usage.ru_maxrss / 1024}, result)
"""


def own_peak_mb() -> float:
    """This process's peak resident memory since it started (its exec), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_measured(command: list[str], result_path: os.PathLike, **popen_kwargs) -> tuple[int, float]:
    """Run a command to its end; its exit code and its own peak resident memory in MB."""
    subprocess.run([sys.executable, "-c", LAUNCHER, os.fspath(result_path), *command], check=True, **popen_kwargs)
    with open(result_path) as result:
        figures = json.load(result)
    return figures["returncode"], figures["peak_mb"]
