#!/usr/bin/env bash
# Runs fuzz targets two at a time at the lowest CPU priority, each for SECONDS_EACH seconds of
# fuzzing (default 1800), logging to fuzz/logs/<target>.log. libFuzzer's fork mode keeps a run
# going past a crash, timeout or out-of-memory input (each is saved under
# fuzz/artifacts/<target>/).
# While /work/notes/PAUSE-FUZZ exists (the lead asks for the CPU), the fuzzers are stopped with
# SIGSTOP, and resumed with SIGCONT when it is gone. libFuzzer's -max_total_time counts wall
# clock, so a run that was paused is followed by another one for the time it lost.
#   usage: fuzz/run-all.sh [target[:seconds]...]      (default: every target; see docs/fuzzing.md)
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
echo 0 >logs/paused-seconds

# Runs one target until it has fuzzed for $2 seconds outside pauses.
run_one() {
  local target=$1 budget=$2
  mkdir -p "corpus/$target" "artifacts/$target"
  while [ "$budget" -gt 30 ]; do
    local started paused_before
    started=$(date +%s)
    paused_before=$(cat logs/paused-seconds)
    echo "start $(date -u +%FT%TZ) for ${budget}s" >>"logs/$target.log"
    RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz run -s none -a "$target" -- \
      -max_total_time="$budget" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
      -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 >>"logs/$target.log" 2>&1 || true
    local paused=$(($(cat logs/paused-seconds) - paused_before))
    local fuzzed=$(($(date +%s) - started - paused))
    echo "end $(date -u +%FT%TZ): fuzzed ${fuzzed}s, paused ${paused}s" >>"logs/$target.log"
    budget=$((budget - fuzzed))
  done
}

# Pauses and resumes every process of the fuzzers' process groups (cargo, the fork-mode parent
# and its child job) while the pause file exists, counting the paused seconds. Arguments: the
# groups' leaders.
watch_pause() {
  local paused=0
  while true; do
    if [ -e "$PAUSE_FILE" ]; then
      if [ $paused -eq 0 ]; then
        for pid in "$@"; do kill -STOP -- "-$pid" 2>/dev/null || true; done
        echo "paused $* $(date -u +%FT%TZ)" >>logs/pauses.log
        paused=1
      fi
      echo $(($(cat logs/paused-seconds) + 10)) >logs/paused-seconds
    elif [ $paused -eq 1 ]; then
      for pid in "$@"; do kill -CONT -- "-$pid" 2>/dev/null || true; done
      echo "resumed $* $(date -u +%FT%TZ)" >>logs/pauses.log
      paused=0
    fi
    sleep 10
  done
}

i=0
while [ $i -lt ${#targets[@]} ]; do
  # Do not start a round while paused.
  while [ -e "$PAUSE_FILE" ]; do sleep 10; done
  pids=()
  for spec in "${targets[@]:$i:2}"; do
    target=${spec%%:*}
    seconds=$SECONDS_EACH
    [ "$spec" != "$target" ] && seconds=${spec#*:}
    # setsid: each fuzzer in a process group of its own, so that one signal reaches all of it
    setsid bash -c "$(declare -f run_one); run_one $target $seconds" &
    pids+=($!)
  done
  watch_pause "${pids[@]}" &
  watcher=$!
  wait "${pids[@]}" || true
  kill "$watcher" 2>/dev/null || true
  i=$((i + 2))
done
