#!/usr/bin/env bash
# The operator's view on a large fleet: with N devices imported (default 1,000,000, the allow-list
# of bench/import.sh), how long the console's overview, its first page of devices (all, and
# filtered by state and by model), a device page and a Prometheus scrape take, measured with curl
# over loopback against `fleetward serve` (release build, embedded SQLite), signed in as an
# operator. 3 warm-up requests, then 20 timed ones per page: median, p95 and max, in ms.
# Target: overview and first page of devices under 200 ms.
# SCREENSHOT=FILE.png also saves the overview as Debian's chromium draws it (selenium from PyPI).
# Usage: [FLEETWARD_BIN=…] [SCREENSHOT=…] bench/console.sh [devices]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
work=$(mktemp -d /tmp/fleetward-console-bench.XXXXXX)
. bench/lib.sh
trap bench_cleanup EXIT
fleetward=$(fleetward_binary)

echo "Writing and importing ${rows} devices…" >&2
python3 bench/make_allowlist.py "$rows" "$work/allow.csv"
"$fleetward" init --data "$work/data" --kdf-iterations 100000 >/dev/null 2>&1
"$fleetward" devices import --data "$work/data" "$work/allow.csv" --json >"$work/import.json"
operator=$("$fleetward" token create --data "$work/data" --role operator)
scraper=$("$fleetward" token create --data "$work/data" --role metrics)
# A few devices leave `allowed`, so the overview has more than one bar.
for i in 00000001 00000002 00000003; do "$fleetward" devices revoke --data "$work/data" "DEV-$i" >/dev/null; done

"$fleetward" serve --data "$work/data" --api-listen 127.0.0.1:0 --est-listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 \
  --mqtt-listen off >"$work/serve.out" 2>"$work/serve.err" &
bench_pids+=($!)
for _ in $(seq 1 200); do
  grep -q "management API listening on" "$work/serve.out" 2>/dev/null && break
  sleep 0.1
done
api=$(grep "management API listening on" "$work/serve.out" | sed 's/.*listening on \([^ ]*\).*/\1/')
[ -n "$api" ] || { echo "bench/console.sh: serve did not start: $(cat "$work/serve.err")" >&2; exit 1; }

# Sign in as the operator (the form's nonce, then the token): a session cookie in the jar.
nonce=$(curl -s -c "$work/jar" "$api/console/sign-in" | grep -o 'name="nonce" value="[^"]*"' | sed 's/.*value="//;s/"$//')
status=$(curl -s -o /dev/null -w '%{http_code}' -b "$work/jar" -c "$work/jar" --data-urlencode "nonce=$nonce" \
  --data-urlencode "token=$operator" "$api/console/sign-in")
[ "$status" = 303 ] || { echo "bench/console.sh: sign-in answered $status" >&2; exit 1; }

measure() { # name url [curl args…]
  local name=$1 url=$2
  shift 2
  for _ in 1 2 3; do curl -s -o /dev/null "$@" "$url"; done
  local times=()
  for _ in $(seq 1 20); do
    times+=("$(curl -s -o "$work/page" -w '%{http_code} %{time_total}' "$@" "$url")")
  done
  local codes
  codes=$(printf '%s\n' "${times[@]}" | awk '{print $1}' | sort -u | tr '\n' ' ')
  [ "$codes" = "200 " ] || { echo "bench/console.sh: $name answered $codes" >&2; exit 1; }
  printf '%s\n' "${times[@]}" | awk '{print $2 * 1000}' | sort -n | awk -v name="$name" -v bytes="$(wc -c <"$work/page")" \
    '{a[NR]=$1} END {printf "%-32s median %7.1f ms  p95 %7.1f ms  max %7.1f ms  (%d bytes)\n", name, a[int((NR+1)/2)], a[int(NR*0.95+0.5)], a[NR], bytes}'
}

echo "fleetward console on ${rows} devices ($(grep -o '"inserted" : [0-9]*' "$work/import.json")), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
measure "overview (/console/)" "$api/console/" -b "$work/jar"
measure "devices, first page" "$api/console/devices" -b "$work/jar"
measure "devices?state=revoked" "$api/console/devices?state=revoked" -b "$work/jar"
measure "devices?model=sensor-v2" "$api/console/devices?model=sensor-v2" -b "$work/jar"
measure "devices, page after DEV-00500000" "$api/console/devices?after=DEV-00500000" -b "$work/jar"
measure "device page" "$api/console/devices/DEV-00654321" -b "$work/jar"
measure "GET /metrics" "$api/metrics" -H "Authorization: Bearer $scraper"
grep -q 'fleetward_devices{state="allowed"} '"$((rows - 3))" "$work/page" \
  || { echo "bench/console.sh: /metrics does not count $((rows - 3)) allowed devices" >&2; exit 1; }

if [ -n "${SCREENSHOT:-}" ]; then
  python3 - "$api" "$operator" "$SCREENSHOT" <<'PY'
import sys
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
api, token, out = sys.argv[1:4]
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1100"]:
    options.add_argument(argument)
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
try:
    driver.get(api + "/console/sign-in")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    driver.save_screenshot(out)
finally:
    driver.quit()
PY
  echo "overview screenshot: $SCREENSHOT" >&2
fi
