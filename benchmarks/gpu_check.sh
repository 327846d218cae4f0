#!/usr/bin/env bash
# The GPU check: aevb's figures on one CUDA GPU (an H100 or H200), in under 8 minutes, one table.
#
#   bash benchmarks/gpu_check.sh prepare     # here, with the package registry: wheels and data
#   bash benchmarks/gpu_check.sh run [OUT]   # on the GPU machine (no internet): the check
#
# `prepare` puts the wheels the GPU image lacks (Pyro, pyro-api, opt_einsum, OmegaConf) in .whl/ and
# Fashion-MNIST in .gpu-data/ (both ignored by git; carry them with the working tree). `run`
# installs aevb and those wheels into /tmp/aevb-site with no index, then measures, each step
# under its own time limit so one slow step cannot take the rest with it:
#   1. training: aevb's fast engine against the hand-written PyTorch loop at batch 128 and 1024
#      for elbo, meanfield and iwae (targets: 1.25x at 128, 1.10x at 1024), benchmarks/throughput.py;
#   2. the k=5000 evaluation's images/s and its matmul rate against a large torch.mm, same script;
#   3. M2's training step and its k=5000 log p(x) against the hand-written M2
#      (benchmarks/m2_step.py);
#   4. end to end: `aevb train` under train.engine=fast and graphed (CUDA graphs), epoch times and
#      objectives side by side, then the graphed run resumed from its checkpoint;
#   5. a 1-GPU DistributedDataParallel run (NCCL) against plain training (benchmarks/scaling.py).
# It writes OUT/gpu_check.md (default $OUT, else ./gpu-check) with every step's output.
# ONLY=train,eval,m2,engines,ddp picks the steps (default: all).
# DEVICE=cpu QUICK=1 runs the same steps on the CPU with a few steps each (a smoke test of the
# script itself, not a measurement).
set -u
device=${DEVICE:-cuda}
if [ -n "${QUICK:-}" ]; then
  steps=2 repeats=1 images=40 k=50 m2_images=10 epochs=1 train_size=2000
else
  steps=50 repeats=3 images=2000 k=5000 m2_images=200 epochs=3 train_size=50000
fi
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

prepare() {
  mkdir -p .whl .gpu-data/fashion-mnist
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo /.gpu-data/ >> .git/info/exclude
  # the GPU image has Python 3.12 with torch, torchvision, matplotlib, tqdm, scipy, lazy-loader
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "pyro-ppl>=1.9,<1.10" pyro-api "omegaconf>=2.3" opt_einsum || exit 1
  cp /usr/share/datasets/fashion-mnist/*.gz .gpu-data/fashion-mnist/ || {
    echo "Fashion-MNIST not found: apt-get install -y dataset-fashion-mnist" >&2; exit 1; }
  du -sh .whl .gpu-data
  echo "carry .whl and .gpu-data; on the GPU machine: bash benchmarks/gpu_check.sh run \$OUT"
}

step() {  # step NAME SECONDS TITLE COMMAND...: one measured step, its output into the table
  local name=$1 limit=$2 title=$3
  shift 3
  case ",${ONLY:-train,eval,m2,engines,ddp}," in *",$name,"*) ;; *) return 0 ;; esac
  echo "## $title" >> "$table"
  echo '```' >> "$table"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v "max_plate_nesting" | tee -a "$table"
  local code=${PIPESTATUS[0]}
  echo '```' >> "$table"
  echo "(exit $code after $((SECONDS - start)) s; limit $limit s)" | tee -a "$table"
  echo >> "$table"
}

run() {
  out=${1:-${OUT:-gpu-check}}
  mkdir -p "$out"
  table="$out/gpu_check.md"
  export PYTHONUNBUFFERED=1
  site=/tmp/aevb-site
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --no-cache-dir --upgrade --target "$site" .whl/* || exit 1
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --no-cache-dir --upgrade --target "$site" . || exit 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  data=$here/.gpu-data/fashion-mnist
  cd /tmp  # import aevb from the install, not from the working tree's folders
  python3 - > "$table" <<'EOF'
import torch, pyro, aevb
where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"# aevb GPU check: {where}, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, Pyro {pyro.__version__}, aevb {aevb.__version__}\n")
EOF
  [ -s "$table" ] || { echo "aevb or CUDA did not import" >&2; exit 1; }
  step train 200 "Training: aevb against the hand-written loop (ms/step)" \
    python3 "$here/benchmarks/throughput.py" --device "$device" --data-dir "$data" \
    --objectives elbo,meanfield,iwae:5 --batch-sizes 128,1024 --steps "$steps" \
    --repeats "$repeats" --no-eval
  step eval 120 "Evaluation: k=$k log p(x), $images test images" \
    python3 "$here/benchmarks/throughput.py" --device "$device" --data-dir "$data" --no-train \
    --eval-images "$images" --eval-k "$k" --eval-chunks 100x20,500x100
  step m2 120 "M2: training step and k=$k log p(x) against the hand-written M2" \
    python3 "$here/benchmarks/m2_step.py" --device "$device" --data-dir "$data" \
    --rounds "$((repeats + 2))" --steps "$((steps / 2 + 1))" --eval-k "$k" \
    --eval-images "$m2_images" --eval-rounds "$repeats"
  step engines 150 "End to end: aevb train, train.engine=fast against graphed ($epochs epochs, then a resume)" \
    bash "$here/benchmarks/gpu_check.sh" engines "$data" "$out"
  step ddp 150 "Data-parallel: 1 rank under DDP (NCCL on CUDA)" \
    python3 "$here/benchmarks/scaling.py" --device "$device" --data-dir "$data" --ranks 1 \
    --batch-sizes 128,1024 --steps "$((steps < 40 ? steps : 40))" --repeats "$repeats"
  echo "table: $table"
}

engines() {  # engines DATA OUT: the same run under each engine, then the graphed one resumed
  local data=$1 out=$2 engine names="fast graphed"
  [ "$device" = cuda ] || names=fast  # graphed needs CUDA (the CPU smoke test runs fast only)
  cd /tmp  # aevb from the install, not the working tree's folders
  for engine in $names; do
    rm -rf "$out/run-$engine"
    python3 -m aevb.cli train --config vae_fashion --run-dir "$out/run-$engine" --device "$device" \
      --data-dir "$data" --no-progress "train.engine=$engine" "train.epochs=$epochs" \
      "data.train_size=$train_size" data.test_size=1000 eval.num_samples=100 \
      train.tensorboard=false seed=0 2>&1 | grep -v "max_plate_nesting" || return 1
  done
  python3 -m aevb.cli train --resume "$out/run-$engine" --device "$device" \
    --data-dir "$data" --no-progress "train.epochs=$((epochs + 1))" 2>&1 | grep -E "epoch|test" \
    || return 1
  python3 - "$out" <<'EOF'
import json, sys
from pathlib import Path
print("| engine | epoch | seconds | images/s | train objective | valid ELBO |\n|---|---|---|---|---|---|")
for run in sorted(Path(sys.argv[1]).glob("run-*")):
    engine = run.name.removeprefix("run-")
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        print(f"| {engine} | {r['epoch']} | {r['seconds']:.2f} | {r['images_per_s']:.0f} | "
              f"{r['train_objective']:.2f} | {r.get('valid_elbo', float('nan')):.2f} |")
EOF
  rm -rf "$out/run-fast" "$out/run-graphed"
}

case "${1:-}" in
  prepare) prepare ;;
  engines) shift; engines "$@" ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash benchmarks/gpu_check.sh prepare | run [OUT]" >&2; exit 2 ;;
esac
