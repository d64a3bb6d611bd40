#!/bin/bash
# Runs the append benchmarks of two builds of this package side by side:
# each (build, backend) in its own process, the order rotating every round,
# the load average before each process as a comment line; every result line
# starts with "before" or "after".
#   usage (from bench/, each build made at its revision with
#   `go test -c -o X.test ./store/`):
#     bash store/compare.sh BEFORE.test AFTER.test [rounds] > compare.txt
set -euo pipefail
before=$1 after=$2 rounds=${3:-4}
combos=("before embedded $before" "after embedded $after" "before postgres $before" "after postgres $after")
n=${#combos[@]}
for r in $(seq 0 $(( rounds - 1 ))); do
  for j in $(seq 0 $(( n - 1 ))); do
    read -r label be bin <<< "${combos[$(( (r + j) % n ))]}"
    echo "# round $r $label $be: $(uptime)"
    "$bin" -test.run '^$' -test.bench "Append.*/backend=${be}/" \
      -test.benchtime "${BENCHTIME:-3s}" -test.count 1 | grep '^Benchmark' | sed "s/^/$label /"
  done
done
