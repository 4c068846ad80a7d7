#!/usr/bin/env bash
# Allow-list import: 1,000,000 rows into the embedded SQLite registry, the way an operator runs
# it (`fleetward devices import FILE.csv`, release build): validate pass, HMAC of each factory
# secret, batched transactions of 10,000 rows with an audit entry each, full fsync on commit.
# Beside it, in the same run: the sqlite3 shell's own `.import` of the same file into a table of
# the same shape with the same indexes (no validation, no hashing, no audit): the raw floor.
# Medians of 3 runs each; then the same file again (all duplicates).
# With PostgreSQL installed, the same again into a private cluster (`--database postgres://…`,
# COPY per batch) beside psql's `\copy` of the same CSV. Usage: [FLEETWARD_BIN=…] bench/import.sh [rows]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
work=$(mktemp -d /tmp/fleetward-import-bench.XXXXXX)
. bench/lib.sh
trap bench_cleanup EXIT
# FLEETWARD_BIN=/path/to/fleetward measures another build (e.g. the one before a change) instead.
fleetward=$(fleetward_binary)

echo "Writing ${rows} rows…" >&2
python3 bench/make_allowlist.py "$rows" "$work/allow.csv"

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b-a}'; }

runs=()
for run in 1 2 3; do
  echo "Import run ${run}/3…" >&2
  "$fleetward" init --data "$work/data$run" --kdf-iterations 100000 >/dev/null 2>&1
  start=$(date +%s.%N)
  "$fleetward" devices import --data "$work/data$run" "$work/allow.csv" --json > "$work/run$run.json"
  end=$(date +%s.%N)
  runs+=("$(elapsed "$start" "$end")")
done
again_start=$(date +%s.%N)
"$fleetward" devices import --data "$work/data1" "$work/allow.csv" --json > "$work/again.json"
again=$(elapsed "$again_start" "$(date +%s.%N)")
grep -q '"duplicates" : '"$rows" "$work/again.json" || { echo "bench/import.sh: the second import did not count every row as a duplicate" >&2; exit 1; }

peer_runs=()
if command -v sqlite3 >/dev/null; then
  for run in 1 2 3; do
    sqlite3 "$work/peer$run.sqlite" "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
      CREATE TABLE devices (id TEXT PRIMARY KEY, secret TEXT, key_sha256 TEXT, model TEXT NOT NULL, metadata TEXT) WITHOUT ROWID;
      CREATE INDEX devices_by_model ON devices (model, id);" >/dev/null
    start=$(date +%s.%N)
    sqlite3 "$work/peer$run.sqlite" ".mode csv" ".import --skip 1 $work/allow.csv devices"
    peer_runs+=("$(elapsed "$start" "$(date +%s.%N)")")
  done
fi

median_import=$(printf '%s\n' "${runs[@]}" | median)
median_peer=$(printf '%s\n' "${peer_runs[@]:-n/a}" | median)
pg_line="PostgreSQL: not installed (apt-get install postgresql), not measured"
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "Starting a private PostgreSQL cluster…" >&2
  eval "$(scripts/postgres-cluster.sh start)"
  trap 'scripts/postgres-cluster.sh stop "$FLEETWARD_TEST_POSTGRES_DIR"; rm -rf "$work"' EXIT
  base=${FLEETWARD_TEST_POSTGRES_URL%/*}
  pg_runs=()
  for run in 1 2 3; do
    echo "PostgreSQL import run ${run}/3…" >&2
    psql -X -q "$FLEETWARD_TEST_POSTGRES_URL" -c "CREATE DATABASE bench$run" >/dev/null
    start=$(date +%s.%N)
    "$fleetward" devices import --data "$work/data1" --database "$base/bench$run" "$work/allow.csv" --json > "$work/pg$run.json"
    pg_runs+=("$(elapsed "$start" "$(date +%s.%N)")")
  done
  grep -q '"inserted" : '"$rows" "$work/pg1.json" || { echo "bench/import.sh: the PostgreSQL import did not insert every row" >&2; exit 1; }
  pg_peer_runs=()
  for run in 1 2 3; do
    psql -X -q "$FLEETWARD_TEST_POSTGRES_URL" -c "CREATE DATABASE peer$run" >/dev/null
    psql -X -q "$base/peer$run" -c "CREATE TABLE devices (id TEXT PRIMARY KEY, secret TEXT, key_sha256 TEXT, model TEXT NOT NULL, metadata TEXT);
      CREATE INDEX devices_by_model ON devices (model, id);" >/dev/null
    start=$(date +%s.%N)
    psql -X -q "$base/peer$run" -c "\\copy devices FROM '$work/allow.csv' WITH (FORMAT csv, HEADER true)" >/dev/null
    pg_peer_runs+=("$(elapsed "$start" "$(date +%s.%N)")")
  done
  pg_median=$(printf '%s\n' "${pg_runs[@]}" | median)
  pg_peer=$(printf '%s\n' "${pg_peer_runs[@]}" | median)
  pg_line="fleetward devices import --database postgres://…: median ${pg_median} s (runs: ${pg_runs[*]});  psql \\copy floor: median ${pg_peer} s (runs: ${pg_peer_runs[*]});  ratio $(awk -v a="$pg_median" -v b="$pg_peer" 'BEGIN {printf "%.2f", a/b}')"
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo
echo "date:      $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine:   ${cpu}, $(nproc) cores"
echo "fleetward devices import, ${rows} new rows:  median ${median_import} s  (runs: ${runs[*]})  $(awk -v r="$rows" -v s="$median_import" 'BEGIN {printf "%d rows/s", r/s}')"
echo "  summary: $(tr -d '\n ' < "$work/run1.json" | cut -c1-220)"
echo "same file again (all duplicates):        ${again} s"
echo "sqlite3 .import of the same CSV (floor): median ${median_peer} s  (runs: ${peer_runs[*]:-n/a})"
echo "fleetward / floor: $(awk -v a="$median_import" -v b="$median_peer" 'BEGIN {printf "%.2f", a/b}')"
echo "database size: $(du -h "$work/data1/registry.sqlite" | cut -f1)"
echo "$pg_line"
