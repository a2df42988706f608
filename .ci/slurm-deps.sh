#!/usr/bin/env bash
# Install the packages needed by tests/slurm/cluster.sh (a one-node SLURM
# cluster on localhost): slurm-wlm (slurmctld, slurmd, sbatch, squeue, ...)
# and munge (authentication). Debian 12 ships slurm-wlm 22.05.x.
# Called by .ci/run; needs root (or sudo). Safe to re-run.
set -euo pipefail

if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 \
   && command -v munged >/dev/null 2>&1 && command -v sbatch >/dev/null 2>&1; then
    echo "slurm-deps: slurm-wlm and munge already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
echo "slurm-deps: installed $(slurmctld -V 2>/dev/null || echo slurm-wlm), munge $(munged -V 2>/dev/null | head -1 || true)"
