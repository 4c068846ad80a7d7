#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests: a temp directory, a free loopback port, a random
# password (scram-sha-256), no other listeners. Needs Debian's postgresql (scripts/test.sh installs it).
#
#   eval "$(scripts/postgres-cluster.sh start)"   # exports FLEETWARD_TEST_POSTGRES_URL and FLEETWARD_TEST_POSTGRES_DIR
#   scripts/postgres-cluster.sh stop "$FLEETWARD_TEST_POSTGRES_DIR"
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] && [ -x "$bin/initdb" ] || { echo "postgres-cluster.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
  dir=$(mktemp -d /tmp/fleetward-pg.XXXXXX)
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  password=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
  printf '%s\n' "$password" > "$dir/pw"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir/pw"
  chmod 600 "$dir/pw"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$bin/initdb" -D "$dir/data" -U fleetward --pwfile="$dir/pw" -A scram-sha-256 -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=on" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  echo "export FLEETWARD_TEST_POSTGRES_DIR=$dir"
  echo "export FLEETWARD_TEST_POSTGRES_URL=postgres://fleetward:$password@127.0.0.1:$port/postgres"
  ;;
stop)
  dir=${2:?usage: postgres-cluster.sh stop DIR}
  if [ -d "$dir/data" ]; then as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: postgres-cluster.sh start | stop DIR" >&2
  exit 2
  ;;
esac
