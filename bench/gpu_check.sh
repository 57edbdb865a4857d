#!/usr/bin/env bash
# Every GPU figure still owed, in one run on one GPU (not yet run on one, so how long it takes is not known yet):
#   - stage-1 and stage-2 training at the 7B shape: samples/s, MFU and peak memory of ours, each lever added in turn,
#     against the transformers BLIP-2 assembly at parity (ours' weights, precision per part and attention), bf16
#     with SDPA, and again with flash-attention when it is installed (packed rows then take its varlen path); the
#     median of 3 alternating runs of 20 steps each, with their spread (bench/train_throughput.py);
#   - chat with MiniGPT-4 at the 7B shape in bf16, int8 and NF4: peak memory, decode tokens/s at batch 1
#     and 8, ours and the BLIP-2 assembly (bench/generate.py);
#   - whole train.py runs at the 7B shape: plain, DeepSpeed ZeRO-2 and QLoRA (NF4), seconds per step
#     and peak memory (bench/train_steps.py);
# then one summary table (bench/summary.py). Results: bench/results/*_gpu.json and gpu_check_gpu.txt.
#
#   bash bench/gpu_check.sh                    # on the GPU machine
#   RESULTS=DIR bash bench/gpu_check.sh        # each result file into DIR as soon as it is measured
#   bash bench/gpu_check.sh --dry-run [DIR]    # the same steps on the CPU at tiny shapes, results in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
if [[ "${1:-}" == "--dry-run" ]]; then
    # stage 2 only (stage 1 is the same code on other batches); no second attention run (ATTN=eager
    # adds one, standing in for flash-attention)
    device=cpu; preset=tiny; out=${2:-$(mktemp -d)}; suffix=dryrun; steps=2; train_steps=2; rounds=2; new_tokens=4
    stages=stage2; second_attn=${ATTN:-}
else
    device=cuda:0; preset=7b; out=${RESULTS:-bench/results}; suffix=gpu; steps=5; train_steps=20; rounds=3; new_tokens=64
    stages="stage1 stage2"; second_attn=$($python -c "import flash_attn; print('flash_attention_2')" 2>/dev/null || true)
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$python -m bench.train_throughput --preset "$preset" --device "$device" --stages $stages --warmup 1 \
    --steps "$train_steps" --rounds "$rounds" --out "$out/train_throughput_$suffix.json"
results=("$out/train_throughput_$suffix.json")
if [[ -n "$second_attn" ]]; then
    $python -m bench.train_throughput --preset "$preset" --device "$device" --stages stage2 --warmup 1 \
        --steps "$train_steps" --rounds "$rounds" --attn "$second_attn" --out "$out/train_throughput_${second_attn}_$suffix.json"
    results+=("$out/train_throughput_${second_attn}_$suffix.json")
fi
$python -m bench.generate --shape "$preset" --device "$device" --arch minigpt4 --batch-sizes 1 8 \
    --new-tokens "$new_tokens" --work-dir "$work" --out "$out/generate_$suffix.json"
$python -m bench.train_steps --shape "$preset" --device "$device" --steps "$steps" --out "$out/train_steps_$suffix.json"
$python -m bench.summary "${results[@]}" "$out/generate_$suffix.json" "$out/train_steps_$suffix.json" \
    | tee "$out/gpu_check_$suffix.txt"
