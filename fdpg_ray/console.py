"""What a run prints, and where the libraries' output goes (docs/design.md, "Console").

By default a run prints its progress bar, our own one-line errors and the final table.
Everything else that the processes of a run write (Ray, Ray Train, vLLM, transformers and
torch, Python warnings and C++ messages alike) goes to ``RUN_DIR/logs/ROLE-PID.log``, one
file per process.  ``fdpg-ray train --verbose`` (environment variable ``FDPG_RAY_VERBOSE=1``)
leaves all of it on the console instead, as Ray relays it.

How: each of our Ray actor processes (rollout, scorer, run sink, learner workers) calls
:func:`send_output_to_log` when it starts; that points its file descriptors 1 and 2 at the
log file, so even output that bypasses Python goes there, and keeps a duplicate of the
original stderr for :func:`console` (what Ray relays to the driver).  A ``--local`` run does
the same in the driver process for the length of the run (:func:`output_to_log`,
``RUN_DIR/logs/local-PID.log``); the errors and the table printed after it reach the user.  Ray's own system logs (raylet,
GCS, Ray Train's controller) stay in Ray's session directory (``/tmp/ray/session_latest/logs``).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

VERBOSE_ENV = "FDPG_RAY_VERBOSE"
LOGS_SUBDIR = "logs"

_console: TextIO | None = None


# Ray Train's PlacementGroupCleaner asks Ray's state API every second whether the training
# controller is alive.  The state API is served by Ray's dashboard, which a run's local Ray does
# not start (include_dashboard=False: it needs ray[default]'s extra packages).  Left to guess,
# the state API looks for a cluster on the machine: with one it finds no API server and the
# cleaner warned "Failed to query Ray Train Controller actor state" once a second; with a second
# Ray instance on the machine it raised "Found multiple active Ray instances" (a 30-line
# traceback), and a dashboard of another instance could even answer for ours.  So a local run
# names the API server as absent (NO_API_SERVER, actors.driver.init_ray) and the cleaner's
# warnings stay in its log.  The cleaner's task (removing the placement group of a controller
# that died while the job lives on) is out of reach without a dashboard either way; a job that
# ends takes its placement groups with it.
NO_API_SERVER = "http://127.0.0.1:1"  # nothing listens on port 1: every state-API call fails at once
_QUIET_RAY_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def ray_worker_setup() -> None:
    """Ray's ``worker_process_setup_hook`` for every worker process of a run's Ray job
    (:func:`actors.driver.init_ray`), Ray Train's own actors included: the loggers in
    ``_QUIET_RAY_LOGGERS`` keep only their errors, unless ``--verbose``."""
    import logging

    if not verbose():
        for name in _QUIET_RAY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


def verbose() -> bool:
    """True when the libraries' output should stay on the console (``--verbose``)."""
    return os.environ.get(VERBOSE_ENV) == "1"


def console() -> TextIO:
    """The stream for the progress bar and our own messages: the process's original stderr
    (before :func:`send_output_to_log`), else ``sys.stderr``."""
    return _console or sys.stderr


def _redirect(run_dir, role: str) -> tuple[int, int] | None:
    """Point fds 1 and 2 at RUN_DIR/logs/ROLE-PID.log; return duplicates of the old ones."""
    global _console
    if verbose() or run_dir is None or _console is not None:
        return None
    logs = Path(run_dir) / LOGS_SUBDIR
    try:
        logs.mkdir(parents=True, exist_ok=True)
        fd = os.open(logs / f"{role}-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    _console = os.fdopen(os.dup(2), "w", buffering=1)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return saved


def send_output_to_log(run_dir: str | os.PathLike | None, role: str) -> bool:
    """For the life of this process (a Ray actor of a run): send its stdout and stderr (file
    descriptors 1 and 2) to ``RUN_DIR/logs/ROLE-PID.log``; :func:`console` keeps the original
    stderr, which Ray relays to the driver.

    Does nothing, and returns False, when verbose, when ``run_dir`` is None (an actor built
    outside a run, e.g. in a test), when already done in this process, or when the run
    directory cannot be created from this node (a cluster without a shared file system:
    the output then stays in Ray's own worker logs on that node).
    """
    saved = _redirect(run_dir, role)
    if saved is None:
        return False
    for fd in saved:
        os.close(fd)
    return True


@contextmanager
def output_to_log(run_dir: str | os.PathLike | None, role: str = "local"):
    """The same for a block of the driver process (``fdpg-ray train --local``), undone at the
    end of the block, so that the summary and any error printed after it reach the console."""
    global _console
    saved = _redirect(run_dir, role)
    try:
        yield
    finally:
        if saved is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            _console.close()
            _console = None
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


class Progress:
    """A run's progress on :func:`console`: a tqdm bar on a terminal; elsewhere (a Ray
    worker, whose stderr is a file that Ray relays line by line, or a log) about ten plain
    lines per run, ``DESC: step K/N  key=value ...  S s/step``, so that a relayed bar's
    carriage-return updates do not become one console line each.

    ``update(postfix)`` marks one more step done (``postfix``: {name: text}); ``close()``.
    ``first_step``: the number of the first step counted (a run's metrics row of step 0, the
    base model, comes first: its runs count ``total`` = steps + 1 rows from step 0).
    """

    LINES = 10  # plain lines per run (plus the last step)

    def __init__(self, total: int, initial: int = 0, desc: str = "", first_step: int = 1):
        self.total, self.done, self.desc, self.first_step = total, initial, desc, first_step
        self.stream = console()
        self.every = max(1, -(-total // self.LINES))
        self.bar = None
        isatty = getattr(self.stream, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream)
        self._t0, self._n0 = time.monotonic(), initial

    def update(self, postfix: dict[str, str]) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(postfix)
            return
        if self.done % self.every == 0 or self.done == self.total:
            rate = (time.monotonic() - self._t0) / max(self.done - self._n0, 1)
            fields = "  ".join(f"{k}={v}" for k, v in postfix.items())
            shift = self.first_step - 1
            print(f"{self.desc}: step {self.done + shift}/{self.total + shift}  {fields}  {rate:.1f} s/step",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
