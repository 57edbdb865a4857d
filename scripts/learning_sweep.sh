#!/usr/bin/env bash
# Every learning test over training seeds, data seeds and the CPU kernel paths that can be forced, then
# one table of what each run measured (the thresholds in the tests sit below the worst of them):
#
#   bash scripts/learning_sweep.sh                 # every learning test, every setting
#   bash scripts/learning_sweep.sh colours faces   # some of them (names below)
#
# JOBS=N runs N at a time (default: the number of cores; each run uses one thread, as the suite does);
# SETTINGS="seed=1 data=2 ..." picks settings by name; OUT=DIR keeps the logs and results.jsonl there.
# Runs already in OUT/results.jsonl are skipped, so an interrupted sweep goes on where it stopped.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && . .venv/bin/activate

declare -A TESTS=(
    [colours]="tests/test_learning.py::test_tiny_minigpt4_learns_colours_and_needs_the_image"
    [grounding]="tests/test_learning.py::test_tiny_minigpt_v2_learns_grounding"
    [patterns]="tests/test_learning.py::test_sub_images_read_fine_patterns_that_the_global_view_cannot"
    [faces]="tests/test_face_learning.py::test_face_sections_are_learned_from_the_image_and_select_steers_them"
    [paragraph]="tests/test_paragraph_learning.py::test_tiny_model_writes_paragraphs_about_what_the_image_shows"
    [tools]="tests/test_tool_learning.py::test_tiny_model_learns_to_call_tools_and_needs_the_image"
    [backbones]="tests/test_backbone_learning.py::test_tiny_qwen2_siglip_learns_colours_with_the_llama_margins"
)
# name -> environment; "base" is the suite's own run (training seed 42, data seed 0, one thread).
declare -A ENVS=(
    [base]=""
    [seed=1]="LEARNING_SEED=1"
    [seed=2]="LEARNING_SEED=2"
    [data=1]="LEARNING_DATA_SEED=1"
    [data=2]="LEARNING_DATA_SEED=2"
    [aten=default]="ATEN_CPU_CAPABILITY=default"
    [aten=avx2]="ATEN_CPU_CAPABILITY=avx2"
    [aten=avx512]="ATEN_CPU_CAPABILITY=avx512"
    [onednn+mkl=avx2]="ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2"
    [threads=all]="OMP_NUM_THREADS=$(nproc)"
)
# aten=avx512 is left out by default: it is what torch picks by itself on a CPU with AVX-512 (base).
SETTINGS=${SETTINGS:-base seed=1 seed=2 data=1 data=2 aten=default aten=avx2 onednn+mkl=avx2 threads=all}
OUT=${OUT:-sweep}
JOBS=${JOBS:-$(nproc)}
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(colours grounding patterns faces paragraph tools backbones)
mkdir -p "$OUT/logs"
RESULTS=$(realpath "$OUT")/results.jsonl
touch "$RESULTS"

run_one() {  # test name, setting name
    local test=$1 setting=$2 log="$OUT/logs/$1.${2//[^a-z0-9.=+-]/_}.log"
    if grep -q "\"sweep\": \"$test $setting\"" "$RESULTS"; then echo "done already: $test $setting"; return; fi
    echo "start: $test $setting"
    # shellcheck disable=SC2086
    env OMP_NUM_THREADS=1 LEARNING_RESULTS="$RESULTS.part.$test.${setting//[^a-z0-9]/_}" ${ENVS[$setting]} \
        python -m pytest -q -n 0 -p no:cacheprovider "${TESTS[$test]}" >"$log" 2>&1
    local status=$? part="$RESULTS.part.$test.${setting//[^a-z0-9]/_}"
    python - "$part" "$test $setting" "$status" >>"$RESULTS" <<'PY'
import json, sys
part, sweep, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    lines = [json.loads(line) for line in open(part)]
except FileNotFoundError:
    lines = [{"test": sweep.split()[0], "values": {}}]
for line in lines:
    print(json.dumps({**line, "sweep": sweep, "passed": status == 0}))
PY
    rm -f "$part"
    echo "end: $test $setting (exit $status)"
}
export -f run_one
export OUT RESULTS
export TESTS_DECL="$(declare -p TESTS ENVS)"

for test in "${NAMES[@]}"; do
    [ -n "${TESTS[$test]:-}" ] || { echo "unknown learning test: $test (one of: ${!TESTS[*]})" >&2; exit 2; }
done
for setting in $SETTINGS; do
    [ -n "${ENVS[$setting]+set}" ] || { echo "unknown setting: $setting (one of: ${!ENVS[*]})" >&2; exit 2; }
done
for test in "${NAMES[@]}"; do
    for setting in $SETTINGS; do printf '%s %s\n' "$test" "$setting"; done
done | xargs -P "$JOBS" -L 1 bash -c 'eval "$TESTS_DECL"; run_one "$0" "$1"'

python scripts/learning_sweep_table.py "$RESULTS"
