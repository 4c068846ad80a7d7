#!/usr/bin/env bash
# Runs every Fleetward test on a fresh machine: installs what the tests drive (Debian's openssl,
# postgresql, the sqlite3 shell, curl, nginx and mosquitto (run as the tests' own processes, never the system services),
# mosquitto-clients and python3-paho-mqtt, rabbitmq-server (its MQTT plugin, a private node per test), softhsm2, opensc and libengine-pkcs11-openssl, swtpm with tpm2-pkcs11 and tpm2-abrmd, chromium and chromium-driver (the console's browser test), the util-linux/bsdutils tools for terminal tests, and
# openapi-spec-validator, schemathesis, prometheus-client (Prometheus' own text parser) and selenium from PyPI) if it is missing, starts a private PostgreSQL cluster on a loopback port under a temp dir, runs
# `swift test`, fuzzes every parser briefly (scripts/fuzz.sh), and stops the cluster again.
# Idempotent; needs root (or sudo) only when something must be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
command -v sqlite3 >/dev/null 2>&1 || packages+=(sqlite3)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
command -v psql >/dev/null 2>&1 || packages+=(postgresql-client)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
command -v script >/dev/null 2>&1 || packages+=(bsdutils)
command -v setsid >/dev/null 2>&1 || packages+=(util-linux)
command -v curl >/dev/null 2>&1 || packages+=(curl)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || packages+=(nginx)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || packages+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || packages+=(mosquitto-clients)
/usr/bin/python3 -c 'import paho.mqtt.client' >/dev/null 2>&1 || python3 -c 'import paho.mqtt.client' >/dev/null 2>&1 \
  || packages+=(python3-paho-mqtt)
# RabbitMQ's MQTT plugin: a second broker behind the front door (a private node per test).
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || packages+=(rabbitmq-server)
# SoftHSM2 (a PKCS#11 token for keys in hardware) and OpenSC's pkcs11-tool to check it from outside.
command -v softhsm2-util >/dev/null 2>&1 || packages+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || packages+=(opensc)
# openssl's pkcs11 engine: openssl signs with the token's keys as a cross-check.
ls /usr/lib/*/engines-3/pkcs11.so >/dev/null 2>&1 || packages+=(libengine-pkcs11-openssl)
# A TPM through PKCS#11: tpm2-pkcs11 over swtpm, behind tpm2-abrmd on a private D-Bus session bus.
command -v swtpm >/dev/null 2>&1 || packages+=(swtpm swtpm-tools)
ls /usr/lib/*/pkcs11/libtpm2_pkcs11.so >/dev/null 2>&1 || packages+=(libtpm2-pkcs11-1)
command -v tpm2_ptool >/dev/null 2>&1 || packages+=(libtpm2-pkcs11-tools tpm2-tools)
command -v tpm2-abrmd >/dev/null 2>&1 || packages+=(tpm2-abrmd)
ls /usr/lib/*/libtss2-tcti-tabrmd.so.0 >/dev/null 2>&1 || packages+=(libtss2-tcti-tabrmd0)
command -v dbus-daemon >/dev/null 2>&1 || packages+=(dbus)
# Chromium and its WebDriver, for the console's browser test (driven by selenium from PyPI).
[ -x /usr/bin/chromium ] || packages+=(chromium)
[ -x /usr/bin/chromedriver ] || packages+=(chromium-driver)
python3 -c 'import pip' >/dev/null 2>&1 || packages+=(python3-pip)
if [ ${#packages[@]} -gt 0 ]; then
  echo "Installing ${packages[*]} with apt-get…" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi
for module in openapi_spec_validator:openapi-spec-validator schemathesis:schemathesis prometheus_client:prometheus-client selenium:selenium; do
  if ! python3 -c "import ${module%%:*}" >/dev/null 2>&1; then
    echo "Installing ${module##*:} with pip…" >&2
    python3 -m pip install -q --break-system-packages "${module##*:}" 2>/dev/null \
      || python3 -m pip install -q "${module##*:}"
  fi
done

log=$(mktemp)
cluster=""
# SoftHSM2's tokens for the PKCS#11 tests, in a private directory: its configuration is read from
# SOFTHSM2_CONF when a test process first loads the module, so it is set here, before any thread.
softhsm=$(mktemp -d /tmp/fleetward-softhsm.XXXXXX)
mkdir -p "$softhsm/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$softhsm" >"$softhsm/softhsm2.conf"
export SOFTHSM2_CONF=$softhsm/softhsm2.conf
cleanup() {
  if [ -n "$cluster" ]; then scripts/postgres-cluster.sh stop "$cluster"; fi
  rm -f "$log"
  rm -rf "$softhsm"
}
trap cleanup EXIT
eval "$(scripts/postgres-cluster.sh start)"
cluster=$FLEETWARD_TEST_POSTGRES_DIR
echo "PostgreSQL test cluster running under $cluster" >&2
set +e
swift test 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# Every libFuzzer target for a short bounded time (FLEETWARD_FUZZ_SECONDS each, default 10; 0
# skips): a separate sanitized build under .build-fuzz, then each parser on a seed corpus.
fuzz_seconds=${FLEETWARD_FUZZ_SECONDS:-10}
if [ "$fuzz_seconds" != 0 ]; then
  echo "Fuzzing every parser for ${fuzz_seconds} s each (scripts/fuzz.sh all ${fuzz_seconds})…" >&2
  if ! scripts/fuzz.sh all "$fuzz_seconds"; then
    echo "fuzzing found a failing input (kept under .build-fuzz/findings/)" >&2
    status=1
  fi
fi

# One plain closing line for any reader: Swift Testing's own summary counts issues, not tests.
total=$(grep -oE 'Test run with [0-9]+ tests?' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
failed=$(grep -cE '^✘ Test .* failed after' "$log" || true)
echo "$((total - failed)) passed, ${failed} failed"
exit "$status"
