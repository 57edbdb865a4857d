#!/usr/bin/env bash
# Train on several machines under SLURM: one torchrun agent per node, meeting at a c10d rendezvous on the
# first node. Submit with, for example:
#   sbatch --nodes 2 --gpus-per-node 8 scripts/slurm_train.sh train_configs/minigpt4_stage2_finetune.yaml
# Extra arguments go to train.py (--options key=value ...). run.output_dir must be on a file system every
# node sees: rank 0 writes the checkpoints, and every rank reads one to resume.
#SBATCH --job-name=minigpt
#SBATCH --ntasks-per-node=1
set -euo pipefail
config=${1:?usage: sbatch scripts/slurm_train.sh CONFIG.yaml [--options key=value ...]}
shift
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
gpus_per_node=${SLURM_GPUS_ON_NODE:-$(nvidia-smi --list-gpus | wc -l)}
srun torchrun --nnodes "$SLURM_NNODES" --nproc-per-node "$gpus_per_node" \
    --rdzv-backend c10d --rdzv-endpoint "$head_node:29500" --rdzv-id "$SLURM_JOB_ID" \
    train.py --cfg-path "$config" "$@"
