#!/usr/bin/env bash
# The GPU checks, as one script for a lent CUDA machine (README "Benchmarks", GPU rows).
#
#   bench/gpu_check.sh [OUT_DIR]
#
# Expects a python3 with torch (CUDA) and transformers and the project's other dependencies
# importable (PYTHONPATH). Makes the demo's manifest and views first unless
# manifests/synthetic.json exists. Then runs, each with its own time limit:
#   1. the CUDA tests (bf16 autocast step; the no-GPU error test skips itself on CUDA);
#   2. bench/train.py views: optimizer-step cost of N = 0, 1, 5 views of hubert-base
#      shapes (random weights, bf16 autocast), audio seconds per second and MFU; then
#      how far padding moves a clip's embedding there (plain forward vs NCoreModel.infer);
#   3. a short ncore-train run (bf16, 2 epochs) of a randomly initialised hubert-base
#      folder on the demo's cache, streaming the shards as a user's run does.
set -u
out=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers, zarr; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'zarr', zarr.__version__)" | tee -a "$out/gpu.txt"

if [ ! -f manifests/synthetic.json ]; then
  echo "== 0. the demo's corpus and views (ncore-prep on this machine's cores)"
  start=$(date +%s.%N)
  timeout 240 python3 -m pipeline.cli manifest --dataset synthetic --preset premise 2>&1 | tail -3
  timeout 300 python3 -m pipeline.cli perturb --dataset synthetic --views 5 2>&1 | tail -3
  echo "prep wall $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s ($(nproc) cores)" \
    | tee "$out/prep.txt"
fi

echo "== 1. CUDA tests"
timeout 240 python3 -m pytest -q -s -p no:cacheprovider tests/test_cuda.py \
  tests/test_batch_invariance.py tests/test_trainer_model.py tests/test_trainer_cli.py 2>&1 \
  | grep -v "^[.s]*$" | tail -15 | tee "$out/tests.txt"

echo "== 2. cost of N views, hubert-base shapes, bf16"
timeout 180 python3 bench/train.py views --backbone hubert-base --device cuda --steps 10 \
  2>&1 | tee "$out/views.txt"
timeout 120 python3 bench/train.py views --backbone hubert-base --device cuda --steps 10 \
  --batch-size 32 --views 5 2>&1 | tail -1 | tee -a "$out/views.txt"

echo "== 2b. batch dependence of hubert-base shapes (group-norm encoder, no mask), bf16"
timeout 120 python3 - <<'EOF' 2>&1 | tee "$out/batch.txt"
import torch
from transformers import HubertConfig, HubertModel
from trainer.model import InputSpec, NCoreModel
torch.manual_seed(0)
spec = InputSpec(do_normalize=True, return_attention_mask=False)
model = NCoreModel(HubertModel(HubertConfig()), spec, 4, 6).cuda().eval()
g = torch.Generator().manual_seed(1)
short, long = 0.1 * torch.randn(16000, generator=g), 0.1 * torch.randn(48000, generator=g)
alone = short[None, None].cuda(), torch.tensor([16000]).cuda()
both = torch.zeros(2, 1, 48000)
both[0, 0, :16000], both[1, 0] = short, long
both = both.cuda(), torch.tensor([16000, 48000]).cuda()
rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())
with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
    plain = rel(model(*both).embeddings[0, 0], model(*alone).embeddings[0, 0])
    infer = rel(model.infer(*both).embeddings[0, 0], model.infer(*alone).embeddings[0, 0])
print(f"1 s clip batched with a 3 s clip vs alone, relative L2 of its embedding: "
      f"plain padded forward {plain:.3f}, NCoreModel.infer {infer:.2e}")
EOF

echo "== 3. short bf16 training run, random hubert-base, demo cache"
python3 - <<'EOF'
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor
torch.manual_seed(0)
HubertModel(HubertConfig()).save_pretrained("/tmp/hubert-base-random")
Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(
    "/tmp/hubert-base-random")
EOF
start=$(date +%s.%N)
timeout 240 python3 -m trainer.cli --manifest manifests/synthetic.json \
  --backbone /tmp/hubert-base-random --views 5 --epochs 2 --seeds 42 --lr 1e-5 \
  --max-seconds 2 --batch-size 16 --device cuda --out /tmp/gpu-run 2>&1 | tail -25 \
  | tee "$out/train.txt"
echo "wall $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s" | tee -a "$out/train.txt"
cp /tmp/gpu-run/seed-42/metrics.jsonl "$out/metrics.jsonl" 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv | tee -a "$out/gpu.txt"
