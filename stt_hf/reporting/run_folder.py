"""A run's output folder: one run at a time, and an earlier run's results never replaced by surprise.

`claim_output_dir` takes an exclusive lock on the folder (`.stt-hf.lock`, an advisory `flock` that the
operating system drops when the process ends, however it ends) and refuses a folder that holds an
earlier run's results unless the caller resumes that run or asked to overwrite it. A second run into
a busy folder is refused at once, naming the process that holds it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

LOCK_NAME = ".stt-hf.lock"
# What marks a folder as holding a run's results.
RESULT_FILES = ("model.safetensors", "config.json", "metrics.json")
CHECKPOINT_GLOB = "checkpoint-*"


class OutputDirError(ValueError):
    """The output folder is in use by another run, or holds results that would be replaced."""


def earlier_results(folder: Path) -> list[str]:
    """Names of the result files and checkpoint folders in `folder`, sorted."""
    if not folder.is_dir():
        return []
    found = [name for name in RESULT_FILES if (folder / name).exists()]
    return sorted(found + [p.name for p in folder.glob(CHECKPOINT_GLOB) if p.is_dir()])


def check_earlier_results(folder: str | os.PathLike, *, overwrite: bool, resuming: bool) -> None:
    """Raise OutputDirError when `folder` holds results that neither `overwrite` nor `resuming` allows
    this run to replace."""
    found = earlier_results(Path(folder))
    if found and not (overwrite or resuming):
        shown = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
        raise OutputDirError(f"--output_dir {folder} holds an earlier run's results ({shown}); pass "
                             f"--overwrite_output_dir true to replace them, --resume_from_checkpoint latest "
                             f"to continue that run, or give another --output_dir")


class OutputDirLock:
    """An exclusive lock on one output folder, held until `release()` or the end of the process."""

    def __init__(self, folder: Path, handle):
        self.folder, self._handle = folder, handle

    def release(self) -> None:
        if self._handle is not None:
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
            self._handle.close()  # closing drops the flock
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _lock(folder: Path, command: str) -> OutputDirLock:
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return OutputDirLock(folder, None)
    handle = open(folder / LOCK_NAME, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        try:
            info = json.loads(holder)
            holder = (f"pid {info['pid']} on {info['host']}, since {info['started']}: "
                      f"{info['command']}")
        except (ValueError, KeyError):
            holder = "another process"
        raise OutputDirError(f"--output_dir {folder} is in use by another run ({holder}); give each run "
                             f"its own --output_dir, or wait until that one ends") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                             "command": command}))
    handle.flush()
    return OutputDirLock(folder, handle)


def claim_output_dir(folder: str | os.PathLike, *, command: str, overwrite: bool = False,
                     resuming: bool = False) -> OutputDirLock:
    """Lock `folder` for this run; refuse it if it holds an earlier run's results.

    `resuming`: the run continues the one in the folder (its checkpoints are its own). `overwrite`: the
    earlier results go; the checkpoint folders are removed at once, so neither a later `latest` resume nor
    the Trainer's rotation mixes the two runs.
    """
    folder = Path(folder)
    lock = _lock(folder, command)
    try:
        check_earlier_results(folder, overwrite=overwrite, resuming=resuming)
    except OutputDirError:
        lock.release()
        raise
    if overwrite and not resuming:
        for checkpoint in folder.glob(CHECKPOINT_GLOB):
            shutil.rmtree(checkpoint)
    return lock


__all__ = ["LOCK_NAME", "OutputDirError", "OutputDirLock", "check_earlier_results", "claim_output_dir",
           "earlier_results"]
