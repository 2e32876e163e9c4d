"""benchmarks/gpu_check.py plans every step and runs the fast ones on the CPU (--device cpu --dry-run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # gpu_check imports its sibling scripts by name
_spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = gpu_check
_spec.loader.exec_module(gpu_check)

STEPS = [
    "environment",
    "exactness",
    "train epoch (AMP off)",
    "train epoch (AMP on)",
    "adaptation.py",
    "inference.py",
    "smoke batch",
]


def test_dry_run_on_cpu_plans_every_step_and_runs_the_fast_ones(tmp_path, capsys):
    out = tmp_path / "gpu.md"
    assert gpu_check.main(["--device", "cpu", "--dry-run", "--out", str(out)]) == 0
    text = out.read_text()
    rows = {
        line.split(" | ")[0].lstrip("| "): line
        for line in text.splitlines()
        if line.startswith("| ")
        and not line.startswith("| step")
        and " | " in line
        and line.split(" | ")[0].lstrip("| ") in STEPS
    }
    assert list(rows) == STEPS  # every step, in order, one table
    for name in STEPS[:-1]:
        assert " | ok | " in rows[name], rows[name]  # the fast ones ran
    assert " | planned (dry run) | " in rows["smoke batch"]  # the slow one is only planned
    assert "python -m fsad demo --device cpu" in rows["smoke batch"]
    assert "cuDNN" in rows["environment"] and "goal <= 1e-04: met" in rows["exactness"]
    assert "--device cpu" in rows["adaptation.py"] and "## inference.py" in text and "ratio cpu" in text
    assert "mean loss" in rows["train epoch (AMP on)"]


def test_cuda_requested_without_cuda_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path / "x.md")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_a_failing_step_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_check, "exactness_step", broken)
    monkeypatch.setattr(gpu_check, "run_benchmark", lambda module, argv: (f"{module} skipped", ""))
    out = tmp_path / "gpu.md"
    assert gpu_check.main(["--device", "cpu", "--dry-run", "--out", str(out)]) == 1
    text = out.read_text()
    assert "| FAILED |" in text and "RuntimeError: boom" in text
    assert "| train epoch (AMP on) |" in text and "mean loss" in text
