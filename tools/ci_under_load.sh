#!/usr/bin/env bash
# Run .ci/run RUNS times (default 5) on fresh clones of HEAD, all started together,
# while two busy loops keep both cores busy for the whole time: each run competes with
# the loops and the other runs. Prints each run's exit code, pytest summary, wall time
# and peak resident memory; exits non-zero if any run failed.
#
#     tools/ci_under_load.sh [RUNS] [WORK_DIR]
set -u
runs=${1:-5}
work=${2:-$(mktemp -d)}
repo=$(git rev-parse --show-toplevel)
rev=$(git -C "$repo" rev-parse HEAD)
mkdir -p "$work"
python3 -c 'while True: pass' & busy1=$!
python3 -c 'while True: pass' & busy2=$!
trap 'kill $busy1 $busy2 2>/dev/null' EXIT
pids=()
for i in $(seq 1 "$runs"); do
  git clone -q "$repo" "$work/run$i" && git -C "$work/run$i" checkout -q "$rev"
  ( cd "$work/run$i" && /usr/bin/time -v .ci/run > "$work/run$i.log" 2>&1
    echo $? > "$work/run$i.rc" ) &
  pids+=($!)
done
wait "${pids[@]}"
failed=0
echo "revision $rev, $runs runs beside two busy loops, logs in $work"
for i in $(seq 1 "$runs"); do
  rc=$(cat "$work/run$i.rc")
  [ "$rc" = 0 ] || failed=1
  echo "run $i: exit $rc; $(grep -E '[0-9]+ (passed|failed)' "$work/run$i.log" | tail -n 1);" \
    "$(grep -E 'Elapsed|Maximum resident' "$work/run$i.log" | sed 's/^\s*//' | tr '\n' ' ')"
done
exit $failed
