"""One-command GPU check (<= 8 minutes on one data-centre GPU): what a first GPU session must measure.

Steps, each with its wall time and peak GPU memory, written as one markdown table to
``benchmarks/results/gpu_<date>.md`` (and printed):

1. ``environment``: torch, CUDA and cuDNN versions, device name, GPU memory.
2. ``exactness``: the float32 Gaussian distances against the float64 reference on the device, on real
   features (``benchmarks/exactness.py``: bottle, MobileNetV2 ImageNet and ResNet-18 random, k = 1, 2, 8,
   a test image equal to a support included); goal <= 1e-4 relative.
3. ``train epoch (AMP off)`` / ``train epoch (AMP on)``: one registration-training epoch at 224 px on a real
   category (bottle train/good, every image once as the query of a pair, batch 32, frozen ResNet-18 random
   backbone, rotation_scale STNs): ``fsad.train.registration_step_loss`` + backward + SGD step, as in
   ``fsad.train``, with ``torch.autocast`` (float16 + GradScaler on CUDA, bfloat16 on CPU) on or off.
4. ``adaptation.py`` and ``inference.py`` with ``--device`` (k = 8, 224 px, both backbones; the paper's
   adaptation is 4.47 s on a GPU, the kit's goal <= 1 s at k = 8); their tables are appended.
5. ``smoke batch``: ``python -m fsad demo --device <device>`` (every notebook in smoke mode).

Peak GPU memory: ``torch.cuda.max_memory_allocated`` for the steps run in this process, and for every step
the device-wide used memory (``torch.cuda.mem_get_info``, sampled every 50 ms) above what was in use at the
step's start, which also covers the notebook kernels of the smoke batch.

``--dry-run`` plans every step and runs only the fast ones, at tiny sizes (exactness on random low-rank
features, one training step of 2 images at 64 px, adaptation/inference at 64 px, k = 1); the smoke batch is listed, not
run. ``tests/test_gpu_check.py`` runs ``--device cpu --dry-run``.

Usage:
    python benchmarks/gpu_check.py                      # on the GPU machine (device cuda)
    python benchmarks/gpu_check.py --device cpu --dry-run --out /tmp/gpu_check.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import math
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TRAIN_CATEGORY = ("mvtec_ad_subset", "bottle")
TRAIN_BATCH = 32
EXACTNESS_TOLERANCE = 1e-4


@dataclass
class Step:
    name: str
    fast: bool  # run in --dry-run (at tiny sizes)
    plan: str  # what it does, for the table
    run: Callable[[], str]  # returns the result text
    status: str = "planned"
    result: str = ""
    seconds: float | None = None
    peak_allocated: int | None = None
    peak_device: int | None = None
    detail: str = ""  # long output (tables), appended below the summary table
    error: bool = False


class DeviceMemorySampler:
    """Max device-wide used GPU memory above the level at start, sampled in a thread (CUDA only)."""

    def __init__(self, device: torch.device, interval: float = 0.05) -> None:
        self.device, self.interval = device, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _used(self) -> int:
        free, total = torch.cuda.mem_get_info(self.device)
        return total - free

    def __enter__(self) -> "DeviceMemorySampler":
        if self.device.type == "cuda":
            self._base = self._used()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used() - self._base)
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._used() - self._base)


def environment(device: torch.device) -> str:
    parts = [
        f"torch {torch.__version__}",
        f"CUDA {torch.version.cuda}",
        f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'n/a'}",
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        parts += [props.name, f"{props.total_memory / 2**30:.0f} GiB", f"capability {props.major}.{props.minor}"]
    else:
        parts.append(f"device {device} (CUDA available: {torch.cuda.is_available()})")
    return ", ".join(parts)


# --------------------------------------------------------------------------- exactness
def exactness_step(device: torch.device, dry: bool, data: Path) -> tuple[str, str]:
    import exactness

    from fsad.gaussian import PositionalGaussian

    lines, worst = [], 0.0
    if dry:
        # random low-rank ReLU features (the shapes of a 22-view support set, few positions)
        gen = torch.Generator().manual_seed(0)
        basis = torch.randn(8, 96, generator=gen) * torch.logspace(0, 1, 96)
        cases = []
        for n in (22, 120):
            z = torch.relu(
                torch.randn(n + 3, 16, 8, generator=gen) @ basis + 0.1 * torch.randn(n + 3, 16, 96, generator=gen)
            )
            feats = z.permute(0, 2, 1).reshape(n + 3, 96, 4, 4)
            cases.append((f"random n={n}", feats[:n], torch.cat([feats[n:], feats[:1]])))
    else:
        cases = []
        root, category = exactness.CASES[0]
        for backbone, weights in exactness.BACKBONE_WEIGHTS.items():
            sup, tst, views = exactness.real_features(data / root, category, backbone, weights)
            for k in exactness.KS:
                cases.append(
                    (f"{category} {backbone} k={k}", exactness.views_of_first(sup, k, max(exactness.KS), views), tst)
                )
    for name, support, test in cases:
        reference = exactness.reference_distances(support, test)  # float64 on the CPU
        g = PositionalGaussian().fit(support.to(device))
        got = g.mahalanobis(test.to(device)).cpu()
        err = exactness.relative_error(got, reference).max().item()
        worst = max(worst, err)
        lines.append(f"| {name} | {g.method_} | {err:.1e} |")
    detail = "| case | form | max rel error |\n|---|---|---|\n" + "\n".join(lines)
    verdict = "met" if worst <= EXACTNESS_TOLERANCE else "MISSED"
    return f"max rel error {worst:.1e} (goal <= {EXACTNESS_TOLERANCE:.0e}: {verdict})", detail


# --------------------------------------------------------------------------- training epoch
def training_images(device: torch.device, dry: bool, data: Path) -> torch.Tensor:
    if dry:
        return torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    from data_tools.datasets import image_files, load_supports

    root, category = TRAIN_CATEGORY
    cat_dir = data / root / category
    files = [str(p.relative_to(cat_dir)) for p in image_files(cat_dir / "train" / "good")]
    return load_supports(data / root, category, files, 224).to(device)


def train_epoch(images: torch.Tensor, amp: bool, device: torch.device, batch: int) -> str:
    from fsad.models.regad import RegADModel
    from fsad.train import DEFAULT_LR, DEFAULT_MOMENTUM, registration_step_loss

    torch.manual_seed(0)
    model = RegADModel(backbone="resnet18", image_size=images.shape[-1], stn_mode="rotation_scale", seed=0).to(device)
    model.freeze_backbone(True)
    model.train()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=DEFAULT_LR, momentum=DEFAULT_MOMENTUM
    )
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=gen)
    partner = (order + 1 + torch.randint(len(images) - 1, (len(images),), generator=gen)) % len(images)
    losses = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        q = images[order[i : i + batch]]
        others = images[partner[order[i : i + batch]]].unsqueeze(1)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            loss = registration_step_loss(model, q, others, "pair")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    steps = math.ceil(len(images) / batch)
    if not all(math.isfinite(x) for x in losses):
        raise RuntimeError(f"non-finite training loss with AMP {'on' if amp else 'off'}: {losses}")
    return (
        f"{len(images)} images, {steps} steps of {batch}, {images.shape[-1]} px: {seconds:.2f} s "
        f"({len(images) / seconds:.1f} img/s), mean loss {sum(losses) / len(losses):.4f}"
    )


# --------------------------------------------------------------------------- benchmark scripts
def run_benchmark(module: str, argv: list[str]) -> tuple[str, str]:
    import importlib

    main = importlib.import_module(module).main
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main(argv)
    text = buffer.getvalue()
    return f"`python benchmarks/{module}.py {' '.join(argv)}` (table below)", "```\n" + text.strip() + "\n```"


def smoke_batch(device: torch.device, out_dir: Path) -> str:
    cmd = [sys.executable, "-m", "fsad", "demo", "--device", str(device), "--runs-dir", str(out_dir)]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=360)
    tail = (done.stdout + done.stderr).strip().splitlines()[-12:]
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: " + " / ".join(tail[-3:]))
    return f"every notebook ran (exit 0): {tail[-1] if tail else ''}"


# --------------------------------------------------------------------------- plan and run
def plan(args: argparse.Namespace, device: torch.device) -> list[Step]:
    dry, data = args.dry_run, Path(args.data)
    dev = str(device)
    size = ["--image-size", "64", "--k", "1", "--repeats", "1"] if dry else []
    steps = [Step("environment", True, "torch / CUDA / cuDNN versions, device", lambda: environment(device))]

    def exact() -> str:
        result, steps[1].detail = exactness_step(device, dry, data)
        return result

    steps.append(Step("exactness", True, "float32 vs float64 Gaussian distances on the device", exact))

    images: dict[str, torch.Tensor] = {}

    def epoch(amp: bool) -> Callable[[], str]:
        def run() -> str:
            if "x" not in images:
                images["x"] = training_images(device, dry, data)
            return train_epoch(images["x"][:2] if dry else images["x"], amp, device, 2 if dry else TRAIN_BATCH)

        return run

    steps.append(Step("train epoch (AMP off)", True, "one registration epoch, bottle, 224 px, float32", epoch(False)))
    steps.append(Step("train epoch (AMP on)", True, "the same epoch under torch.autocast", epoch(True)))

    def bench(module: str, extra: list[str], index: int) -> Callable[[], str]:
        def run() -> str:
            result, steps[index].detail = run_benchmark(module, ["--device", dev] + size + extra)
            return result

        return run

    tiny = ["--backbones", "mobilenet_v2", "--methods", "padim"] if dry else []
    steps.append(
        Step(
            "adaptation.py",
            True,
            "adaptation vs bound (k=8, 224 px, both backbones)",
            bench("adaptation", tiny + ([] if dry else ["--methods", "regad", "padim", "patchcore"]), 4),
        )
    )
    steps.append(
        Step(
            "inference.py",
            True,
            "inference vs backbone forward (83 images, 224 px)",
            bench("inference", tiny + (["--test-images", "2"] if dry else []), 5),
        )
    )
    steps.append(
        Step(
            "smoke batch",
            False,
            f"python -m fsad demo --device {dev}",
            lambda: smoke_batch(device, Path(args.out).parent / "gpu_check_smoke"),
        )
    )
    return steps


def run_steps(steps: list[Step], device: torch.device, dry: bool) -> None:
    for step in steps:
        if dry and not step.fast:
            step.status = "planned (dry run)"
            continue
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        try:
            with DeviceMemorySampler(device) as sampler:
                step.result = step.run()
            step.status = "ok"
        except Exception as error:  # one failing step must not hide the others' results
            step.status, step.result, step.error = "FAILED", f"{type(error).__name__}: {error}", True
        step.seconds = time.perf_counter() - start
        if device.type == "cuda":
            step.peak_allocated = torch.cuda.max_memory_allocated(device) - base
            step.peak_device = sampler.peak
        print(f"[{step.status}] {step.name} ({step.seconds:.1f} s): {step.result}", flush=True)


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def markdown(steps: list[Step], device: torch.device, dry: bool, started: str) -> str:
    lines = [
        f"# GPU check {started}{' (dry run)' if dry else ''}",
        "",
        f"`python benchmarks/gpu_check.py --device {device}{' --dry-run' if dry else ''}`",
        "",
        "| step | what | status | wall s | peak allocated MiB | peak device MiB | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        secs = "-" if s.seconds is None else f"{s.seconds:.1f}"
        result = s.result.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {s.name} | {s.plan} | {s.status} | {secs} | {mib(s.peak_allocated)} | {mib(s.peak_device)} | {result} |"
        )
    for s in steps:
        if s.detail:
            lines += ["", f"## {s.name}", "", s.detail]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) | cuda:N | cpu")
    parser.add_argument("--dry-run", action="store_true", help="plan every step, run only the fast ones at tiny sizes")
    parser.add_argument("--data", default=str(SHARED_DATA), help="folder holding mvtec_ad_subset/")
    parser.add_argument("--out", help="markdown file (default: benchmarks/results/gpu_<date>.md)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda but CUDA is not available here; run on the GPU machine, or "
            "`--device cpu --dry-run` to check the plan",
            file=sys.stderr,
        )
        return 2
    started = dt.datetime.now(dt.timezone.utc)
    stamp = started.strftime("%Y-%m-%d")
    args.out = args.out or str(HERE / "results" / f"gpu_{stamp}{'_dryrun' if args.dry_run else ''}.md")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    steps = plan(args, device)
    run_steps(steps, device, args.dry_run)
    text = markdown(steps, device, args.dry_run, started.strftime("%Y-%m-%d %H:%M UTC"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)  # atomic
    print(text)
    print(f"written {out}")
    return 1 if any(s.error for s in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
