#!/usr/bin/env bash
# Runs fuzz targets for SECONDS_EACH seconds each (default 1800), two at a time, at the lowest CPU
# priority, logging to fuzz/logs/<target>.log. libFuzzer's fork mode keeps a run going past a
# crash, timeout or out-of-memory input (each is saved under fuzz/artifacts/<target>/).
# While /work/notes/PAUSE-FUZZ exists (the lead asks for the CPU), the fuzzers are stopped with
# SIGSTOP, and resumed with SIGCONT when it is gone.
#   usage: fuzz/run-all.sh [target...]      (default: every target; see docs/fuzzing.md)
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${SECONDS_EACH:-1800}
PAUSE_FILE=${PAUSE_FILE:-/work/notes/PAUSE-FUZZ}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(review rules_virtualservice rules_ingress rules_namespace patch_diff nginx_snippet selector)
fi
mkdir -p logs
RUSTC_BOOTSTRAP=1 cargo fuzz build -s none -a

run_one() {
  local target=$1
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "start $(date -u +%FT%TZ)" >"logs/$target.log"
  # `exec` so that the pid the watcher signals is the fuzzer's own process group leader.
  RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz run -s none -a "$target" -- \
    -max_total_time="$SECONDS_EACH" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 >>"logs/$target.log" 2>&1 || true
  echo "end $(date -u +%FT%TZ)" >>"logs/$target.log"
}

# Pauses and resumes every process of the fuzzers' process groups (cargo, the fork-mode
# parent and its child job) while the pause file exists. Arguments: the groups' leaders.
watch_pause() {
  local paused=0
  while true; do
    if [ -e "$PAUSE_FILE" ] && [ $paused -eq 0 ]; then
      for pid in "$@"; do kill -STOP -- "-$pid" 2>/dev/null || true; done
      echo "paused $* $(date -u +%FT%TZ)" >>logs/pauses.log
      paused=1
    elif [ ! -e "$PAUSE_FILE" ] && [ $paused -eq 1 ]; then
      for pid in "$@"; do kill -CONT -- "-$pid" 2>/dev/null || true; done
      echo "resumed $* $(date -u +%FT%TZ)" >>logs/pauses.log
      paused=0
    fi
    sleep 30
  done
}

i=0
while [ $i -lt ${#targets[@]} ]; do
  pids=()
  for target in "${targets[@]:$i:2}"; do
    # setsid: each fuzzer in a process group of its own, so that one signal reaches all of it
    setsid bash -c "$(declare -f run_one); SECONDS_EACH=$SECONDS_EACH run_one $target" &
    pids+=($!)
  done
  watch_pause "${pids[@]}" &
  watcher=$!
  wait "${pids[@]}" || true
  kill "$watcher" 2>/dev/null || true
  i=$((i + 2))
done
