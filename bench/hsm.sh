#!/usr/bin/env bash
# Issuance with the issuing key in a PKCS#11 token (SoftHSM2) beside the token's own signing rate,
# in the same run, on the same pinned core:
#   token     bench/pkcs11_sign.c: C_SignInit + C_Sign (CKM_ECDSA, P-256) in a loop straight
#             through the module, the most any client of the token (openssl's pkcs11 engine
#             included) can sign
#   fleetward fleetward-bench issuance --pkcs11: the whole `device` issuance path (parse the CSR,
#             verify it, build, sign in the token, encode)
#   files     fleetward-bench issuance with the key in memory (an encrypted file's key), as today
#   signing   fleetward-bench --breakdown's ca_key_sign: one signature through FleetwardPKCS11 alone
#   engine    bench/engine_sign.c: openssl's pkcs11 engine (libp11) signing ECDSA-SHA256 with the same
#             key in a loop, in one process: how fast an openssl-based CA signs through the token
# Medians of 3 runs. Usage: bench/hsm.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3}
core=${FLEETWARD_BENCH_CORE:-0}
for tool in softhsm2-util cc taskset; do
  command -v "$tool" >/dev/null || { echo "bench/hsm.sh: needs $tool (apt-get install softhsm2 gcc util-linux)" >&2; exit 1; }
done
engine=$(ls /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so /usr/lib/*/engines-3/pkcs11.so 2>/dev/null | head -1 || true)
[ -n "$engine" ] && [ -f /usr/include/openssl/engine.h ] || {
  echo "bench/hsm.sh: needs openssl's pkcs11 engine and headers (apt-get install libengine-pkcs11-openssl libssl-dev)" >&2; exit 1; }
module=$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so 2>/dev/null | head -1)
[ -n "$module" ] || { echo "bench/hsm.sh: SoftHSM2's module is missing (apt-get install softhsm2)" >&2; exit 1; }
work=$(mktemp -d /tmp/fleetward-hsm-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$work" >"$work/softhsm2.conf"
export SOFTHSM2_CONF=$work/softhsm2.conf FLEETWARD_PKCS11_PIN=bench-pin-1234
softhsm2-util --init-token --free --label fleet-bench --pin "$FLEETWARD_PKCS11_PIN" --so-pin bench-so-5678 >/dev/null
echo "Building fleetward-bench (release)…" >&2
swift build -c release --product fleetward-bench >&2
bench=.build/release/fleetward-bench
cc -O2 -I Sources/CPKCS11/include -o "$work/pkcs11_sign" bench/pkcs11_sign.c -ldl
cc -O2 -o "$work/engine_sign" bench/engine_sign.c -lcrypto
printf 'openssl_conf = init\n[init]\nengines = engines\n[engines]\npkcs11 = pkcs11\n[pkcs11]\nengine_id = pkcs11\ndynamic_path = %s\nMODULE_PATH = %s\ninit = 0\n' \
  "$engine" "$module" >"$work/openssl.cnf"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { grep -oE "\"$1\": ?[0-9.]+" | head -1 | cut -d: -f2 | tr -d " "; }
uri="pkcs11:token=fleet-bench?module-path=$module"

echo "date:    $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo), core $core"
echo "token:   SoftHSM $(softhsm2-util --version)"
files=(); token=(); raw=(); viaengine=()
for run in 1 2 3; do
  echo "run $run/3…" >&2
  out=$(taskset -c "$core" "$bench" issuance --seconds "$seconds" --pkcs11 "$uri")
  token+=("$(echo "$out" | field per_second)")
  files+=("$(taskset -c "$core" "$bench" issuance --seconds "$seconds" | field per_second)")
  # The same key (bench/issuing, made by the first run), straight through the module.
  read -r count elapsed < <(taskset -c "$core" "$work/pkcs11_sign" "$module" fleet-bench bench/issuing "$seconds")
  raw+=("$(awk -v c="$count" -v e="$elapsed" 'BEGIN {printf "%d", c / e}')")
  read -r count elapsed < <(OPENSSL_CONF=$work/openssl.cnf taskset -c "$core" "$work/engine_sign" \
    "pkcs11:token=fleet-bench;object=bench/issuing;type=private;pin-value=$FLEETWARD_PKCS11_PIN" "$seconds")
  viaengine+=("$(awk -v c="$count" -v e="$elapsed" 'BEGIN {printf "%d", c / e}')")
done
t=$(printf '%s\n' "${token[@]}" | median); f=$(printf '%s\n' "${files[@]}" | median); r=$(printf '%s\n' "${raw[@]}" | median)
e=$(printf '%s\n' "${viaengine[@]}" | median)
# Fleetward's own signing through the token (SHA-256 + C_SignInit + C_Sign through FleetwardPKCS11).
sign_us=$(taskset -c "$core" "$bench" issuance --seconds "$seconds" --pkcs11 "$uri" --breakdown | grep -oE '"ca_key_sign":[0-9.]+' | cut -d: -f2)
sign_rate=$(awk -v u="$sign_us" 'BEGIN {printf "%d", (u > 0 ? 1e6 / u : 0)}')
echo "fleetward issuance, key in the token: ${t}/s (runs: ${token[*]})"
echo "fleetward issuance, key from a file:  ${f}/s (runs: ${files[*]})"
echo "token's own C_Sign rate:              ${r}/s (runs: ${raw[*]})"
echo "openssl pkcs11 engine signing:        ${e}/s (runs: ${viaengine[*]})"
echo "fleetward signing through the token:  ${sign_rate}/s (${sign_us} µs each, SHA-256 included)"
awk -v t="$t" -v r="$r" -v f="$f" -v s="$sign_rate" 'BEGIN {printf "fleetward signing / token C_Sign: %.2f; issuance with the token / token C_Sign: %.2f; token / file issuance: %.2f\n", (r > 0 ? s / r : 0), (r > 0 ? t / r : 0), (f > 0 ? t / f : 0)}'
awk -v e="$e" -v t="$t" -v s="$sign_rate" 'BEGIN {printf "fleetward signing / openssl engine signing: %.2f; fleetward issuance (CSR verify + sign + encode) / openssl engine signing: %.2f\n", (e > 0 ? s / e : 0), (e > 0 ? t / e : 0)}'
