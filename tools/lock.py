"""Refresh or check the committed dependency lock (requirements/lock-py311.txt).

    python tools/lock.py            # re-resolve with uv and rewrite the lock (needs uv + the index)
    python tools/lock.py --upgrade  # the same, taking the newest allowed release of every package
    python tools/lock.py --check    # offline: does the lock still match pyproject.toml?

The lock pins every package that ``pip install -e ".[all,test]"`` installs on
Linux x86_64 / CPython 3.11, except torch itself: torch is installed first, on its own
(``pip install torch==2.13.0``, the CPU build), so the lock must never make pip pull a
CUDA build or the nvidia-* wheels. The resolution therefore sees torch only as the CPU
wheel (pinned through a constraint, found through ``--find-links`` where a local copy
exists, else the PyTorch CPU index) and torch is left out of the output; its own
dependencies (sympy, networkx, ...) stay pinned.

A refresh keeps every version the current lock pins wherever pyproject.toml still allows
it (uv reads an existing output file as its preferences): adding one dependency adds its
pins and changes nothing else. ``--upgrade`` re-resolves from scratch.

The lock's first line carries a hash of pyproject.toml's dependency tables. The test
suite (tests/test_lock.py) recomputes it, so CI fails when someone edits the
dependencies without refreshing the lock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock-py311.txt"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
TORCH = "2.13.0"  # the CPU build the README installs first
EXTRAS = ("all", "test")
HASH_PREFIX = "# pyproject-deps-sha256: "
#: Packages that must never appear in the lock (CUDA builds and their runtime wheels).
FORBIDDEN_PREFIXES = ("torch", "nvidia-", "triton", "cuda-")


def dependency_hash(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """sha256 of what decides the resolution: requires-python, dependencies and extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    keyed = {"requires-python": project.get("requires-python"),
             "dependencies": project.get("dependencies", []),
             "optional-dependencies": project.get("optional-dependencies", {}),
             "torch": TORCH, "python": PYTHON_VERSION, "platform": PLATFORM, "extras": list(EXTRAS)}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def locked_pins(lock: Path = LOCK) -> dict[str, str]:
    """{package name: version} of every ``name==version`` line of the lock."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.split(";")[0].strip()
    return pins


def check(lock: Path = LOCK) -> list[str]:
    """Problems with the lock (empty when it is current)."""
    if not lock.is_file():
        return [f"{lock.relative_to(ROOT)} is missing: run `python tools/lock.py`"]
    problems = []
    first = lock.read_text().splitlines()[0]
    if first != HASH_PREFIX + dependency_hash():
        problems.append(f"{lock.relative_to(ROOT)} does not match pyproject.toml's dependencies: "
                        "refresh it with `python tools/lock.py`")
    bad = sorted(n for n in locked_pins(lock) if n.startswith(FORBIDDEN_PREFIXES))
    if bad:
        problems.append(f"{lock.relative_to(ROOT)} pins {', '.join(bad)}: torch and CUDA wheels must stay out")
    return problems


def refresh(lock: Path = LOCK, upgrade: bool = False) -> None:
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("uv not found: `pip install uv` (only needed to refresh the lock)")
    with tempfile.TemporaryDirectory() as tmp:
        constraint = Path(tmp) / "torch.txt"
        constraint.write_text(f"torch=={TORCH}+cpu\n")
        out = Path(tmp) / "lock.txt"
        if lock.is_file() and not upgrade:
            # uv prefers the versions of an existing output file: an edit to the dependencies
            # then moves only what it must, not every package with a newer release.
            shutil.copyfile(lock, out)
        cmd = [uv, "pip", "compile", str(ROOT / "pyproject.toml"), *sum((["--extra", e] for e in EXTRAS), []),
               "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM,
               "-c", str(constraint), "--no-emit-package", "torch", "--no-header", "--quiet", "-o", str(out)]
        wheels = os.environ.get("WM_TORCH_WHEELS", "/opt/wheels")
        if Path(wheels).is_dir():
            cmd += ["--find-links", wheels]  # a local copy of the CPU wheel
        else:
            cmd += ["--extra-index-url", "https://download.pytorch.org/whl/cpu", "--index-strategy", "unsafe-best-match"]
        if upgrade:
            cmd.append("--upgrade")
        subprocess.run(cmd, check=True, cwd=ROOT)
        body = out.read_text()
    header = (f"{HASH_PREFIX}{dependency_hash()}\n"
              f"# Machine-generated by `python tools/lock.py` (uv pip compile) for CPython {PYTHON_VERSION} on "
              f"Linux x86_64, extras {', '.join(EXTRAS)}.\n"
              f"# torch is not pinned here: install torch=={TORCH} (the CPU build) first. Do not edit by hand.\n")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(header + body)
    problems = check(lock)
    if problems:
        sys.exit("\n".join(problems))
    print(f"wrote {lock.relative_to(ROOT)} ({len(locked_pins(lock))} packages)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the lock matches pyproject.toml")
    ap.add_argument("--upgrade", action="store_true",
                    help="take the newest allowed releases (default: keep the current pins where still allowed)")
    args = ap.parse_args()
    if args.check:
        problems = check()
        print("\n".join(problems) or f"{LOCK.relative_to(ROOT)}: current")
        sys.exit(1 if problems else 0)
    refresh(upgrade=args.upgrade)


if __name__ == "__main__":
    main()
