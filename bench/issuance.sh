#!/usr/bin/env bash
# Certificates issued per second on one core, from pre-made P-256 CSRs, with the full `device`
# profile: parse the DER CSR, verify its signature, build, sign (P-256 issuing CA), encode.
# Beside it, in the same run and on the same pinned core: `openssl speed ecdsap256` (what one
# verify plus one sign allow) and the same loop in Python's `cryptography`.
# Medians of 3 runs. Usage: bench/issuance.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3}
core=${FLEETWARD_BENCH_CORE:-0}

command -v openssl >/dev/null || { echo "bench/issuance.sh: openssl is not installed (apt-get install openssl)" >&2; exit 1; }
echo "Building fleetward-bench (release)…" >&2
swift build -c release --product fleetward-bench >&2
bench=.build/release/fleetward-bench

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { grep -oE "\"$1\": ?[0-9.]+" | head -1 | cut -d: -f2 | tr -d " "; }

echo "Fleetward issuance, 3 runs of ${seconds}s on core ${core}…" >&2
fleetward_runs=()
for _ in 1 2 3; do
  fleetward_runs+=("$(taskset -c "$core" "$bench" issuance --seconds "$seconds" | field per_second)")
done
fleetward=$(printf '%s\n' "${fleetward_runs[@]}" | median)
breakdown=$(taskset -c "$core" "$bench" issuance --seconds "$seconds" --breakdown | head -1)

echo "openssl speed ecdsap256, 3 runs…" >&2
signs=(); verifies=()
for _ in 1 2 3; do
  line=$(taskset -c "$core" openssl speed -seconds "$seconds" ecdsap256 2>/dev/null | grep -E 'ecdsa \(nistp256\)')
  signs+=("$(echo "$line" | awk '{print $(NF-1)}')")
  verifies+=("$(echo "$line" | awk '{print $NF}')")
done
sign=$(printf '%s\n' "${signs[@]}" | median)
verify=$(printf '%s\n' "${verifies[@]}" | median)
bound=$(awk -v s="$sign" -v v="$verify" 'BEGIN {printf "%d", 1 / (1/s + 1/v)}')

python_rate="n/a"
if python3 -c 'import cryptography' 2>/dev/null; then
  echo "Python cryptography, 3 runs…" >&2
  runs=()
  for _ in 1 2 3; do runs+=("$(taskset -c "$core" python3 bench/issuance_peer.py "$seconds" | field per_second)"); done
  python_rate=$(printf '%s\n' "${runs[@]}" | median)
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo
echo "date:     $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine:  ${cpu}, $(nproc) cores, pinned to core ${core}"
echo "fleetward issuance (device profile, P-256 CSR, P-256 CA):  ${fleetward}/s  runs: ${fleetward_runs[*]}"
echo "openssl speed ecdsap256:  sign ${sign}/s  verify ${verify}/s  one verify + one sign: ${bound}/s"
echo "python cryptography, same loop:  ${python_rate}/s"
echo "fleetward / (verify+sign bound): $(awk -v a="$fleetward" -v b="$bound" 'BEGIN {printf "%.2f", a/b}')"
[ "$python_rate" != "n/a" ] && echo "fleetward / python cryptography: $(awk -v a="$fleetward" -v b="$python_rate" 'BEGIN {printf "%.2f", a/b}')"
echo "breakdown (µs): ${breakdown}"
