"""Time one Eq pretraining step four ways on the same tensors (issue 15, target 1).

  backbone  the bare backbone forward + backward on every view and crop (the floor)
  ours      multisym's step as train_member runs it: bf16 autocast,
            channels_last, foreach LARS, no host syncs (the loss check reads a
            pinned flag one step late), cuDNN's autotuned kernels, and on CUDA
            the forward and backward pass replayed from a CUDA graph
  ours-eager  the same without the graph (CUDA only)
  official  a faithful reimplementation of the official step
            (docs/method.md#pretraining-hyperparameters):
            fp16 autocast + GradScaler, NCHW, the per-parameter LARS loop, the
            detached online classifier, a loss read back every step
  lightly   the same step assembled from lightly (SimCLRProjectionHead,
            NTXentLoss, its LARS) on the same torchvision backbone, with our
            precision and memory format so only the library parts differ
  ours+views  ours including the views drawn on the device from decoded images
            (the in-memory data path of the embedded and CIFAR scales)

On CUDA the defaults are the paper's (ResNet-50, 224-px views, four rotations
of a 96-px crop, 128 images per GPU); on the CPU a small scale with the same
structure. Each figure is the median over repeats of the mean step time of a
timed run; images/s counts the batch's source images.

    python benchmarks/pretrain_step.py [--steps 20 --repeats 3 --out FILE.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from multisym import config as config_module
from multisym.train import graphs
from multisym.train import optim
from multisym.data.splits import DatasetInfo
from multisym.train.losses import cross_view_info_nce, equivariance_loss
from multisym.members import member_table
from multisym.train.pretrain import ContrastiveStep, LossMonitor, build_model
from multisym.runtime import make_runtime

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def eq_settings(device: torch.device, args) -> dict:
    """The Eq member of config/paper.yaml, scaled down on the CPU."""
    cfg = config_module.load(ROOT / "config" / "paper.yaml")
    if device.type == "cpu":
        cfg["backbone"] = {"arch": "resnet18"}
        cfg["views"]["size"], cfg["small_crop"]["size"] = 64, 32
        cfg["dataset"]["image_size"] = 72
    if args.arch:
        cfg["backbone"] = {"arch": args.arch}
    settings = next(m for m in member_table(config_module.resolve(cfg)) if m.mode == "eq").settings
    return settings


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, steps: int, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    means = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        means.append((time.perf_counter() - start) / steps)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"step_ms": 1000 * statistics.median(means), "spread_ms": 1000 * (max(means) - min(means)),
            "peak_gib": peak}


class OfficialStep:
    """The official step's cost structure on our modules (docs/method.md#members,
    docs/method.md#optimizer-and-schedule)."""

    def __init__(self, step: ContrastiveStep, model: nn.Module, classes: int, device: torch.device, spec: dict):
        self.step, self.model = step, model
        self.online = nn.Linear(model.backbone.out_dim, classes).to(device)
        params = optim.parameter_groups(nn.ModuleList([model, self.online]), spec["weight_decay"])
        self.optimizer = optim.LARS(params, lr=spec["lr"], momentum=spec["momentum"], eta=spec["lars_eta"],
                                    foreach=False)
        self.scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")

    def __call__(self, batch: dict, labels: torch.Tensor) -> float:
        prepare, model = self.step.runtime.prepare, self.model
        with self.step.runtime.amp():
            r1 = model.backbone(prepare(batch["view1"]))
            r2 = model.backbone(prepare(batch["view2"]))
            z1, z2 = model.projector(r1), model.projector(r2)
            online = F.cross_entropy(self.online(r1.detach()), labels)
            logits = model.eq_head(model.backbone(prepare(batch["orbit"])))
        loss = (cross_view_info_nce(z1, z2, 0.2) + online
                + self.step.weight * equivariance_loss(logits, batch["elements"]))
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item()


def lightly_step(settings: dict, model: nn.Module, runtime, device: torch.device):
    """SimCLR loss, projection head and LARS from lightly on the same backbone,
    plus the Eq head's cross-entropy (lightly has no E-SSL)."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.utils.lars import LARS as LightlyLARS

    dim = model.backbone.out_dim
    head = SimCLRProjectionHead(dim, 2048, 128, num_layers=3).to(device)
    if runtime.channels_last:
        head = head.to(memory_format=torch.channels_last)
    criterion = NTXentLoss(temperature=settings["pretrain"]["temperature"])
    modules = nn.ModuleList([model.backbone, head, model.eq_head])
    spec = settings["pretrain"]["optimizer"]
    groups = optim.parameter_groups(modules, spec["weight_decay"])
    for group in groups:
        group.pop("lars_exclude")
    optimizer = LightlyLARS(groups, lr=spec["lr"], momentum=spec["momentum"], trust_coefficient=spec["lars_eta"])

    def step(batch: dict) -> None:
        with runtime.amp():
            z1 = head(model.backbone(runtime.prepare(batch["view1"])))
            z2 = head(model.backbone(runtime.prepare(batch["view2"])))
            logits = model.eq_head(model.backbone(runtime.prepare(batch["orbit"])))
        loss = (criterion(z1.float(), z2.float())
                + settings["lambda"] * F.cross_entropy(logits.float(), batch["elements"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def profile_views(step: ContrastiveStep, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                  whole_step) -> None:
    """The kernels of five draws of the views, by total device time; then the
    calls the host spends its time in over five whole steps with views (a call
    that waits for the device shows up here)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    generator = torch.Generator().manual_seed(2)
    step.draw(images, labels, generator)
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(5):
            step.draw(images, labels, generator)
        synchronize(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))
    with profile(activities=activities) as prof:
        for _ in range(5):
            whole_step()
        synchronize(device)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default=None,
                        help="override the backbone (default: resnet50 on CUDA, resnet18 on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 128 on CUDA, 32 on CPU)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="backbone,ours,ours-eager,official,lightly,ours+views")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--profile-views", action="store_true",
                        help="also print the device kernels that drawing the views spends its time in")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    batch_size = args.batch or (128 if cuda else 32)
    steps = args.steps or (20 if cuda else 3)
    warmup = 5 if cuda else 1
    torch.backends.cudnn.benchmark = True
    settings = eq_settings(device, args)
    size = settings["views"]["size"]
    info = DatasetInfo("synthetic", 1000, 3, int(size * 1.15), IMAGENET_MEAN, IMAGENET_STD)

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, info.image_size, info.image_size, generator=generator).to(device)
    labels = torch.randint(0, info.num_classes, (batch_size,), generator=generator).to(device)

    def fresh(precision: str = "auto", nchw: bool = False):
        torch.manual_seed(0)
        model = build_model(settings, info)
        runtime = make_runtime(device, precision, info, model)
        if nchw:
            runtime.channels_last = False
        model = runtime.place(model)
        return model, runtime, ContrastiveStep(settings, model, runtime)

    model, runtime, step = fresh()
    batch = step.draw(images, labels, torch.Generator().manual_seed(1))
    results = {}
    wanted = args.variants.split(",")

    if "backbone" in wanted:
        def bare():
            model.zero_grad(set_to_none=True)
            with runtime.amp():
                outputs = [model.backbone(runtime.prepare(batch[k])) for k in ("view1", "view2", "orbit")]
            sum(o.float().mean() for o in outputs).backward()
        results["backbone"] = timed(bare, device, steps, args.repeats, warmup)

    spec = settings["pretrain"]["optimizer"]

    def ours(capture: bool, views: bool = False):
        """train_member's step on a fresh model: the learning rate set, the
        views drawn (or the fixed ones), forward and backward (replayed from a
        CUDA graph with ``capture``), the loss check, the optimizer step."""
        model, runtime, step = fresh()
        optimizer = optim.build_optimizer(model, spec, device)
        scaler = torch.amp.GradScaler(device.type, enabled=runtime.precision == "fp16")
        gradients = graphs.GradientStep(step.loss, optimizer, scaler, capture)
        monitor = LossMonitor("benchmark", device)
        counter = {"step": 0}

        def one_step():
            optim.set_learning_rate(optimizer, optim.learning_rate(counter["step"], 10_000, 100, spec))
            terms = gradients(step.draw(images, labels, generator) if views else batch)
            monitor.record(terms, 0, counter["step"])
            scaler.step(optimizer)
            scaler.update()
            counter["step"] += 1

        return one_step, step

    captured = graphs.wanted(device, 1, nvjpeg=False)
    if "ours-eager" in wanted and captured:
        results["ours-eager"] = timed(ours(capture=False)[0], device, steps, args.repeats, warmup)
    if "ours" in wanted:
        results["ours"] = timed(ours(captured)[0], device, steps, args.repeats, warmup)
    if "ours+views" in wanted:
        whole, step = ours(captured, views=True)
        results["ours+views"] = timed(whole, device, steps, args.repeats, warmup)
        if args.profile_views:
            profile_views(step, images, labels, device, whole)

    if "official" in wanted:
        model, runtime, step = fresh("fp16" if cuda else "fp32", nchw=True)
        nchw = {k: v.contiguous() for k, v in batch.items()}
        official = OfficialStep(step, model, info.num_classes, device, spec)
        results["official"] = timed(lambda: official(nchw, labels), device, steps, args.repeats, warmup)

    if "lightly" in wanted:
        try:
            model, runtime, step = fresh()
            results["lightly"] = timed(lambda f=lightly_step(settings, model, runtime, device): f(batch),
                                       device, steps, args.repeats, warmup)
        except ImportError as error:
            print(f"lightly not installed ({error}); pip install -e '.[bench]'", file=sys.stderr)

    for result in results.values():
        result["images_per_s"] = batch_size / result["step_ms"] * 1000

    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; {settings['backbone']['arch']}, batch {batch_size}, "
          f"views {size} px, small crop {settings['small_crop']['size']} px x 4 rotations; "
          f"{steps} steps x {args.repeats} repeats")
    print(f"{'variant':<12} {'step ms':>9} {'spread':>7} {'img/s':>8} {'peak GiB':>9}")
    for key, r in results.items():
        print(f"{key:<12} {r['step_ms']:9.1f} {r['spread_ms']:7.1f} {r['images_per_s']:8.0f} {r['peak_gib']:9.2f}")
    checks = []
    if {"ours", "backbone"} <= results.keys():
        checks.append(("ours / bare backbone (time)", results["ours"]["step_ms"] / results["backbone"]["step_ms"],
                       "<= 1.05"))
    if {"ours", "official"} <= results.keys():
        checks.append(("ours / official (throughput)", results["official"]["step_ms"] / results["ours"]["step_ms"],
                       ">= 1.45"))
    if {"ours", "lightly"} <= results.keys():
        checks.append(("ours / lightly (throughput)", results["lightly"]["step_ms"] / results["ours"]["step_ms"],
                       ">= 1.00"))
    if {"ours", "ours+views"} <= results.keys():
        checks.append(("ours+views / ours (throughput)", results["ours"]["step_ms"] / results["ours+views"]["step_ms"],
                       ">= 0.90"))
    for label, value, target in checks:
        bound = float(target.split()[1])
        ok = value <= bound if target.startswith("<=") else value >= bound
        print(f"{label:<32} {value:6.3f}  target {target}  {'met' if ok else 'MISSED'}")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": name, "torch": torch.__version__, "batch": batch_size,
                                              "settings": copy.deepcopy(settings), "results": results,
                                              "checks": checks}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
