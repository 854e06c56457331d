#!/usr/bin/env bash
# Run one experiment for at most SECONDS, continuing its run directory when it holds a
# checkpoint, then copy what it wrote (all but the checkpoint) to DEST/RUN_NAME.
#
#   experiments/timeboxed_run.sh SECONDS RUN_NAME DEST EXPERIMENT [ARGS ...]
#   experiments/timeboxed_run.sh 540 iic-paper-gpu "$OUT" iic --variant paper --seeds 0 1 2
#
# For machines that are lent by the minute (a batch queue's time limit, a borrowed GPU):
# call it again with the same arguments on the same machine and the run goes on from its
# last checkpoint (on the time limit `timeout` sends SIGTERM, and the run stops after the
# steps in flight with a checkpoint there; only a harder kill loses the steps since
# `--checkpoint-every`'s last one). Runs
# `python3 -m gapmmd_jax.cli` from this checkout, so it needs no install where jax, flax,
# optax, chex, scipy, tqdm and matplotlib are present. MNIST comes from $GAPMMD_DATA_DIR,
# else from `.device-data/mnist` in the checkout (git-ignored; copy ../shared/data/mnist
# there to carry it along). Run directories go under $GAPMMD_RUNS_DIR (default: runs/ in
# the checkout); $PYTHON is the interpreter (default: python3). Exits with the run's
# status; 124 means the time was up.
set -uo pipefail

if [[ $# -lt 4 ]]; then
  sed -n '2,18p' "$0" >&2
  exit 2
fi
seconds=$1 run_name=$2 dest=$3 experiment=$4
shift 4
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${GAPMMD_RUNS_DIR:-$root/runs}
run_dir="$runs/$run_name"
export GAPMMD_DATA_DIR=${GAPMMD_DATA_DIR:-$root/.device-data/mnist}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg

resume=()
[[ -f $run_dir/checkpoint.msgpack ]] && resume=(--resume)
mkdir -p "$dest/$run_name"
echo "$(date -u +%FT%TZ) $experiment $* --run-name $run_name ${resume[*]} (at most $seconds s)" \
  | tee -a "$dest/$run_name/log.txt"
timeout --signal=TERM "$seconds" "${PYTHON:-python3}" -m gapmmd_jax.cli "$experiment" "$@" \
  --out-dir "$runs" --run-name "$run_name" "${resume[@]}" --no-progress \
  2>&1 | tee -a "$dest/$run_name/log.txt"
status=${PIPESTATUS[0]}
echo "$(date -u +%FT%TZ) exit status $status" | tee -a "$dest/$run_name/log.txt"
find "$run_dir" -maxdepth 1 -type f ! -name checkpoint.msgpack -exec cp {} "$dest/$run_name/" \;
exit "$status"
