#!/usr/bin/env bash
# Smoke run of the wsbench connection harness, for CI (.ci/smoke):
# 2,000 connections per target, every target (switchboard, switchboard-pool,
# baseline and the peers centrifuge, gws, gobwas and coder), every scenario
# briefly (idle, echo, broadcast, churn), with -strict so that
# a target that fails to hold its connections, loses a message, or leaks in
# churn fails the run. Also checks the JSON output (one object per target
# per scenario with the documented keys) and that the HTML report is written.
# Takes 2–3 minutes on 2 loaded cores. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."   # the bench module

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

go build -o "$out/wsbench" ./cmd/wsbench
rc=0
targets=switchboard,switchboard-pool,baseline,centrifuge,gws,gobwas,coder
ntargets=$(tr ',' '\n' <<<"$targets" | wc -l)
want=$((ntargets * 4)) # targets × scenarios
timeout 900 "$out/wsbench" -smoke -targets "$targets" -json -html "$out/report.html" "$@" >"$out/results.jsonl" || rc=$?
cat "$out/results.jsonl"

lines=$(grep -c '^{' "$out/results.jsonl" || true)
if [[ "$lines" -ne "$want" ]]; then
  echo "smoke: want $want JSON lines ($ntargets targets × 4 scenarios), got $lines" >&2
  exit 1
fi
for key in target scenario conns established server_rss_bytes rss_per_conn_bytes connect_seconds \
  p50_ms p99_ms p999_ms msgs_per_sec broadcast_p99_ms server_cpu_seconds; do
  n=$(grep -c "\"$key\":" "$out/results.jsonl" || true)
  if [[ "$n" -ne "$want" ]]; then
    echo "smoke: key $key present in $n of $want lines" >&2
    exit 1
  fi
done
if ! grep -q '<svg' "$out/report.html"; then
  echo "smoke: HTML report has no chart" >&2
  exit 1
fi
if [[ "$rc" -ne 0 ]]; then
  echo "smoke: wsbench failed (exit $rc); see the FAIL lines above" >&2
  exit "$rc"
fi
echo "smoke: ok" >&2
