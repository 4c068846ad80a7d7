# Shared by the bench/*.sh scripts (sourced, from the repository root).

export FLEETWARD_PASSPHRASE=${FLEETWARD_PASSPHRASE:-bench-passphrase-not-secret}

# The fleetward binary measured: FLEETWARD_BIN (e.g. the build before a change), else a release build.
fleetward_binary() {
  if [ -n "${FLEETWARD_BIN:-}" ]; then
    echo "$FLEETWARD_BIN"
  else
    echo "Building fleetward (release)…" >&2
    swift build -c release --product fleetward >&2
    echo "$PWD/.build/release/fleetward"
  fi
}

# User + system CPU ticks a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The processes a script started, killed (only those, by PID) when it exits.
bench_pids=()
bench_cleanup() {
  for pid in "${bench_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${work:-}" ] && rm -rf "$work"
}
