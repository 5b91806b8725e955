#!/usr/bin/env bash
# The host's performance figures (issue 4): the changed-area query on a
# 2 TiB disk with 1% scattered changes, the over-read of incrementals, and
# 200 concurrent NBD sessions over 50 disks.
#
#   bash bench/host/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "== QueryChangedDiskAreas, 2 TiB, 1% of 64 KiB blocks changed (setup takes ~40 s)"
go test -run '^$' -bench 'Changes2TiB' -benchtime 5x ./internal/datastore/ | grep -E 'Benchmark|setup'
echo "== incremental bytes read / bytes changed"
go test -run '^$' -bench 'IncrementalOverread' -benchtime 2x ./internal/datastore/ | grep Benchmark
echo "== change tracker alone"
go test -run '^$' -bench 'Changed2TiB|MarkWritten' ./internal/cbt/ | grep Benchmark
echo "== 200 NBD-over-TLS sessions over 50 disks"
go run ./bench/host/sessions -sessions 200 -disks 50 -duration 10s
