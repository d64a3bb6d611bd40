#!/bin/bash
# Runs BenchmarkZipf with each contender in its own process and the contender
# order rotated every round, so that on a shared, loaded machine no contender
# always runs first (after the workload is generated) or last.
#   usage: bench/session/run.sh [rounds] > out.txt; benchstat -col /impl out.txt
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/sessionbench.test
go test -c -o "$bin" ./session/
impls=(switchboard golang-lru otter sync.Map)
for r in $(seq 0 $(( ${1:-6} - 1 ))); do
  for j in 0 1 2 3; do
    impl=${impls[$(( (r + j) % 4 ))]}
    "$bin" -test.run '^$' -test.bench "Zipf/.*/impl=${impl}/" -test.cpu 2 \
      -test.benchtime "${BENCHTIME:-500000x}" -test.count 1 -test.benchmem
  done
done
rm -f "$bin"
