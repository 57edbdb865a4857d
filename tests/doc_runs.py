"""Running the documents' commands for real, in a folder of their own (tests/test_doc_commands.py).

A documented command is written for a checkout's root (`python dataset/X.py`, `data/shapes/...`,
`output/...`). Here it runs with a temporary folder as its working directory, where relative paths are
found first (minigpt/common/paths.py), so that what it writes (data/, output/) lands there and what an
earlier command wrote is what a later one reads. Importing minigpt takes seconds, so the commands of one
chain run one after the other in one child process, each as `python -m minigpt` or `python script.py`
would run it (runpy), with its exit status, output and time recorded.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# Run in one child process: each command as `python -m minigpt ...` / `python -m MODULE ...` (argv "-m", MODULE,
# ...) / `python script.py ...` runs it.
RUNNER = r"""
import contextlib, io, json, os, runpy, sys, time, traceback
commands, out_file = json.loads(sys.argv[1]), sys.argv[2]
results = []
for argv in commands:
    output, code, start = io.StringIO(), 0, time.perf_counter()
    saved_argv, path0 = sys.argv[:], sys.path[0]
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            if argv[0] == "minigpt":
                sys.argv = ["minigpt", *argv[1:]]
                runpy.run_module("minigpt", run_name="__main__", alter_sys=True)
            elif argv[0] == "-m":
                sys.argv = argv[1:]
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv, sys.path[0] = argv, os.path.dirname(os.path.abspath(argv[0]))
                runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        code = 1
        output.write(traceback.format_exc())
    finally:
        sys.argv, sys.path[0] = saved_argv, path0
    results.append([code, output.getvalue(), round(time.perf_counter() - start, 2)])
    with open(out_file, "w") as file:  # after each command: a crash still leaves the ones before it
        json.dump(results, file)
"""


def argv_of(text: str, workdir: Path) -> list[str]:
    """The argument list of a documented command line, as the runner takes it: `minigpt ...` and
    `python -m minigpt ...` -> ["minigpt", ...]; `python X.py ...` -> [REPO/X.py, ...]; an absolute
    path under /models/ (a folder the documents ask the reader for) -> the same folder under workdir."""
    tokens = [t.replace("/models/", f"{workdir}/models/") if t.startswith(("/models/", "model.llama_model=/models/"))
              else t for t in shlex.split(text, comments=True)]
    if tokens[:3] == ["python", "-m", "minigpt"]:
        return ["minigpt", *tokens[3:]]
    if tokens[0] == "minigpt":
        return tokens
    if tokens[0] == "python" and tokens[1].endswith(".py"):
        return [str(REPO / tokens[1]), *tokens[2:]]
    raise ValueError(f"not a command this runner takes: {text}")


def with_options(argv: list[str], options: list[str]) -> list[str]:
    """argv with more `--options` values: after the command's own `--options`, or as a new one (a second
    `--options` flag would replace the first)."""
    if not options:
        return argv
    if "--options" in argv:
        at = argv.index("--options") + 1
        return [*argv[:at], *options, *argv[at:]]
    return [*argv, "--options", *options]


def run_chain(argvs: list[list[str]], workdir: Path, timeout: int) -> list[tuple[int, str, float]]:
    """(exit status, output, seconds) of each command, run in order in one child process in workdir."""
    out = workdir / f".results-{os.getpid()}-{len(list(workdir.glob('.results-*')))}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf"), "COLUMNS": "100",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(argvs), str(out)], cwd=workdir,
                            capture_output=True, text=True, timeout=timeout, env=env)
    results = json.loads(out.read_text()) if out.exists() else []
    assert len(results) == len(argvs), f"the runner stopped: {result.stderr[-4000:]}"
    return [tuple(r) for r in results]
