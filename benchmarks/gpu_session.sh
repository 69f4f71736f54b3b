#!/usr/bin/env bash
# One call on a lent GPU machine (see benchmarks/README.md): install the project
# over the machine's own torch, run the CUDA tests, then the GPU benchmarks: the
# step five ways (target 1) and the whole loop in memory, streamed from the CPU
# workers, and streamed with nvjpeg (on a stream of its own, and as main runs it),
# its data path timed per part (target 2); last, the probe's fit
# with its objective on the GPU (probe.device cuda) against what its job asks for.
# Wheels the machine lacks travel in .whl/, which benchmarks/gpu_wheels.sh fills here
# (submitit, jsonschema and its dependencies, lightly).
set -o pipefail
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
timeout -k 10 150 python3 -m pytest -o addopts="" -q -p no:cacheprovider -n 8 -s tests/test_graphs.py tests/test_views.py \
    tests/test_streaming.py tests/test_optim.py tests/test_symmetries.py \
    tests/test_pretrain.py::test_non_finite_loss_on_cuda_stops_before_any_save \
    tests/test_pretrain.py::test_signal_on_cuda_saves_device_sums_and_resumes \
    tests/test_warm.py::test_preloading_never_asks_for_cuda tests/test_warm.py::test_a_worker_trains_on_the_gpu \
    tests/test_probe.py 2>&1 | tee "$OUT/tests.log" \
    | grep -E "nvjpeg vs|passed|failed|Error|warning: capturing" | tail -12
timeout -k 10 200 python3 benchmarks/pretrain_step.py --profile-views --out "$OUT/pretrain_step.json" 2>&1 | tee "$OUT/pretrain_step.log"
timeout -k 10 300 python3 benchmarks/paper_path.py --step-json "$OUT/pretrain_step.json" --out "$OUT/paper_path.json" \
    --variants memory,cpu,device-stream,read-cpu,device,read-device --timings 2>&1 | tee "$OUT/paper_path.log" | grep -v "epoch 1/"
timeout -k 10 120 python3 benchmarks/probe_scale.py --device cuda --iterations 50 --out "$OUT/probe_scale_cuda.json" 2>&1 | tee "$OUT/probe_scale_cuda.log"
