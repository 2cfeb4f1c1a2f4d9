"""The `slurm` sweep launcher: submitit job arrays, run here through submitit's local executor
and through stand-in sbatch/srun/sacct commands (the SLURM code path, without a cluster)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _reliability_util import tiny_recipe
from conftest import run_wm

# The `slurm` extra (in `all`); its absence is tested with a stand-in module, which needs no submitit.
needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="submitit not installed: pip install 'wm-framework[slurm]'")

SWEEP_TABLE = """
[sweep]
grid = {{ "train.lr" = [1e-3, 3e-3] }}
launcher = {{ type = "slurm", cluster = "local", gpus_per_node = 0, timeout_min = 10, poll_s = 0.5{extra} }}
"""


def _sweep_recipe(root: Path, extra: str = "") -> Path:
    recipe = tiny_recipe(root)
    recipe.write_text(recipe.read_text() + SWEEP_TABLE.format(extra=extra))
    return recipe


@needs_submitit
def test_sweep_runs_end_to_end_as_submitit_local_jobs(tmp_path):
    recipe = _sweep_recipe(tmp_path)
    t0 = time.time()
    r = run_wm("run", str(recipe), "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = list((tmp_path / "runs").iterdir())
    subs = sorted((run / "sweep").iterdir())
    assert [p.name for p in subs] == ["lr=0.001", "lr=0.003"]
    for sub in subs:
        assert (sub / "DONE").is_file() and (sub / "checkpoints" / "last.safetensors").is_file()
    res = json.loads((run / "results.json").read_text())["sweep"]
    assert set(res) == {"lr=0.001", "lr=0.003"} and all(v["global_step"] == 4 for v in res.values())
    assert "Sweep runs" in (run / "report.md").read_text()
    # One submitit folder per task, with the run's output in its log; no stray "%j" folder.
    tasks = sorted(p for p in (run / "slurm").iterdir())
    assert len(tasks) == 2 and all(p.is_dir() and p.name.isdigit() for p in tasks)
    logs = [next(p.glob("*_log.out")) for p in tasks]
    assert all("Job completed successfully" in log.read_text() for log in logs)
    assert "slurm: submitted 2 run(s) as local job" in r.stderr
    assert "slurm: 2/2 done, 0 running, 0 waiting" in r.stderr
    assert time.time() - t0 < 90


def test_missing_submitit_is_one_line_exit_2_before_any_run_directory(tmp_path):
    # A stand-in `submitit` first on the path whose import fails, as on an install without the extra.
    stub = tmp_path / "stub" / "submitit"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError(\"No module named 'submitit'\")\n")
    recipe = _sweep_recipe(tmp_path)
    env = {"PYTHONPATH": os.pathsep.join([str(stub.parent), os.environ.get("PYTHONPATH", "")])}
    r = run_wm("run", str(recipe), "--out", str(tmp_path / "runs"), cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "submitit" in lines[0] and "pip install 'wm-framework[slurm]'" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tiny.zarr").exists()


@needs_submitit
def test_launcher_table_is_checked_when_the_recipe_is_validated(monkeypatch, tmp_path):
    from wm_framework.errors import WMUsageError
    from wm_framework.plugins import get_registry
    from wm_framework.runs.launchers import check_launcher

    assert get_registry().get("launchers", "slurm").plugin == "core"
    with pytest.raises(WMUsageError, match="cluster must be one of slurm, local, debug"):
        check_launcher({"type": "slurm", "cluster": "k8s"})
    with pytest.raises(WMUsageError, match="did you mean 'timeout_min'"):
        check_launcher({"type": "slurm", "timeout_mins": 10})
    with pytest.raises(WMUsageError, match="gpus_per_node must be a whole number >= 0"):
        check_launcher({"type": "slurm", "cluster": "local", "gpus_per_node": 0.5})
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(WMUsageError, match="sbatch not found"):
        check_launcher({"type": "slurm"})
    check_launcher({"type": "slurm", "cluster": "local"})


# ----------------------------------------------------------------------------- the SLURM path
# Stand-ins for the SLURM commands submitit calls: sbatch starts every array task of the batch
# script at once (with the SLURM_* variables a real array task has), srun sends the task's
# output to its --output file, sacct knows no job (submitit then goes by the result files).
FAKE_SBATCH = r"""
import os, re, subprocess, sys
if os.environ.get("FAKE_SBATCH_REFUSE"):
    sys.exit(print("sbatch: error: invalid partition specified: nope", file=sys.stderr) or 1)
script = sys.argv[-1]
text = open(script).read()
with open(os.environ["FAKE_SLURM_SCRIPTS"], "a") as f:
    f.write(text + "\n#----\n")
job = 4242
m = re.search(r"#SBATCH --array=(\d+)-(\d+)", text)
for i in range(int(m[1]), int(m[2]) + 1) if m else [None]:
    env = dict(os.environ, SLURM_JOB_ID=str(job if i is None else job + 1 + i), SLURM_NTASKS="1", SLURM_PROCID="0",
               SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="localhost")
    if i is not None:
        env.update(SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=str(i))
    subprocess.Popen(["bash", script], env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"Submitted batch job {job}")
"""
FAKE_SRUN = r"""
import os, sys
args, out = sys.argv[1:], None
while args and args[0].startswith("--"):
    if args[0] in ("--output", "--error"):
        out = out or args[1]
        args = args[2:]
    else:
        args = args[1:]
ids = {"%A": os.environ.get("SLURM_ARRAY_JOB_ID", ""), "%a": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
       "%j": os.environ["SLURM_JOB_ID"], "%t": "0"}
for k, v in ids.items():
    out = out.replace(k, v)
os.makedirs(os.path.dirname(out), exist_ok=True)
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.dup2(fd, 1)
os.dup2(fd, 2)
os.execvp(args[0], args)
"""
FAKE_SACCT = 'print("JobID|State|NodeList")\n'

# A stand-in sweep run: records its environment and working directory, fails when told to.
JOB = r"""
import json, os, sys
json.dump({"mark": os.environ.get("WM_TEST_MARK"), "cwd": os.getcwd(), "usr2": str(__import__("signal").getsignal(12))},
          open(os.path.join(sys.argv[1], "job.json"), "w"))
if sys.argv[2] == "ok":
    open(os.path.join(sys.argv[1], "DONE"), "w").close()
sys.exit(0 if sys.argv[2] == "ok" else 3)
"""


def _fake_slurm(tmp_path: Path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("sacct", FAKE_SACCT), ("scancel", "")):
        exe = bin_dir / name
        exe.write_text(f"#!{sys.executable}\n{body}")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    scripts = tmp_path / "scripts.txt"
    monkeypatch.setenv("FAKE_SLURM_SCRIPTS", str(scripts))
    return scripts


@needs_submitit
def test_slurm_array_options_logs_and_failures_through_sbatch(tmp_path, monkeypatch, capsys):
    from wm_framework.errors import WMRuntimeError
    from wm_framework.runs.launchers import SweepJob
    from wm_framework.runs.slurm import SlurmLauncher

    scripts = _fake_slurm(tmp_path, monkeypatch)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    jobs = []
    for i, outcome in enumerate(["ok", "fail", "ok"]):
        path = tmp_path / "run" / "sweep" / f"r{i}"
        path.mkdir(parents=True)
        jobs.append(SweepJob(f"r{i}", path, [sys.executable, "-c", JOB, str(path), outcome],
                             env={"WM_TEST_MARK": f"m{i}"}))
    launcher = SlurmLauncher(partition="gpu", timeout_min=30, gpus_per_node=1, cpus_per_task=4, mem_gb=8,
                             account="proj", qos="high", array_parallelism=2, setup=["export WM_SETUP_RAN=1"],
                             additional_parameters={"constraint": "a100"}, poll_s=0.2)
    with pytest.raises(WMRuntimeError) as err:
        launcher(jobs)
    assert "slurm: submitted 3 run(s) as slurm job 4242; logs under" in capsys.readouterr().err
    # One line per failed run, naming its log; then how to go on.
    lines = str(err.value).splitlines()
    assert lines[0] == "1 of 3 sweep run(s) failed:"
    folder = tmp_path / "run" / "slurm"
    assert lines[1] == f"  r1: slurm job 4242_1 failed, log {folder / '4242_1' / '4242_1_0_log.out'}"
    assert lines[2].endswith(f"wm run --resume {tmp_path / 'run'}")
    assert [j.done for j in jobs] == [True, False, True]
    assert "sweep run exited with code 3" in (folder / "4242_1" / "4242_1_0_log.out").read_text()
    records = [json.loads((j.path / "job.json").read_text()) for j in jobs]
    assert [r["mark"] for r in records] == ["m0", "m1", "m2"]  # job.env reaches the run
    assert {r["cwd"] for r in records} == {str(workdir)}  # runs start where `wm run` did
    assert {r["usr2"] for r in records} == {str(signal.SIG_IGN)}  # the preemption signal is the task's to handle
    script = scripts.read_text()
    for flag in ("--partition=gpu", "--time=30", "--gpus-per-node=1", "--cpus-per-task=4", "--mem=8GB",
                 "--account=proj", "--qos=high", "--array=0-2%2", "--constraint=a100", "--job-name=wm-run",
                 "--ntasks-per-node=1", "--nodes=1"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "export WM_SETUP_RAN=1" in script
    assert not (folder / "%j").exists()

    # `wm run --resume` hands over every job again: only the unfinished one is submitted.
    (jobs[1].path / "job.json").unlink()
    jobs[1].argv[-1] = "ok"
    scripts.write_text("")
    launcher(jobs)
    assert all(j.done for j in jobs)
    assert "--array" not in scripts.read_text()  # a single task: a plain job

    # sbatch refusing the array (a partition that does not exist) is one error with its reason.
    monkeypatch.setenv("FAKE_SBATCH_REFUSE", "1")
    (jobs[0].path / "DONE").unlink()
    with pytest.raises(WMRuntimeError, match="sbatch refused the sweep's job array: sbatch: error: invalid partition"):
        launcher(jobs)


@needs_submitit
def test_preempted_task_stops_its_run_and_hands_back_the_same_command(tmp_path):
    import submitit

    from wm_framework.runs.slurm import SweepRunTask

    task = SweepRunTask(poll_s=0.05, stop_grace_s=10)
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("error", _call(task, argv)))
    thread.start()
    deadline = time.time() + 10
    while task._proc is None and time.time() < deadline:
        time.sleep(0.05)
    proc = task._proc
    proc.send_signal(signal.SIGUSR2)  # what SLURM sends every process of the step before the time limit
    time.sleep(0.3)
    assert proc.poll() is None  # the run ignores it: the task decides
    t0 = time.time()
    requeued = task.checkpoint(argv, {}, str(tmp_path))
    assert proc.poll() == -signal.SIGTERM and time.time() - t0 < 5  # stopped as Ctrl-C would
    assert isinstance(requeued, submitit.helpers.DelayedSubmission)
    assert isinstance(requeued.function, SweepRunTask) and requeued.args == (argv, {}, str(tmp_path))
    thread.join(10)
    assert "exited with code" in str(result["error"])


def _call(task, argv):
    try:
        task(argv, {}, os.getcwd())
    except RuntimeError as e:
        return e
    return None


INTERRUPTED = r"""
import sys
from pathlib import Path
from wm_framework.runs.launchers import SweepJob
from wm_framework.runs.slurm import SlurmLauncher
root = Path(sys.argv[1])
run = [sys.executable, "-c", f"import os, time; open({str(root / 'pid')!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
SlurmLauncher(cluster="local", gpus_per_node=0, poll_s=0.1)([SweepJob("r0", root / "r0", run)])
"""


@needs_submitit
def test_interrupted_launcher_cancels_its_tasks_and_their_runs(tmp_path):
    (tmp_path / "r0").mkdir()
    # SIGINT at its default: a process started from a non-interactive shell may inherit it ignored.
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(tmp_path)], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pid_file = tmp_path / "pid"
    deadline = time.time() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    run_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGINT)  # Ctrl-C on `wm run`
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    deadline = time.time() + 15
    while _alive(run_pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(run_pid), "the sweep run outlived its cancelled task"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: it is waiting for its (possibly dead) parent to reap it.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(") ")[-1].startswith("Z"))
