"""The ``slurm`` sweep launcher: each run of a sweep is one task of a SLURM job array.

Submission goes through `submitit <https://github.com/facebookincubator/submitit>`_ (what
DINO-WM and Hydra's SLURM launcher use), an optional dependency: ``pip install
'wm-framework[slurm]'``. A recipe names the launcher in its ``[sweep]`` table::

    [sweep]
    grid = { "train.lr" = [1e-4, 3e-4] }
    launcher = { type = "slurm", partition = "gpu", timeout_min = 240, gpus_per_node = 1 }

``wm run`` prepares every run directory and collects the stores (as for ``local``), then
submits one array with one task per unfinished run and waits, printing a line whenever the
counts of finished / running / waiting tasks change. Each task runs the run's command line
(``python -m wm_framework.cli run --resume SWEEP/LABEL``) in a subprocess with the job's
``env`` added, in the directory ``wm run`` was started from; its output goes to the task's
submitit log (``<folder>/<job id>/<job id>_0_log.out``). Runs that fail are named one per
line with that log. A task that SLURM preempts or that reaches its time limit is requeued
(``max_num_timeout`` times) and continues from the run's last checkpoint, because the
command it runs is ``--resume``.

``cluster = "local"`` (submitit's local executor: one process per task on this machine)
and ``"debug"`` (every task in this process, one after another) run the same path without
SLURM; the tests use ``"local"``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from wm_framework.errors import WMRuntimeError, WMUsageError
from wm_framework.runs.launchers import SweepJob

INSTALL_HINT = "pip install 'wm-framework[slurm]'"
CLUSTERS = ("slurm", "local", "debug")


def import_submitit():
    """submitit, or the one-line usage error saying how to install it."""
    try:
        import submitit
    except ImportError as e:
        raise WMUsageError(f"sweep.launcher: launcher 'slurm' needs submitit, which is not installed: "
                           f"{INSTALL_HINT}") from e
    return submitit


class SlurmLauncher:
    """Submit a sweep's runs as a SLURM job array through submitit and wait for them."""

    def __init__(self, partition: str | None = None, timeout_min: int = 240, gpus_per_node: int = 1,
                 cpus_per_task: int | None = None, mem_gb: float | None = None, account: str | None = None,
                 qos: str | None = None, array_parallelism: int = 256, folder: str | None = None,
                 cluster: str = "slurm", name: str | None = None, setup: list[str] | None = None,
                 additional_parameters: dict | None = None, max_num_timeout: int = 3, poll_s: float = 10.0):
        """Args:
            partition: SLURM partition (``--partition``); default: the cluster's default partition.
            timeout_min: time limit of each task in minutes (``--time``). A task that reaches it is
                requeued and resumes from its last checkpoint (see ``max_num_timeout``).
            gpus_per_node: GPUs per run (each run is one task on one node); 0 for CPU partitions.
            cpus_per_task: CPU cores per run (``--cpus-per-task``); default: the cluster's default.
                Data-loader workers and collection envs run on these.
            mem_gb: memory per run in GB (``--mem``); default: the cluster's default.
            account: SLURM account to charge (``--account``), where the cluster needs one.
            qos: quality of service (``--qos``), where the cluster uses them.
            array_parallelism: at most this many runs of the array at once (``--array=0-N%K``).
            folder: where submitit writes its scripts, pickles and logs, one folder per task
                (default: ``slurm/`` in the sweep's run directory).
            cluster: ``slurm`` submits with sbatch; ``local`` runs every task at once as a process
                on this machine (each sees GPUs ``0..gpus_per_node-1``) and ``debug`` runs them in
                this process, one after another (opening pdb on a failure), both through the same
                submitit code path: for trying a sweep and for tests. They ignore the SLURM-only options.
            name: SLURM job name (default: ``wm-`` and the sweep's run directory name).
            setup: shell lines run in the batch script before each task, e.g.
                ``["module load cuda/12.4", "source .venv/bin/activate"]``.
            additional_parameters: further sbatch options, e.g. ``{constraint = "a100"}``.
            max_num_timeout: how many times a task may be requeued after a time-out or
                preemption before it counts as failed.
            poll_s: how often the submitter checks the tasks' states (SLURM is asked through
                sacct, which clusters ask you not to call every second).
        """
        if cluster not in CLUSTERS:
            raise WMUsageError(f"sweep.launcher: launcher 'slurm': cluster must be one of {', '.join(CLUSTERS)}, "
                               f"got {cluster!r}")
        for key, value, low in (("timeout_min", timeout_min, 1), ("gpus_per_node", gpus_per_node, 0),
                                ("array_parallelism", array_parallelism, 1), ("max_num_timeout", max_num_timeout, 0),
                                ("cpus_per_task", cpus_per_task, 1)):
            # submitit asserts on types deep inside update_parameters; say it here, with the key
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise WMUsageError(f"sweep.launcher: launcher 'slurm': {key} must be a whole number >= {low}, "
                                   f"got {value!r}")
        if mem_gb is not None and (isinstance(mem_gb, bool) or not isinstance(mem_gb, (int, float)) or mem_gb <= 0):
            raise WMUsageError(f"sweep.launcher: launcher 'slurm': mem_gb must be a positive number, got {mem_gb!r}")
        if setup is not None and (not isinstance(setup, list) or not all(isinstance(s, str) for s in setup)):
            raise WMUsageError("sweep.launcher: launcher 'slurm': setup must be a list of shell lines (strings)")
        if additional_parameters is not None and not isinstance(additional_parameters, dict):
            raise WMUsageError("sweep.launcher: launcher 'slurm': additional_parameters must be a table")
        if not poll_s > 0:
            raise WMUsageError(f"sweep.launcher: launcher 'slurm': poll_s must be > 0, got {poll_s!r}")
        self.partition, self.timeout_min, self.gpus_per_node = partition, timeout_min, gpus_per_node
        self.cpus_per_task, self.mem_gb, self.account, self.qos = cpus_per_task, mem_gb, account, qos
        self.array_parallelism, self.folder, self.cluster, self.name = array_parallelism, folder, cluster, name
        self.setup, self.additional_parameters = setup, additional_parameters
        self.max_num_timeout, self.poll_s = max_num_timeout, float(poll_s)

    @classmethod
    def validate(cls, **params) -> None:
        """Called by ``check_launcher`` when the recipe is validated, before any run directory
        exists or any store is collected: every value, and that submitit (and sbatch, for
        ``cluster = "slurm"``) is there."""
        cls(**params).check_environment()

    def check_environment(self) -> None:
        """submitit importable and, to submit to SLURM, sbatch on PATH (else one usage line)."""
        import_submitit()
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise WMUsageError("sweep.launcher: launcher 'slurm': sbatch not found on PATH; submit from a SLURM "
                               "login node, or set cluster = \"local\" to run the array on this machine")

    def executor(self, folder: Path, name: str):
        """The submitit executor for this launcher's options, writing under ``folder``."""
        submitit = import_submitit()
        # "%j" gives each task its own folder (submitit writes %A_%a for array tasks).
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster,
                                         slurm_max_num_timeout=self.max_num_timeout)
        params = {"name": name, "timeout_min": self.timeout_min, "gpus_per_node": self.gpus_per_node,
                  "cpus_per_task": self.cpus_per_task, "mem_gb": self.mem_gb, "nodes": 1, "tasks_per_node": 1,
                  # One log per run: the failure report names a single file.
                  "stderr_to_stdout": True,
                  "slurm_partition": self.partition, "slurm_account": self.account, "slurm_qos": self.qos,
                  "slurm_array_parallelism": self.array_parallelism, "slurm_setup": self.setup,
                  "slurm_additional_parameters": self.additional_parameters}
        if self.cluster == "debug":
            params = {}  # runs in this process: none of the resource options apply
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return executor

    def __call__(self, jobs: list[SweepJob]) -> None:
        todo = [j for j in jobs if not j.done]
        if not todo:
            return
        self.check_environment()  # again: `wm run --resume` builds the launcher without validating a recipe
        sweep_dir = _sweep_dir(todo)
        folder = Path(self.folder) if self.folder else sweep_dir / "slurm"
        folder.mkdir(parents=True, exist_ok=True)
        executor = self.executor(folder, self.name or f"wm-{sweep_dir.name}")
        cwd = os.getcwd()  # relative paths in the recipes (stores, data) resolve from where `wm run` started
        task = SweepRunTask()
        try:
            subs = executor.map_array(task, [j.argv for j in todo], [dict(j.env) for j in todo], [cwd] * len(todo))
        except import_submitit().core.utils.FailedJobError as e:  # sbatch said no; its words are the message
            raise WMRuntimeError(f"sbatch refused the sweep's job array: {' '.join(str(e).split())} "
                                 f"(check sweep.launcher: partition, account, qos, timeout_min, gpus_per_node); "
                                 f"then: wm run --resume {sweep_dir}") from e
        # SLURM names array tasks <array id>_<index>: one array id stands for all of them.
        ids = sorted({s.job_id.split("_")[0] if self.cluster == "slurm" else s.job_id for s in subs})
        _say(f"slurm: submitted {len(todo)} run(s) as {self.cluster} job {', '.join(ids)}; logs under {folder}")
        try:
            self._wait(subs)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): cancel what is still queued or running, as the local
            # launcher stops its subprocesses; `wm run --resume` submits the unfinished runs again.
            for sub in subs:
                try:
                    if not sub.done():
                        sub.cancel(check=False)
                except Exception:  # noqa: BLE001 - best effort on the way out; the first error wins
                    pass
            raise
        finally:
            try:  # submitit (and its local task controller) make a literal, empty "%j" folder: not ours to keep
                (folder / "%j").rmdir()
            except OSError:
                pass
        failed = []
        for job, sub in zip(todo, subs):
            error = sub.exception()
            if error is None and job.done:
                continue
            failed.append(f"  {job.label}: {self.cluster} job {sub.job_id} {_outcome(sub)}, log {sub.paths.stdout}")
        if failed:
            raise WMRuntimeError(f"{len(failed)} of {len(todo)} sweep run(s) failed:\n" + "\n".join(failed)
                                 + f"\nafter fixing the cause, submit the unfinished runs with: wm run --resume {sweep_dir}")

    def _wait(self, subs) -> None:
        last = None
        while True:
            finished = [s.done() for s in subs]
            done = sum(finished)
            running = sum(1 for s, f in zip(subs, finished) if not f and _state(s) == "RUNNING")
            counts = (done, running, len(subs) - done - running)
            if counts != last:  # one line per change, not per poll: the output stays readable in a log
                _say(f"slurm: {done}/{len(subs)} done, {running} running, {counts[2]} waiting")
                last = counts
            if done == len(subs):
                return
            time.sleep(self.poll_s)


class SweepRunTask:
    """What one array task executes: a sweep run's command line, in a subprocess.

    A module-level class, not a closure: submitit pickles it and the task process imports it
    back. Its ``checkpoint`` method is what makes submitit requeue a preempted or timed-out
    task instead of failing it; the requeued task runs the same ``--resume`` command, which
    continues from the run's last checkpoint.
    """

    def __init__(self, poll_s: float = 1.0, stop_grace_s: float = 60.0):
        self.poll_s = poll_s
        self.stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen | None = None

    def __getstate__(self):
        return {"poll_s": self.poll_s, "stop_grace_s": self.stop_grace_s}  # never pickle a live process

    def __setstate__(self, state):
        self.__init__(**state)

    def __call__(self, argv: list[str], env: dict[str, str], cwd: str) -> int:
        # The task's own environment (what SLURM set: CUDA_VISIBLE_DEVICES, SLURM_*) plus the job's.
        full_env = dict(os.environ, **env)
        self._proc = subprocess.Popen(argv, env=full_env, cwd=cwd, preexec_fn=_ignore_preemption_signal)
        try:
            # Poll instead of wait(): submitit's signal handler calls checkpoint() on this thread,
            # and a handler that runs inside Popen.wait() could not reap the child itself.
            while (rc := self._proc.poll()) is None:
                time.sleep(self.poll_s)
        except BaseException:
            # Cancelled (the local executor sends SIGINT) or requeued: the run must not outlive its task.
            _stop(self._proc, self.stop_grace_s)
            raise
        if rc != 0:
            raise RuntimeError(f"sweep run exited with code {rc}: {shlex.join(argv)}")
        return rc

    def checkpoint(self, argv: list[str], env: dict[str, str], cwd: str):
        """On preemption or the time limit: stop the run, then hand submitit the same command
        to requeue (submitit calls this from its signal handler, on the thread running ``__call__``)."""
        if self._proc is not None:
            _stop(self._proc, self.stop_grace_s)
        import submitit

        return submitit.helpers.DelayedSubmission(SweepRunTask(self.poll_s, self.stop_grace_s), argv, env, cwd)


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM (the run unwinds like Ctrl-C and releases its run lock), SIGKILL after ``grace_s``.

    Only ``poll()``: this may run inside a signal handler that interrupted a ``poll()`` of the
    same process, and ``wait()`` would then block on the lock that call holds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()


def _ignore_preemption_signal() -> None:
    """In the run's process, before exec: ignore the signal SLURM sends ahead of the time limit.

    SLURM signals every process of the job step; the run would die of it (the default action
    of SIGUSR2) before the task's handler could stop it cleanly and requeue. An ignored signal
    stays ignored across exec.
    """
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")  # the variable submitit reads for the same choice
    sig = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGUSR2)
    signal.signal(sig, signal.SIG_IGN)


def _sweep_dir(jobs: list[SweepJob]) -> Path:
    """The sweep's run directory: the runs live in ``<run>/sweep/<label>``."""
    from wm_framework.runs.sweep_dirs import SWEEP_SUBDIR

    parent = Path(os.path.commonpath([str(j.path.parent.resolve()) for j in jobs]))
    return parent.parent if parent.name == SWEEP_SUBDIR else parent


def _state(sub) -> str:
    try:
        return str(sub.state)
    except Exception:  # noqa: BLE001 - sacct hiccups must not mask the report
        return "UNKNOWN"


def _outcome(sub) -> str:
    """How a failed task ended: SLURM's word where it says more (TIMEOUT, OUT_OF_MEMORY,
    CANCELLED, ...); the local executor calls a failed task FINISHED, which would mislead."""
    state = _state(sub).split()[0] if _state(sub).strip() else "UNKNOWN"
    return "failed" if state.upper() in ("FINISHED", "COMPLETED", "DONE", "UNKNOWN", "RUNNING") else state


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
