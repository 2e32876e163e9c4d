"""The Ray executor and ``fsad reproduce`` on real Ray, on loopback only.

Ray binds some servers to every interface and to the machine's own address unless told otherwise, and a test
must never send traffic beyond loopback. So every Ray test body runs in a subprocess inside a private network
namespace that holds only ``lo`` (``unshare -n``, then ``ip link set lo up``; needs root or CAP_SYS_ADMIN), with
the node address 127.0.0.1, no dashboard, usage statistics and token authentication off (nothing outside the
namespace can reach it). Without the rights for a namespace (or without Ray) these tests skip saying why;
``FSAD_REQUIRE_RAY=1`` (set by ``.ci/run``) makes them fail instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRE_RAY = os.environ.get("FSAD_REQUIRE_RAY", "").lower() in {"1", "true", "yes"}

# Ray on a loaded 2-core machine: its processes start slowly, so the start-up and reconnection deadlines are raised
# (names from Ray's ray_config_def.h); metrics collection is off so the raylet does not wait for a metrics agent.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_enable_metrics_collection": "0",
    "RAY_agent_register_timeout_ms": "180000",
    "RAY_gcs_rpc_server_reconnect_timeout_s": "180",
    "RAY_worker_register_timeout_seconds": "180",
    "RAY_raylet_start_wait_time_s": "180",
    "RAY_DEDUP_LOGS": "0",
}

# Shared by every body: checks it is really alone on loopback, and a notebook/grid writer.
PRELUDE = '''
import json, os, socket, sys, time
from pathlib import Path
import nbformat
assert [name for _, name in socket.if_nameindex()] == ["lo"], socket.if_nameindex()
import atexit, shutil, tempfile
# A private temp dir (short: Ray's socket paths must fit 107 bytes): no session files or cluster address left in
# the shared /tmp/ray, and a stale address there is never picked up; address="local" always starts a new instance.
TEMP = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
atexit.register(shutil.rmtree, TEMP, ignore_errors=True)
LOOPBACK = dict(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
                _temp_dir=TEMP)

def write_notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("k = 1\\nseconds = 0\\nmode = 'ok'\\nmarkers = '.'\\noutput_dir = '.'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)

# Seeded numbers with many digits (exact equality is meaningful), an optional sleep, and faults on request.
CELL = """
import json, os, pathlib, signal, time
import numpy as np
out = pathlib.Path(output_dir)
marker = pathlib.Path(markers) / f"k{k}"
if mode == "die_once" and not marker.exists():
    marker.touch()
    os.kill(os.getppid(), signal.SIGKILL)   # the kernel's parent is the Ray worker running the cell
if mode == "die_always":
    os.kill(os.getppid(), signal.SIGKILL)
(pathlib.Path(markers) / f"started-k{k}-{os.getppid()}").touch()
time.sleep(seconds)
rng = np.random.default_rng(k)
cells = [{"method": "regad", "category": "c", "k": k, "run": r, "image_auroc": float(rng.random()),
          "pixel_auroc": float(rng.random() ** 0.5)} for r in range(3)]
(out / "r.json").write_text(json.dumps({"format": "fsad-results-v1", "cells": cells}))
"""

def write_grid(folder, ks, mode="ok", seconds=0, name="g"):
    folder = Path(folder).resolve(); folder.mkdir(parents=True, exist_ok=True)
    write_notebook(folder / "nb.ipynb", CELL)
    markers = folder / "markers"; markers.mkdir(exist_ok=True)
    grid = folder / f"{name}.yaml"
    grid.write_text(json.dumps({"name": name, "parameters": {"mode": mode, "seconds": seconds, "markers": str(markers)},
                                "jobs": [{"notebook": str(folder / "nb.ipynb"), "grid": {"k": list(ks)}}]}))
    return grid

def result(value):
    print("RESULT " + json.dumps(value, default=str), flush=True)
'''


def _unavailable() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install -c constraints.txt -e '.[distributed]')"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) not found: cannot isolate Ray on loopback"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return (
            f"no private network namespace (unshare -n: {probe.stderr.strip() or probe.returncode}); Ray tests "
            "run only isolated on loopback, which needs root or CAP_SYS_ADMIN"
        )
    return None


@pytest.fixture(scope="module")
def isolated():
    """``run(body, tmp_path, timeout)``: the body in a loopback-only namespace; returns what it passed to result()."""
    reason = _unavailable()
    if reason:
        if REQUIRE_RAY:
            pytest.fail(f"FSAD_REQUIRE_RAY=1 but {reason}")
        pytest.skip(reason)

    def run(body: str, tmp_path: Path, timeout: float = 900) -> dict:
        script = tmp_path / "body.py"
        script.write_text(PRELUDE + textwrap.dedent(body))
        env = {
            **os.environ,
            **RAY_ENV,
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
        }
        command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$1"', sys.executable, str(script)]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, (
            f"isolated body failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
        return json.loads(lines[-1][len("RESULT ") :])

    return run


def _numbers(csv_text: str) -> list[list[str]]:
    import csv
    import io

    return [row for row in csv.reader(io.StringIO(csv_text))]


# --------------------------------------------------------------------------- batch grids
@pytest.mark.slow
def test_grid_on_local_ray_equals_the_local_executor_and_resumes_across_executors(isolated, tmp_path):
    out = isolated(
        """
        import ray
        from fsad.runner import run_batch
        grid = write_grid("work", ks=[2, 3, 4, 5])
        local, local_csv = run_batch(grid, "runs_local", progress=False)
        ray.init(num_cpus=2, **LOOPBACK)
        distributed, ray_csv = run_batch(grid, "runs_ray", executor="ray", progress=False)
        pids = sorted({p.name.rsplit("-", 1)[1] for p in Path("work/markers").glob("started-*")})
        ray.shutdown()
        executor = json.loads(Path("runs_ray/g/batch.json").read_text())["executor"]
        # Resume with the other executor: every cell the Ray run committed is skipped by the local one.
        resumed, _ = run_batch(grid, "runs_ray", resume=True, progress=False)
        result({"local_csv": local_csv.read_text(), "ray_csv": ray_csv.read_text(),
                "local": [s["status"] for s in local], "ray": [s["status"] for s in distributed],
                "ray_dirs": [s["executed"].split("runs_ray/")[1] for s in distributed],
                "local_dirs": [s["executed"].split("runs_local/")[1] for s in local],
                "resumed_skipped": [s["skipped"] for s in resumed], "pids": pids,
                "executor": executor})
    """,
        tmp_path,
    )
    assert out["local"] == out["ray"] == ["done"] * 4
    assert out["executor"] == "ray" and out["ray_dirs"] == out["local_dirs"]
    rows = _numbers(out["ray_csv"])
    assert len(rows) == 1 + 4 * 3  # header + 3 cells per execution, no duplicates
    assert rows == _numbers(out["local_csv"])  # exact equality of every number (and the file column)
    assert out["resumed_skipped"] == [True] * 4
    assert len(out["pids"]) >= 2  # the cells really ran in Ray's worker processes (two CPUs, two workers)


@pytest.mark.slow
def test_a_dead_worker_is_retried_then_recorded_failed_with_the_reason(isolated, tmp_path):
    out = isolated(
        """
        import ray
        from fsad.runner import read_status, expand_jobs, load_grid, run_batch
        ray.init(num_cpus=2, **LOOPBACK)
        once = write_grid("once", ks=[2, 3], mode="die_once", name="once")
        healed, healed_csv = run_batch(once, "runs", executor="ray", max_retries=2, progress=False)
        always = write_grid("always", ks=[7], mode="die_always", name="always")
        lost, _ = run_batch(always, "runs", executor="ray", max_retries=1, progress=False)
        ray.shutdown()
        result({"healed": [s["status"] for s in healed], "rows": healed_csv.read_text().count("\\n"),
                "markers": sorted(p.name for p in Path("once/markers").iterdir() if not p.name.startswith("started")),
                "lost": lost[0]["status"], "reason": lost[0].get("error", ""),
                "committed": read_status(expand_jobs(load_grid(always), Path("runs") / "always")[0])["status"],
                "leftovers": [str(p) for p in Path("runs").rglob(".*")]})
    """,
        tmp_path,
    )
    assert out["markers"] == ["k2", "k3"]  # each cell's first attempt killed its worker
    assert out["healed"] == ["done", "done"] and out["rows"] == 1 + 2 * 3
    assert out["lost"] == "failed" and out["committed"] == "failed"
    assert "1 retries" in out["reason"] and "Worker" in out["reason"], out["reason"]
    assert out["leftovers"] == []


@pytest.mark.slow
def test_killing_a_worker_node_mid_run_loses_and_duplicates_nothing(isolated, tmp_path):
    """A head (1 CPU) and a worker node (2 CPUs) as separate processes; SIGKILL the worker node mid-run."""
    out = isolated(
        """
        import signal, subprocess
        import ray
        from fsad.runner import run_batch
        import threading
        RAY = str(Path(sys.executable).parent / "ray")
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        common = ["--node-ip-address", "127.0.0.1", "--block", "--disable-usage-stats", "--temp-dir", TEMP]
        # Own process groups, so each node (and only it) can be killed as a whole by its group id.
        head = subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--num-cpus", "1",
                                 "--include-dashboard", "false", *common], start_new_session=True,
                                stdout=open("head.log", "w"), stderr=subprocess.STDOUT)
        worker = None
        try:
            for attempt in range(90):  # the head takes a while on a loaded machine; `ray status` is no use here
                try:
                    ray.init(address=f"127.0.0.1:{port}", _node_ip_address="127.0.0.1", log_to_driver=False)
                    break
                except Exception:
                    time.sleep(2)
            else:
                raise RuntimeError("the Ray head never came up (see head.log)")
            worker = subprocess.Popen([RAY, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "2", *common],
                                      start_new_session=True, stdout=open("worker.log", "w"), stderr=subprocess.STDOUT)
            deadline = time.time() + 300
            while sum(n["Alive"] for n in ray.nodes()) < 2:
                assert time.time() < deadline, "worker node never joined"
                time.sleep(1)
            grid = write_grid("work", ks=[2, 3, 4, 5], seconds=10)
            def on_worker_node(pid):
                # A marker names the Ray worker that ran the cell; its parent is its node's raylet, whose process
                # group is the worker node's (Ray's workers start their own sessions, the raylet does not).
                try:
                    raylet = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    return os.getpgid(raylet) == worker.pid
                except (FileNotFoundError, ProcessLookupError, ValueError):
                    return False
            killed = {}
            def killer():
                while time.time() < deadline:
                    started = [int(p.name.rsplit("-", 1)[1]) for p in Path("work/markers").glob("started-*")]
                    on_worker = [pid for pid in started if on_worker_node(pid)]
                    if on_worker:
                        killed["running_on_worker"] = len(on_worker)
                        os.killpg(worker.pid, signal.SIGKILL)
                        return
                    time.sleep(0.5)
            thread = threading.Thread(target=killer); thread.start()
            statuses, csv_path = run_batch(grid, "runs", executor="ray", max_retries=3, progress=False)
            thread.join()
            alive = sum(n["Alive"] for n in ray.nodes())
            ray.shutdown()
            reference, ref_csv = run_batch(grid, "runs_ref", progress=False)  # uninterrupted, local
            result({"statuses": [s["status"] for s in statuses], "csv": csv_path.read_text(),
                    "ref_csv": ref_csv.read_text(), "killed": killed, "alive_after": alive,
                    "leftovers": [str(p) for p in Path("runs").rglob(".*")]})
        finally:
            for node in (worker, head):
                if node is not None:
                    try:
                        os.killpg(node.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
    """,
        tmp_path,
        timeout=1500,
    )
    assert out["killed"].get("running_on_worker", 0) >= 1, "the worker node was never running a cell when killed"
    assert out["alive_after"] == 1  # the run finished on the head alone
    assert out["statuses"] == ["done"] * 4
    rows = _numbers(out["csv"])
    assert len(rows) == 1 + 4 * 3 and rows == _numbers(out["ref_csv"])  # nothing lost, nothing twice
    assert out["leftovers"] == []


# --------------------------------------------------------------------------- reproduce
def _synthetic(root: Path) -> Path:
    from data_tools.synthetic import generate_synthetic_dataset

    return generate_synthetic_dataset(
        root,
        seed=0,
        image_size=64,
        n_train=6,
        n_test_good=2,
        n_test_per_defect=1,
        categories=["weave", "washer", "bracket"],
    )


def _tiny(root: Path, out: Path):
    from fsad.reproduce import ReproduceConfig

    return ReproduceConfig(
        data_root=str(root),
        dataset="synthetic",
        out=str(out),
        epochs=2,
        batch_size=2,
        max_steps_per_epoch=2,
        lr=0.05,
        ks=[1, 2],
        runs=2,
        backbone="resnet18",
        weights="random",
        image_size=64,
        device="cpu",
        threads=1,
    )


def test_reproduce_dry_run_plan_counts_tasks_and_dependencies(tmp_path, capsys):
    from fsad.cli import main
    from fsad.reproduce import dry_run_plan, format_plan

    root = _synthetic(tmp_path / "syn")
    plan = dry_run_plan(_tiny(root, tmp_path / "out"))
    names = [t["task"] for t in plan["tasks"]]
    assert plan["n_train"] == 3 and plan["n_evaluate"] == 3 and len(names) == 7
    assert sorted(n for n in names if n.startswith("train/")) == ["train/bracket", "train/washer", "train/weave"]
    for task in plan["tasks"]:
        if task["task"].startswith("evaluate/"):
            assert task["depends"] == ["train/" + task["task"].split("/")[1]]
            # each evaluation comes right after its own training
            assert names.index(task["task"]) == names.index(task["depends"][0]) + 1
    assert plan["tasks"][-1]["task"] == "report" and len(plan["tasks"][-1]["depends"]) == 3
    # 6 training images of each of the 2 other categories, batch 2 -> 6 steps, cut to 2; 2 epochs.
    train = next(t for t in plan["tasks"] if t["task"] == "train/weave")
    assert train["detail"] == "2 epochs x 2 steps"
    assert train["seconds"] == pytest.approx(4 * plan["measured"]["train_step_s"])
    assert plan["measured"]["train_step_s"] > 0 and plan["total_seconds"] > 0
    assert "3 training tasks, 3 evaluation tasks, 1 report" in format_plan(plan)
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert (
        main(
            [
                "reproduce",
                "--dataset",
                "synthetic",
                "--data-root",
                str(root),
                "--out",
                str(tmp_path / "o2"),
                "--weights",
                "random",
                "--image-size",
                "64",
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--dry-run",
            ]
        )
        == 0
    )
    assert "3 training tasks" in capsys.readouterr().out
    assert (
        main(["reproduce", "--dataset", "synthetic", "--data-root", str(root), "--address", "auto", "--dry-run"]) == 2
    )
    assert "--address needs --executor ray" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_resumes_by_task(tmp_path):
    from fsad.reproduce import plan_tasks, reproduce, task_done

    config = _tiny(_synthetic(tmp_path / "syn"), tmp_path / "out")
    first = reproduce(config, progress=False)
    assert [s["status"] for s in first["statuses"].values()] == ["done"] * 6 and first["report"]["cells"] == 3 * 2 * 2
    # Lose one evaluation (as if killed before its marker): resume re-runs that task only.
    lost = next(t for t in plan_tasks(config) if t.name == "evaluate/washer")
    Path(config.out, "tasks", "evaluate-washer.json").unlink()
    assert not task_done(config, lost)
    again = reproduce(config, resume=True, progress=False)
    assert [n for n, s in again["statuses"].items() if s["status"] != "skipped"] == ["evaluate/washer"]
    with pytest.raises(FileExistsError, match="--resume"):
        reproduce(config, progress=False)


@pytest.mark.slow
def test_reproduce_on_ray_gives_the_same_metrics_as_local(isolated, tmp_path):
    root = _synthetic(tmp_path / "syn")
    out = isolated(
        f"""
        import ray
        from fsad.ray_executor import RayOptions
        from fsad.reproduce import ReproduceConfig, reproduce
        from fsad.results import load_results
        base = dict(data_root={str(root)!r}, dataset="synthetic", epochs=2, batch_size=2, max_steps_per_epoch=2,
                    lr=0.05, ks=[1, 2], runs=2, backbone="resnet18", weights="random", image_size=64, device="cpu",
                    threads=1)
        local = reproduce(ReproduceConfig(out="local", **base), progress=False)
        ray.init(num_cpus=2, **LOOPBACK)
        distributed = reproduce(ReproduceConfig(out="ray", **base), executor="ray", options=RayOptions(num_cpus=1),
                                progress=False)
        ray.shutdown()
        keys = ["category", "k", "run"]
        metrics = ["image_auroc", "pixel_auroc", "aupro", "f1_max"]
        frames = [load_results(f"{{name}}/results").sort_values(keys)[keys + metrics].to_dict("records")
                  for name in ("local", "ray")]
        result({{"local": frames[0], "ray": frames[1],
                 "statuses": [[s["status"] for s in r["statuses"].values()] for r in (local, distributed)],
                 "tables": [Path(name, "tables", "image_auroc.csv").read_text() for name in ("local", "ray")]}})
    """,
        tmp_path,
    )
    assert out["statuses"] == [["done"] * 6, ["done"] * 6]
    assert len(out["local"]) == 3 * 2 * 2
    assert out["local"] == out["ray"]  # exact, every metric of every cell
    assert out["tables"][0] == out["tables"][1]
