#!/usr/bin/env bash
# Smoke run of the deskbench end-to-end harness, for CI: one supportdesk
# node on its embedded store, 200 customers (20 parked in the queue), 10
# agents, a short steady phase, the isolation check (one conversation
# flooded at PROTOCOL.md's per-sender limit), a SIGKILL + restart of the
# node, and the gateway echo reference (cmd/wsbench) at the same connection
# count and rate. -smoke implies -strict: any lost, duplicated or
# unanswered message, a message delivered only by the final audit resume,
# or a connection that did not establish fails the run. Also checks the
# JSON output (one object per phase plus the summary, with the documented
# keys) and the HTML report. About 1–2 minutes on 2 loaded cores.
set -euo pipefail
cd "$(dirname "$0")/../.."   # the bench module

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

go build -o "$out/deskbench" ./cmd/deskbench
go build -o "$out/supportdesk" github.com/switchboard-go/switchboard/examples/supportdesk
go build -o "$out/wsbench" ./cmd/wsbench
rc=0
timeout 600 "$out/deskbench" -smoke -chaos -supportdesk "$out/supportdesk" -wsbench "$out/wsbench" \
  -json -html "$out/report.html" "$@" >"$out/results.jsonl" || rc=$?
cat "$out/results.jsonl"

want=5 # steady, isolation-base, isolation-flood, chaos, summary
lines=$(grep -c '^{' "$out/results.jsonl" || true)
if [[ "$lines" -ne "$want" ]]; then
  echo "smoke: want $want JSON lines, got $lines" >&2
  exit 1
fi
for key in setup phase conns established msgs_per_sec c2a_p99_ms a2c_p99_ms ack_p99_ms time_to_offer_ms \
  time_to_assign_ms server_cpu_seconds rss_per_conn_bytes run_lost run_duplicated loss_ok echo_p99_ms targets; do
  n=$(grep -c "\"$key\":" "$out/results.jsonl" || true)
  if [[ "$n" -ne "$want" ]]; then
    echo "smoke: key $key present in $n of $want lines" >&2
    exit 1
  fi
done
if ! grep -q '"phase":"summary".*"loss_ok":true' "$out/results.jsonl"; then
  echo "smoke: the summary does not say loss_ok:true" >&2
  rc=1
fi
if ! grep -q '<svg' "$out/report.html"; then
  echo "smoke: HTML report has no chart" >&2
  exit 1
fi
if [[ "$rc" -ne 0 ]]; then
  echo "smoke: deskbench failed (exit $rc); see the FAIL lines above" >&2
  exit "$rc"
fi
echo "smoke: ok" >&2
