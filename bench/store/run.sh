#!/bin/bash
# Runs the store benchmarks: each backend in its own process, the order of
# the backends alternating between rounds, the load average before each
# process on stderr.
#   usage: bench/store/run.sh [rounds] > store.txt 2> load.txt
#          benchstat -col /backend store.txt
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/storebench.test" ./store/
backends=(embedded postgres)
for r in $(seq 0 $(( ${1:-6} - 1 ))); do
  for j in 0 1; do
    be=${backends[$(( (r + j) % 2 ))]}
    echo "round $r $be: $(uptime)" >&2
    "$tmp/storebench.test" -test.run '^$' -test.bench "/backend=${be}" \
      -test.benchtime "${BENCHTIME:-3s}" -test.count 1
  done
done
