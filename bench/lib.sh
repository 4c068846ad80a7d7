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

# Enrolls allow-listed device ID (factory secret SECRET) over EST with openssl and curl: its key
# in DIR/dev.key, its certificate in DIR/dev.pem. DIR/data is the data directory.
bench_enroll() { # dir est-url id secret
  local dir=$1 est=$2 id=$3 secret=$4
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/dev.key" -subj / -outform DER 2>/dev/null \
    | base64 >"$dir/dev.b64"
  curl -s --cacert "$dir/data/ca/root.pem" -u "$id:$secret" -H 'Content-Type: application/pkcs10' \
    --data-binary @"$dir/dev.b64" "$est/.well-known/est/simpleenroll" | base64 -d | openssl pkcs7 -inform DER -print_certs >"$dir/dev.pem"
}

# Writes DIR/nginx.conf: one nginx worker serving mTLS (TLS 1.3) on 127.0.0.1:PORT with the
# gateway's certificate and key (decrypted into DIR/nginx.key) and the root and issuing CA as
# client CAs; SERVER holds the extra lines of the server block (locations, ssl_crl…).
bench_nginx_mtls() { # dir port server-lines
  local dir=$1 port=$2 server=$3
  openssl pkey -in "$dir/data/tls/gateway.key" -passin env:FLEETWARD_PASSPHRASE -out "$dir/nginx.key"
  cat "$dir/data/ca/root.pem" "$dir/data/ca/issuing.pem" >"$dir/clients.pem"
  mkdir -p "$dir/nginx"
  cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log crit;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/nginx/body; proxy_temp_path $dir/nginx/proxy; fastcgi_temp_path $dir/nginx/fastcgi;
    uwsgi_temp_path $dir/nginx/uwsgi; scgi_temp_path $dir/nginx/scgi;
    server {
        listen 127.0.0.1:$port ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate $dir/data/tls/gateway.pem;
        ssl_certificate_key $dir/nginx.key;
        ssl_client_certificate $dir/clients.pem;
        ssl_verify_client on;
        ssl_verify_depth 2;
        $server
    }
}
CONF
}

# Writes WORK/mosquitto.conf: Debian's mosquitto serving MQTT over mutual TLS 1.3 itself on
# 127.0.0.1:PORT with the gateway's certificate and key (decrypted into WORK/mosquitto.key) and
# the root and issuing CA as client CAs, `require_certificate true`, `use_identity_as_username
# true`, no persistence, no log, TCP_NODELAY, no connection limit.
bench_mosquitto_tls() { # data-dir work-dir port
  local data=$1 work=$2 port=$3
  openssl pkey -in "$data/tls/gateway.key" -passin env:FLEETWARD_PASSPHRASE -out "$work/mosquitto.key"
  cat "$data/ca/root.pem" "$data/ca/issuing.pem" >"$work/clients.pem"
  cat >"$work/mosquitto.conf" <<CONF
user root
per_listener_settings false
allow_anonymous false
persistence false
log_dest none
set_tcp_nodelay true
max_connections -1
listener $port 127.0.0.1
certfile $data/tls/gateway.pem
keyfile $work/mosquitto.key
cafile $work/clients.pem
require_certificate true
use_identity_as_username true
tls_version tlsv1.3
CONF
}
