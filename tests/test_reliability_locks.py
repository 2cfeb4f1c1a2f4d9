"""One writer per store, one process per run: the second exits 2 naming the holder (issue 25, point 4)."""

from __future__ import annotations

import os

from _reliability_util import tiny_run
from conftest import run_wm
from wm_framework.locks import exclusive, run_lock_file, store_lock_file

COLLECT = ["data", "collect", "--env", "linear_state", "--policy", "random", "--episodes", "2", "--max-steps", "5"]


def test_second_writer_of_a_store_exits_2_naming_the_holder(tmp_path):
    store = tmp_path / "s.zarr"
    with exclusive(store_lock_file(store), f"store {store}"):  # this test process is the first writer
        r = run_wm(*COLLECT, "--out", str(store))
    assert r.returncode == 2, r.stderr
    assert f"is in use by process {os.getpid()}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not store.exists()  # the second writer wrote nothing
    r = run_wm(*COLLECT, "--out", str(store))  # released: collecting works again
    assert r.returncode == 0, r.stderr


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    """The kernel drops a flock when its holder dies; the PID left in the file does not block."""
    store = tmp_path / "s.zarr"
    store_lock_file(store).write_text("999999\n")  # a dead holder's file, no lock held
    r = run_wm(*COLLECT, "--out", str(store))
    assert r.returncode == 0, r.stderr


def test_second_resume_of_a_run_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path)
    lines_before = (run / "metrics.jsonl").read_text()
    with exclusive(run_lock_file(run), f"run {run}"):
        r = run_wm("run", "--resume", str(run), "train.steps=6", cwd=tmp_path)
    assert r.returncode == 2 and f"run {run} is in use by process {os.getpid()}" in r.stderr, r.stderr
    assert (run / "metrics.jsonl").read_text() == lines_before  # nothing trained or logged twice
