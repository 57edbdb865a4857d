#!/usr/bin/env bash
# The main job on the built-in default: set up, make the synthetic shapes data, train a tiny MiniGPT-4
# (stage 1, then stage 2) under torchrun on the CPU, then chat with it through demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export WANDB_MODE=${WANDB_MODE:-offline}
start=$(date +%s)

python dataset/synthetic_shapes.py --out data/shapes --seed 0
rm -rf output/tiny_stage1 output/tiny_stage2
torchrun --nproc-per-node 1 train.py --cfg-path train_configs/tiny_stage1.yaml
torchrun --nproc-per-node 1 train.py --cfg-path train_configs/tiny_stage2.yaml

image=$(python -c "import json; print(json.load(open('data/shapes/test.json'))[0]['image'])")
echo
echo "== demo: a two-turn chat about data/shapes/images/$image =="
printf 'Which colors do you see?\nHow many shapes are there?\n/quit\n' |
    python demo.py --cfg-path eval_configs/tiny_eval.yaml --image "data/shapes/images/$image" --max-new-tokens 20

echo
echo "== demo: every held-out question of data/shapes/test.json =="
python demo.py --cfg-path eval_configs/tiny_eval.yaml --questions data/shapes/test.json --json --batch-size 100 \
    --max-new-tokens 20 > output/tiny_answers.jsonl
python - <<'PY'
import collections, json
kinds = {r["id"]: r["question_type"] for r in json.load(open("data/shapes/test.json"))}
right, total = collections.Counter(), collections.Counter()
for line in open("output/tiny_answers.jsonl"):
    answer = json.loads(line)
    total[kinds[answer["id"]]] += 1
    right[kinds[answer["id"]]] += answer["answer"] == answer["reference"]
for kind in total:
    print(f"{kind:>9}: {right[kind] / total[kind]:.3f} exact match on {total[kind]} questions")
PY
echo "done in $(( $(date +%s) - start )) s (after setup)"
