#!/usr/bin/env bash
# The GPU numbers in one prepared run (docs/benchmarks.md; issue 12): the training-step
# benchmark for the paper and one-tower models, float32 and bfloat16, batch 128 and 512,
# against PyTorch (cuDNN, channels_last, bf16 autocast) in the same process, then the
# layer-implementation comparison (model.conv_impl / pool_grad / lrn_impl) on the paper
# model. Reports land in $OUT (default /tmp/gpu_session): env.txt, step.json/.log,
# kernels.json/.log.
#
#   bash benchmarks/gpu_session.sh fetch   # here, with the package index: wheels -> .whl/
#   bash benchmarks/gpu_session.sh         # on the GPU machine, from the repository root
#                                          # (.whl/ copied there with the checkout)
#   bash benchmarks/gpu_session.sh cifar10_claims   # the paper's CIFAR-10 claims, full length
#
# cifar10_claims (issue 18; docs/cifar10_claims.md) runs `python -m experiments.cifar10_claims`
# for figure1 (a cap of 80 epochs, 2 seeds, each sweep run to 25% or the cap), lrn (the config's
# 320 epochs, 3 seeds) and dropout (100 epochs, 2 seeds) on CIFAR10_FOLDER (default
# ../shared/data/cifar10/train), results in CLAIMS_OUT (default experiments/results/cifar10).
# Hours, not minutes (lrn alone is 2,880 epochs of conv-local), and it needs the full
# requirements (TensorFlow decodes the JPEGs); rerunning it resumes where it stopped. Then
# the ablation sweep (`experiments.ablations`) on the conv-local net, 60 epochs x 3 seeds,
# into CLAIMS_OUT/ablations.
#
# Budget: both parts end within about 9 minutes (timeouts 330 s + 180 s), so a 10-minute
# command limit and a rerun fit in 15 minutes of device time.
#
# Nothing here needs TensorFlow or CLU (the step benchmark runs without them), so a GPU
# image that has JAX (with its CUDA plugin), Flax, Optax, Orbax and PyTorch needs only the
# small pure-Python wheels `fetch` puts in .whl/ (installed with --no-deps into
# /tmp/site when .whl/ is there). GPU_SESSION_SMALL=1 runs tiny shapes instead (a check
# of this script on a CPU).
set -uo pipefail

WHEELS=(ml_collections==1.1.0 flax==0.12.8)

if [[ "${1:-}" == fetch ]]; then
  mkdir -p .whl
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp -d .whl "${WHEELS[@]}"
  exit $?
fi

if [[ "${1:-}" == cifar10_claims ]]; then
  FOLDER=${CIFAR10_FOLDER:-../shared/data/cifar10/train}
  RESULTS=${CLAIMS_OUT:-experiments/results/cifar10}
  export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  status=0
  for claim in "figure1 --epochs=80 --seeds=2" "lrn --epochs=320 --seeds=3" \
               "dropout --epochs=100 --seeds=2"; do
    # shellcheck disable=SC2086  # $claim is the claim and its flags
    "${PYTHON:-python3}" -m experiments.cifar10_claims $claim --folder="$FOLDER" \
        --out="$RESULTS" || status=1
  done
  # Issue 18 item 1d: the ablation sweep on a CIFAR-10 base (the paper's own 11% net; the
  # switches that apply to it: lrn, pooling, activation), 60 epochs x 3 seeds at the
  # constant rate 0.001 (its drops at 300 and 310 lie beyond 60).
  "${PYTHON:-python3}" -m experiments.ablations --base=configs/cifar10_conv_local.py \
      --sweep=lrn,pooling,activation --seeds=3 --epochs=60 \
      --set=dataset.folder="$FOLDER" --out="$RESULTS/ablations" || status=1
  echo "gpu_session cifar10_claims: done (status $status); results in $RESULTS"
  exit $status
fi

OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
if compgen -G '.whl/*.whl' > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

if [[ -n "${GPU_SESSION_SMALL:-}" ]]; then
  SHAPES=(--config.batch_sizes=8 --config.runs=2 --config.peak_sizes=256
          "--config.overrides=model.conv_widths=(8,16,16,16,16);model.fc_widths=(32,32);model.num_classes=10;model.input_size=67;input.resize_size=72")
  LIMIT=600
else
  SHAPES=(--config.batch_sizes=128,512 --config.runs=20 --config.peak_sizes=4096,8192)
  LIMIT=330
fi

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
      2>/dev/null || echo 'nvidia-smi: none'
  "$PY" - <<'EOF'
import importlib, jax
print('jax', jax.__version__, jax.default_backend(), jax.devices())
for name in ('flax', 'optax', 'orbax.checkpoint', 'ml_collections', 'torch'):
  try:
    print(name, getattr(importlib.import_module(name), '__version__', '?'))
  except ImportError as e:
    print(name, 'MISSING', e)
EOF
} 2>&1 | tee "$OUT/env.txt"

status=0
# 1. Both models x both dtypes x both batch sizes, against PyTorch.
timeout "$LIMIT" "$PY" -m benchmarks.step --config=benchmarks/configs/step.py \
    --config.models=paper,one_tower --config.dtypes=float32,bfloat16 "${SHAPES[@]}" \
    --config.json="$OUT/step.json" 2>&1 | tee "$OUT/step.log" || status=1

# 2. The layer implementations on the paper model, bf16: the backend's default, the
#    forms tuned on XLA:CPU, the native ones (same results; speed only).
KSHAPES=("${SHAPES[@]}")
[[ -z "${GPU_SESSION_SMALL:-}" ]] && KSHAPES=(--config.batch_sizes=512 --config.runs=20
                                             --config.peak_sizes=8192)
timeout 180 "$PY" -m benchmarks.step --config=benchmarks/configs/step.py \
    --config.models=paper --config.dtypes=bfloat16 "${KSHAPES[@]}" \
    --config.kernels=auto,split:custom:rsqrt:matmul,grouped:autodiff:pow:native,grouped:autodiff:pow:matmul \
    --config.torch=False --config.forward=False \
    --config.json="$OUT/kernels.json" 2>&1 | tee "$OUT/kernels.log" || status=1

echo "gpu_session: done (status $status); reports in $OUT"
exit $status
