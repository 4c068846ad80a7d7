#!/usr/bin/env bash
# Allow-list import: 1,000,000 rows into the embedded SQLite registry, the way an operator runs
# it (`fleetward devices import FILE.csv`, release build): validate pass, HMAC of each factory
# secret, batched transactions of 10,000 rows with an audit entry each, full fsync on commit.
# Beside it, in the same run: the sqlite3 shell's own `.import` of the same file into a table of
# the same shape with the same indexes (no validation, no hashing, no audit): the raw floor.
# Then the same file again (all duplicates). Usage: bench/import.sh [rows]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
work=$(mktemp -d /tmp/fleetward-import-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export FLEETWARD_PASSPHRASE=${FLEETWARD_PASSPHRASE:-bench-passphrase-not-secret}

echo "Building fleetward (release)…" >&2
swift build -c release --product fleetward >&2
fleetward=$PWD/.build/release/fleetward

echo "Writing ${rows} rows…" >&2
python3 bench/make_allowlist.py "$rows" "$work/allow.csv"
"$fleetward" init --data "$work/data" --kdf-iterations 100000 >/dev/null 2>&1

echo "Importing…" >&2
start=$(date +%s.%N)
"$fleetward" devices import --data "$work/data" "$work/allow.csv" --json > "$work/first.json"
end=$(date +%s.%N)
again_start=$(date +%s.%N)
"$fleetward" devices import --data "$work/data" "$work/allow.csv" --json > "$work/second.json"
again_end=$(date +%s.%N)

peer="n/a"
if command -v sqlite3 >/dev/null; then
  sqlite3 "$work/peer.sqlite" "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
    CREATE TABLE devices (id TEXT PRIMARY KEY, secret TEXT, key_sha256 TEXT, model TEXT NOT NULL, metadata TEXT) WITHOUT ROWID;
    CREATE INDEX devices_by_model ON devices (model, id);" >/dev/null
  peer_start=$(date +%s.%N)
  sqlite3 "$work/peer.sqlite" ".mode csv" ".import --skip 1 $work/allow.csv devices"
  peer_end=$(date +%s.%N)
  peer=$(awk -v a="$peer_start" -v b="$peer_end" 'BEGIN {printf "%.2f", b-a}')
fi

seconds=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b-a}')
again=$(awk -v a="$again_start" -v b="$again_end" 'BEGIN {printf "%.2f", b-a}')
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo
echo "date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine:   ${cpu}, $(nproc) cores"
echo "fleetward devices import, ${rows} new rows:   ${seconds} s wall  $(grep -oE '"rowsPerSecond" : [0-9]+' "$work/first.json")"
echo "  summary: $(tr -d '\n ' < "$work/first.json" | cut -c1-200)"
echo "same file again (all duplicates):        ${again} s wall"
echo "sqlite3 .import of the same CSV (floor): ${peer} s wall"
echo "database size: $(du -h "$work/data/registry.sqlite" | cut -f1)"
