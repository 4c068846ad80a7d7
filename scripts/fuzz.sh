#!/usr/bin/env bash
# Runs one libFuzzer target for SECONDS (default 60): scripts/fuzz.sh TARGET [SECONDS]
# Targets: certificate csr est-body ocsp-request crl allow-list manifest sealed mqtt image (all: every one in turn).
# Builds the fuzz binary with -sanitize=fuzzer,address into .build-fuzz (FLEETWARD_FUZZ=1 adds the
# target to the package), seeds a corpus with real files made by openssl (and a few written by
# hand for the formats openssl does not write), and fails when libFuzzer finds a crash: the
# crashing input is kept under .build-fuzz/findings/ to become a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET|all [SECONDS]}
seconds=${2:-60}
targets=(certificate csr est-body ocsp-request crl allow-list manifest sealed mqtt image)
if [ "$target" = all ]; then
  for one in "${targets[@]}"; do "$0" "$one" "$seconds"; done
  exit 0
fi
printf '%s\n' "${targets[@]}" | grep -qx "$target" || { echo "scripts/fuzz.sh: no target '$target' (${targets[*]})" >&2; exit 2; }
command -v openssl >/dev/null || { echo "scripts/fuzz.sh: needs openssl" >&2; exit 1; }

export FLEETWARD_FUZZ=1
swift build -c debug --scratch-path .build-fuzz --product fleetward-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library >&2
binary=$(swift build -c debug --scratch-path .build-fuzz --product fleetward-fuzz --show-bin-path)/fleetward-fuzz

work=$(mktemp -d /tmp/fleetward-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
corpus=$work/corpus
mkdir -p "$corpus" .build-fuzz/findings

# Seeds made by openssl: a CA, a leaf, a CSR, an OCSP request, a CRL.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca.key" -subj /CN=fuzz-ca \
  -days 30 -out "$work/ca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/leaf.key" -subj /serialNumber=FUZZ-1 \
  -out "$work/leaf.csr" 2>/dev/null
openssl req -in "$work/leaf.csr" -outform DER -out "$work/leaf.csr.der"
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 7 -out "$work/leaf.pem" 2>/dev/null
openssl ocsp -issuer "$work/ca.pem" -cert "$work/leaf.pem" -reqout "$work/ocsp.der" 2>/dev/null
mkdir -p "$work/ca/newcerts"; : >"$work/ca/index.txt"; echo 01 >"$work/ca/crlnumber"
cat >"$work/ca.cnf" <<CNF
[ca]
default_ca = fuzz
[fuzz]
database = $work/ca/index.txt
crlnumber = $work/ca/crlnumber
new_certs_dir = $work/ca/newcerts
certificate = $work/ca.pem
private_key = $work/ca.key
default_md = sha256
default_crl_days = 7
CNF
openssl ca -config "$work/ca.cnf" -revoke "$work/leaf.pem" -crl_reason keyCompromise 2>/dev/null || true
openssl ca -config "$work/ca.cnf" -gencrl -out "$work/crl.pem" 2>/dev/null
case $target in
  certificate)
    cp "$work/ca.pem" "$corpus/ca.pem"; cp "$work/leaf.pem" "$corpus/leaf.pem"
    openssl x509 -in "$work/leaf.pem" -outform DER -out "$corpus/leaf.der"
    cat "$work/leaf.pem" "$work/ca.pem" >"$corpus/chain.pem" ;;
  csr) cp "$work/leaf.csr.der" "$corpus/csr.der"; cp "$work/leaf.csr" "$corpus/csr.pem" ;;
  est-body) base64 -w 64 "$work/leaf.csr.der" >"$corpus/csr.b64" ;;
  ocsp-request) cp "$work/ocsp.der" "$corpus/ocsp.der" ;;
  crl) openssl crl -in "$work/crl.pem" -outform DER -out "$corpus/crl.der" ;;
  allow-list)
    printf 'id,secret,key_sha256,model,metadata\nSN-1,0123456789abcdef0123,,cam,site=a;b=c\nSN-2,,%s,cam,\n' \
      "$(openssl pkey -in "$work/leaf.key" -pubout -outform DER | sha256sum | cut -d' ' -f1)" >"$corpus/allow.csv"
    printf '\xef\xbb\xbfmodel,id,secret\ncam,"SN-3","a""quoted""secret-01234"\n' >"$corpus/bom.csv" ;;
  manifest)
    printf '{"artifact":{"sha256":"%064d","size":1},"channel":"stable","expires":"2026-12-25T12:25:26Z","issued":"2026-11-25T12:25:26Z","manifestVersion":2,"models":["sensor"],"rollout":25,"version":"1.1.0"}' 0 >"$corpus/manifest.json"
    printf '1.10.0\n1.9.2-rc.1' >"$corpus/versions" ;;
  sealed) head -c 200 /dev/urandom >"$corpus/random"; printf 'FWSEAL1' >"$corpus/magic" ;;
  image)
    head -c 300 /dev/urandom >"$corpus/random"
    printf '{"enc":"%s","key":"%s"}' "$(openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl ec -pubout -outform DER 2>/dev/null | tail -c 65 | base64 -w0)" \
      "$(head -c 48 /dev/urandom | base64 -w0)" >"$corpus/wrapped.json" ;;
  mqtt)
    # v5 CONNECT (client id FUZZ-1, keep-alive 60), PUBLISH QoS 1 with a topic alias, SUBSCRIBE, PINGREQ, DISCONNECT.
    printf '\x10\x13\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x06FUZZ-1' >"$corpus/connect5"
    printf '\x32\x17\x00\x0fdevices/FUZZ-1/\x00\x01\x03\x23\x00\x01hi' >"$corpus/publish5"
    printf '\x82\x13\x00\x02\x00\x00\x0edevices/FUZZ-1\x01\xc0\x00\xe0\x00' >"$corpus/subscribe5"
    printf '\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06FUZZ-1\x30\x05\x00\x01a\x68\x69' >"$corpus/connect311" ;;
esac

echo "fuzzing $target for $seconds s ($(ls "$corpus" | wc -l) seeds)…" >&2
FLEETWARD_FUZZ_TARGET=$target "$binary" "$corpus" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
  -artifact_prefix=.build-fuzz/findings/"$target"- -print_final_stats=1 2>"$work/log" || {
  tail -40 "$work/log" >&2
  echo "scripts/fuzz.sh: $target found a failing input, kept under .build-fuzz/findings/" >&2
  exit 1
}
grep -E 'stat::number_of_executed_units|Done' "$work/log" | tail -2 >&2
