"""Does torchvision's nvjpeg decode wait for other work queued on the GPU?
(issue 15, target 2)

Streamed with nvjpeg, the whole loop ran at 0.864 of the step alone, and
beside the CUDA-graphed step the decode call took 82 ms per batch instead of
10.5 (``paper_path.py --timings``). Three explanations predict different
fixes, and this script tells them apart in a few seconds:

  - the decoder's work waits for the legacy default stream, where
    ``train_member`` queues its step: training on a stream of its own fixes it
    (``paper_path.py``'s ``device-stream`` variant measures that);
  - the decoder synchronises the whole device (an allocation or free inside
    nvjpeg): only a decoder in another process, with its own CUDA context,
    escapes it;
  - it waits for nothing: the decoder is slowed by sharing the device, and
    only less decoding work (or a faster engine) helps.

It decodes one batch of synthetic ImageNet-sized JPEGs (``paper_path.
photograph``) as a split streamed through nvjpeg does (a batch call to
``torchvision.io.decode_jpeg`` under the side stream of ``StreamedImages``), four ways:
with the device idle; while a kernel that spins for ``--busy-ms`` runs on the
legacy default stream; while it runs on another non-blocking stream; while it
runs in another process (the remedy of ``MULTISYM_NVJPEG_PROCESS=1``, seen from
the decoder's side: without MPS the two CUDA contexts take turns on the GPU, so
this tells whether a long kernel of the other context holds the decoder back
for its whole length). A call that returns only after the spinning kernel has
ended waited for it.

    python benchmarks/nvjpeg_waits.py [--images 128 --busy-ms 300 --out FILE.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from paper_path import photograph

REPEATS = 3
SPINNER_WAIT_S = 30.0  # for the other process to start (it imports torch) or to queue its kernel


def jpeg_batch(count: int) -> list[torch.Tensor]:
    """``count`` JPEG files' bytes, as ``JpegDecoder.read`` returns them."""
    batch = []
    for seed in range(count):
        buffer = io.BytesIO()
        photograph(seed).save(buffer, format="JPEG", quality=90)
        batch.append(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8))
    return batch


def cycles_per_ms() -> float:
    """The spin kernel's clock, timed with CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cycles = 50_000_000
    torch.cuda._sleep(cycles)  # the first launch loads the kernel
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return cycles / start.elapsed_time(end)


def decode_ms(jpegs: list[torch.Tensor], side: torch.cuda.Stream, busy: torch.cuda.Stream | None,
              cycles: int) -> float:
    """Host milliseconds of one batch decode call on the ``side`` stream (one
    for every call, as in ``StreamedImages``, so that the caching allocator reuses
    its blocks rather than allocating), with the spinning kernel queued first
    on ``busy`` (None: the device idle)."""
    torch.cuda.synchronize()
    if busy is not None:
        with torch.cuda.stream(busy):
            torch.cuda._sleep(cycles)
    spent = timed_decode(jpegs, side)
    torch.cuda.synchronize()
    return spent


def timed_decode(jpegs: list[torch.Tensor], side: torch.cuda.Stream) -> float:
    """Host milliseconds of one batch decode call under the ``side`` stream."""
    tick = time.perf_counter()
    with torch.cuda.stream(side):
        decode_jpeg(jpegs, mode=ImageReadMode.RGB, device="cuda")
    return 1000 * (time.perf_counter() - tick)


def spin_on_request(cycles: int, go, launched) -> None:
    """Another process: queue the spinning kernel each time ``go`` is set."""
    torch.cuda._sleep(1000)  # the context and the kernel, before the first request
    torch.cuda.synchronize()
    launched.set()
    for _ in range(REPEATS):
        go.wait()
        go.clear()
        torch.cuda._sleep(cycles)
        launched.set()
        torch.cuda.synchronize()


def decode_ms_beside_a_process(jpegs: list[torch.Tensor], side: torch.cuda.Stream, cycles: int) -> list[float]:
    """Host milliseconds of ``REPEATS`` decode calls, each made right after
    another process has queued the spinning kernel (none if that process
    does not answer)."""
    context = torch.multiprocessing.get_context("spawn")
    go, launched = context.Event(), context.Event()
    spinner = context.Process(target=spin_on_request, args=(cycles, go, launched), daemon=True)
    spinner.start()
    spent = []
    if not launched.wait(SPINNER_WAIT_S):
        print("the spinning process did not start", file=sys.stderr)
        spinner.kill()
        return spent
    for _ in range(REPEATS):
        torch.cuda.synchronize()
        launched.clear()
        go.set()
        if not launched.wait(SPINNER_WAIT_S):
            break
        spent.append(timed_decode(jpegs, side))
    spinner.join(SPINNER_WAIT_S)
    if spinner.is_alive():
        spinner.kill()
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=128, help="JPEGs per batch (the paper's per-GPU batch)")
    parser.add_argument("--busy-ms", type=float, default=300.0, help="how long the spinning kernel runs")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("nvjpeg_waits.py needs a CUDA device", file=sys.stderr)
        return 2

    jpegs = jpeg_batch(args.images)
    cycles = int(args.busy_ms * cycles_per_ms())
    side = torch.cuda.Stream()
    decode_ms(jpegs, side, None, cycles)  # nvjpeg's handle and buffers
    cases = {"idle": None, "legacy default stream busy": torch.cuda.default_stream(),
             "another stream busy": torch.cuda.Stream()}
    figures = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "images": args.images,
               "busy_ms": args.busy_ms, "decode_ms": {}}
    for case, busy in cases.items():
        figures["decode_ms"][case] = statistics.median(decode_ms(jpegs, side, busy, cycles) for _ in range(REPEATS))
    beside = decode_ms_beside_a_process(jpegs, side, cycles)
    figures["decode_ms"]["another process busy"] = statistics.median(beside) if beside else float("nan")
    idle = figures["decode_ms"]["idle"]
    waits = {case: spent > idle + args.busy_ms / 2 for case, spent in figures["decode_ms"].items() if case != "idle"}
    figures["waits"] = waits
    print(f"device: {figures['device']}; torch {figures['torch']}; one batch decode call of {args.images} JPEGs "
          f"on a side stream, median of {REPEATS}; the spinning kernel runs {args.busy_ms:.0f} ms")
    for case, spent in figures["decode_ms"].items():
        print(f"{case:<28} {spent:8.1f} ms" + (f"  waits for it: {'yes' if waits[case] else 'no'}"
                                                 if case in waits else ""))
    if waits["another stream busy"] and waits["another process busy"]:
        verdict = ("the decoder synchronises the whole device, and a long kernel of another process holds it back "
                   "too: a process of its own does not escape it; decode on the CPU (gpu_jobs.decode: cpu)")
    elif waits["another stream busy"]:
        verdict = ("the decoder synchronises the whole device: decode in a process of its own "
                   "(MULTISYM_NVJPEG_PROCESS=1, paper_path.py's device-process)")
    elif waits["legacy default stream busy"]:
        verdict = "the decoder waits for the legacy default stream: train on a stream of its own"
    else:
        verdict = "the decoder waits for no queued work: its slowdown beside the step is shared hardware"
    figures["verdict"] = verdict
    print(verdict)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
