"""Run ``rsretrieve`` commands in forked children of one warm interpreter, so imports are paid once.

Reads one JSON job per line on stdin and answers one JSON line per job on stdout::

    job:    {"argv": [...], "log": "path", "out": "path" | null, "kill_after": seconds | null,
             "fault": [point, nth, signal?] | null}
    answer: {"rc": exit code, or -9 when killed, "seconds": wall time, "maxrss_kib": peak RSS of the child}

The child's stderr (and stdout, unless ``out`` names a file of its own) is appended to ``log``.
``kill_after`` SIGKILLs the child from outside after that many seconds (if it is still running).
``fault`` makes the child send itself SIGKILL (or the signal named) at the nth time it reaches a step
of the commit protocol (see FAULTS); both stand for ``kill -9`` at that moment, and SIGSTOP for a
writer that is still alive in the middle of a run. The parent imports LanceDB but never uses it, and
runs no torch code, so every child starts clean (LanceDB restarts its event loop in a forked child).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
import warnings

os.environ.setdefault("LANCEDB_LOG", "error")  # before LanceDB starts its logger
warnings.filterwarnings("ignore", "lancedb fork support")
import lancedb  # noqa: E402, F401  (restarts its event loop in forked children; unused here)

import indexer.build  # noqa: E402, F401  (torch, rasterio, faiss: the slow imports, shared by every child)
from rsretrieve import cli, models, store  # noqa: E402
from rsretrieve.store import index_files  # noqa: E402

models._open_clip()  # imports open_clip and registers the tiny test model's config
HANG_SECONDS = 300  # a child still running after this is killed (reported as rc -9), so a test cannot hang


def _signal_on(nth: int, signum: int, original, when):
    """``original`` wrapped to send ``signum`` to this process before its nth call that ``when`` accepts."""
    seen = 0

    def wrapper(*args, **kwargs):
        nonlocal seen
        if when(*args, **kwargs):
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    return wrapper


def _always(*args, **kwargs) -> bool:
    return True


def _replacing(suffix: str | tuple[str, ...]):
    return lambda src, dst, *args, **kwargs: str(dst).endswith(suffix)


FAULTS = {  # step of the commit protocol → how to stop there: (module, attribute, condition)
    "lance_appended": (index_files, "commit", _always),
    "records_written": (os, "replace", _replacing(".arrow")),
    "columns_appended": (os, "fsync", _always),  # fsync of appended columns and of every tmp file before rename
    "faiss_tmp_written": (os, "replace", _replacing((".faiss", ".codes"))),
    "manifest_tmp_written": (os, "replace", _replacing(store.MANIFEST)),
    "committed": (store.StoreWriter, "_remove_stale_index_files", _always),  # manifest replaced, not tidied
}


def _raise_on(nth: int, error: int, original, when):
    """``original`` that fails with OSError(error) the nth time ``when(*args)`` holds (a failing file-system call)."""
    seen = 0

    def wrapper(*args, **kwargs):
        nonlocal seen
        if when(*args, **kwargs):
            seen += 1
            if seen >= nth:
                raise OSError(error, os.strerror(error))
        return original(*args, **kwargs)

    return wrapper


def _install_fault(point: str, nth: int, how: str = "SIGKILL") -> None:
    """Stop at ``point`` the nth time: by a signal (``SIGKILL``, ``SIGINT``) or an errno (``ENOSPC``, ``EIO``)."""
    owner, name, when = FAULTS[point]
    if how.startswith("SIG"):
        setattr(owner, name, _signal_on(nth, signal.Signals[how], getattr(owner, name), when))
    else:
        setattr(owner, name, _raise_on(nth, getattr(errno, how), getattr(owner, name), when))


def _child(job: dict) -> None:
    """Run the command with stdout and stderr going to the job's log; never returns."""
    code = 1
    try:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        if job.get("out"):
            os.dup2(os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
        if job.get("fault"):
            _install_fault(*job["fault"])
        code = cli.main(job["argv"])
    except SystemExit as error:  # argparse
        code = error.code if isinstance(error.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run(job: dict) -> dict:
    """Fork a child for the job, kill it if asked, and report how it ended."""
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(job)
    kill_after = job.get("kill_after")
    deadline = started + (HANG_SECONDS if kill_after is None else kill_after)
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() >= deadline:
            os.kill(pid, signal.SIGKILL)
            done, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.005)
    return {
        "rc": os.waitstatus_to_exitcode(status),
        "seconds": round(time.perf_counter() - started, 3),
        "maxrss_kib": usage.ru_maxrss,
    }


def main() -> None:
    """Answer jobs from stdin until it closes."""
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
