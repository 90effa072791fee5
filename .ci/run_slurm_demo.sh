#!/usr/bin/env bash
# The demo workflow on a REAL single-node Slurm cluster, through `--profile profiles/slurm`.
#
#  1. installs Slurm from Debian packages and starts slurmctld/slurmd/munged (.ci/slurm/),
#  2. runs the demo locally (profiles/local) and through Slurm (profiles/slurm), each in a fresh
#     workspace and under `timeout -k` (Snakemake ignores SIGTERM while it waits for jobs),
#  3. asserts that the jobs went through sbatch (Snakemake's submission lines, Slurm's job
#     records via `squeue --states=all` and the jobcomp log, the per-job Slurm log files),
#  4. compares every spectrum CSV of the Slurm run with the local run's,
#  5. checks that a deliberately failing job makes Snakemake exit non-zero, without hanging,
#  6. stops (by PID, in a trap) exactly the daemons this script started.
# Run as root on Debian 12. Knobs: SLURM_LOCAL_DIR, SLURM_ACCOUNTING (default 0: no slurmdbd,
# the profile polls with squeue), SLURM_DEMO_TIMEOUT (s per Slurm run, default 900),
# SLURM_DEMO_WORK (workspace parent; default a new /tmp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export SLURM_ACCOUNTING=${SLURM_ACCOUNTING:-0}
export SLURM_LOCAL_DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
LIMIT=${SLURM_DEMO_TIMEOUT:-900}
WORK=${SLURM_DEMO_WORK:-$(mktemp -d /tmp/spxflow-slurm-demo.XXXXXX)}
RUN=$SLURM_LOCAL_DIR/run
PY=${PYTHON:-python}
say() { printf '[slurm-demo %s] %s\n' "$(date +%T)" "$*"; }
fail() { say "FAIL: $*"; exit 1; }

# --- which daemons are ours to stop: those not already running before we start ------------
daemons=(munged slurmctld slurmd)
[ "$SLURM_ACCOUNTING" = 1 ] && daemons+=(mariadb slurmdbd)
comm_of() { case $1 in mariadb) echo mariadbd ;; *) echo "$1" ;; esac; }
alive() { # alive NAME: the PID recorded by start-slurm.sh runs and is that program
    local f=$RUN/$1.pid p
    [ -s "$f" ] || return 1
    p=$(cat "$f")
    kill -0 "$p" 2>/dev/null && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$(comm_of "$1")" ]
}
preexisting=()
for d in "${daemons[@]}"; do alive "$d" && preexisting+=("$d"); done
ours=()
cleanup() {
    local rc=$?
    if ((${#ours[@]})); then
        say "stopping the daemons this run started: ${ours[*]}"
        "$REPO/.ci/slurm/stop-slurm.sh" "${ours[@]}" || true
    fi
    say "workspaces kept in $WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. cluster --------------------------------------------------------------------------------
t0=$SECONDS
"$REPO/.ci/slurm/start-slurm.sh"
for d in "${daemons[@]}"; do
    [[ " ${preexisting[*]} " == *" $d "* ]] || ! alive "$d" || ours+=("$d")
done
say "cluster up in $((SECONDS - t0)) s (started by this run: ${ours[*]:-none})"
sinfo
# Jobs already queued (another run's) share the node and delay ours: name them in the log.
queued=$(squeue --noheader --format='%i %j %T %M %Z' 2>/dev/null || true)
[ -z "$queued" ] || { say "jobs already in the queue (they share the node):"; echo "$queued" | sed 's/^/    /'; }
PARTITION=$(sinfo -h -o %P | head -n 1 | tr -d '*')
grep -q "slurm_partition: \"$PARTITION\"" profiles/slurm/config.v8+.yaml ||
    fail "profiles/slurm sets a partition other than this cluster's ($PARTITION)"

# --- 2. workspaces ----------------------------------------------------------------------------
mkws() {
    "$PY" -c "import sys; sys.path.insert(0, '$REPO'); from pathlib import Path; \
from tests.workflow_helpers import make_workspace; make_workspace(Path('$1'))"
}
rm -rf "$WORK/local" "$WORK/slurm" "$WORK/fail"
mkws "$WORK/local"
mkws "$WORK/slurm"
mkws "$WORK/fail"

# The CI node has 2 CPUs and Slurm rejects larger jobs (EnforcePartLimits=ALL): cap one group
# job at 2 cores; poll early (the profile's 20 s suits a real cluster). Everything else is the
# committed profile, unchanged.
SLURM_ARGS=(--profile profiles/slurm --cores 2 --slurm-init-seconds-before-status-checks 5)

# The local run has a job per source; the Slurm run the committed config's chunks: the spectra
# comparison below also proves that chunks change no output.
say "local run (profiles/local, sources_per_job=1)"
t=$SECONDS
(cd "$WORK/local" && timeout -k 30 "$LIMIT" snakemake --profile profiles/local --cores 2 \
    --config sources_per_job=1 >local.log 2>&1) || {
    tail -n 60 "$WORK/local/local.log"
    fail "local run failed"
}
LOCAL_S=$((SECONDS - t))

say "Slurm run (profiles/slurm, ${SLURM_ARGS[*]:2})"
t=$SECONDS
rc=0
(cd "$WORK/slurm" && timeout -k 30 "$LIMIT" snakemake "${SLURM_ARGS[@]}" >slurm.log 2>&1) || rc=$?
SLURM_S=$((SECONDS - t))
if [ "$rc" != 0 ]; then
    tail -n 80 "$WORK/slurm/slurm.log"
    [ "$rc" -ge 124 ] && fail "Slurm run timed out after ${LIMIT}s (rc $rc)"
    fail "Slurm run failed (rc $rc)"
fi

# --- 3. the jobs went through sbatch ------------------------------------------------------------
ids=$(sed -n 's/.*submitted with SLURM jobid \([0-9]*\).*/\1/p' "$WORK/slurm/slurm.log" | sort -un)
n_sub=$(echo "$ids" | grep -c . || true)
[ "$n_sub" -gt 0 ] || fail "no 'submitted with SLURM jobid' line in the Slurm run's log"
say "Snakemake submitted $n_sub Slurm jobs: $(echo "$ids" | tr '\n' ' ')"
grep -E "submitted with SLURM jobid" "$WORK/slurm/slurm.log" | sed 's/^/    /' | head -n 20
n_group=$(grep -c "Group job per_chunk" "$WORK/slurm/slurm.log" || true)
[ "$n_group" -ge 1 ] || fail "no per_chunk group job in the Slurm run"
idlist=$(echo "$ids" | paste -sd,)
states=$(squeue --states=all --noheader --format='%i|%T' -j "$idlist" 2>/dev/null || true)
echo "$states" | sed 's/^/    squeue: /'
n_done=$(echo "$states" | grep -c '|COMPLETED$' || true)
[ "$n_done" = "$n_sub" ] || fail "squeue reports $n_done of $n_sub jobs COMPLETED"
comp=$SLURM_LOCAL_DIR/log/jobcomp.log
for id in $ids; do
    grep -q "JobId=$id .*JobState=COMPLETED" "$comp" || fail "job $id not COMPLETED in $comp"
    [ -n "$(find "$WORK/slurm/.snakemake/slurm_logs" -name "$id.log" 2>/dev/null)" ] ||
        fail "no Slurm log file for job $id under .snakemake/slurm_logs"
done
say "all $n_sub jobs COMPLETED in squeue and the jobcomp log, each with its Slurm log file"

# --- 4. same spectra as the local run -------------------------------------------------------------
"$PY" - "$WORK/local" "$WORK/slurm" <<'EOF'
import sys
from pathlib import Path

import numpy as np
import pandas as pd

a, b = Path(sys.argv[1]), Path(sys.argv[2])
fa = sorted(p.name for p in (a / "results/spectra").glob("*.csv"))
fb = sorted(p.name for p in (b / "results/spectra").glob("*.csv"))
assert fa and fa == fb, f"spectrum files differ: {fa} vs {fb}"
identical = 0
for name in fa:
    x, y = (a / "results/spectra" / name), (b / "results/spectra" / name)
    if x.read_bytes() == y.read_bytes():
        identical += 1
        continue
    dx, dy = pd.read_csv(x), pd.read_csv(y)
    assert list(dx.columns) == list(dy.columns) and len(dx) == len(dy), name
    for c in dx.columns:
        if pd.api.types.is_numeric_dtype(dx[c]):
            ok = np.allclose(dx[c], dy[c], rtol=1e-9, atol=0, equal_nan=True)
        else:
            ok = dx[c].fillna("").astype(str).equals(dy[c].fillna("").astype(str))
        assert ok, f"{name}: column {c} differs between the local and the Slurm run"
print(f"spectra: {len(fa)} sources, {identical} byte-identical, "
      f"{len(fa) - identical} equal within rtol 1e-9")
for extra in ("results/summary/sources.csv", "results/validation/accuracy.csv"):
    same = (a / extra).read_bytes() == (b / extra).read_bytes()
    print(f"{extra}: {'identical' if same else 'DIFFERENT'}")
EOF

# --- 5. a failing job fails the run, promptly ---------------------------------------------------
say "failing-job check: validate_catalog exits 3 inside its Slurm job"
printf 'import sys\nsys.exit(3)  # deliberate failure (CI)\n' >"$WORK/fail/scripts/validate_catalog.py"
t=$SECONDS
rc=0
(cd "$WORK/fail" && timeout -k 30 300 snakemake "${SLURM_ARGS[@]}" --retries 0 \
    results/catalog/catalog.csv >fail.log 2>&1) || rc=$?
FAIL_S=$((SECONDS - t))
[ "$rc" != 0 ] || fail "Snakemake exited 0 although a job failed"
[ "$rc" -lt 124 ] || fail "Snakemake did not end by itself (timeout, rc $rc): a hang"
grep -qE "Error in rule validate_catalog|SLURM-job '[0-9]+' failed" "$WORK/fail/fail.log" ||
    fail "the failure was not reported by Snakemake"
grep -q "submitted with SLURM jobid" "$WORK/fail/fail.log" || fail "failing job never submitted"
say "failing job: Snakemake exited $rc after ${FAIL_S}s"
grep -E "SLURM-job|Error in rule" "$WORK/fail/fail.log" | head -n 3 | sed 's/^/    /'

# --- 6. the in-suite Slurm tests (skipped by the ordinary `pytest` run, which has no cluster) ----
say "pytest -m slurm tests/test_slurm.py"
timeout -k 30 1800 "$PY" -m pytest -q -s -m slurm tests/test_slurm.py -p no:cacheprovider ||
    fail "pytest -m slurm failed"

say "PASS: demo wall time local ${LOCAL_S}s, Slurm ${SLURM_S}s ($n_sub Slurm jobs); failure ${FAIL_S}s"
