#!/usr/bin/env bash
# The image's entry point: `start.sh COMMAND...` prepares the tunnel AppAPI's deploy daemon
# needs, then runs COMMAND (the ExApp) in its place.
#
# HaRP (Nextcloud 32+, AppAPI sets HP_SHARED_KEY, HP_FRP_ADDRESS, HP_FRP_PORT): write the FRP
# client's config from those variables (TLS with the certificates HaRP mounts at /certs/frp,
# when that folder exists) and start frpc, which carries HaRP's connections for APP_PORT to
# the unix socket the ExApp listens on (HP_EXAPP_SOCK, default /tmp/exapp.sock, as nc_py_api's
# run_app). Docker Socket Proxy (no HP_SHARED_KEY): nothing to start; the ExApp listens on
# APP_HOST:APP_PORT.
#
# FRPC_CONFIG (default /tmp/frpc.toml; its pid file beside it) and FRPC_CERTS_DIR (default
# /certs/frp) exist for tests.
set -euo pipefail

fail() {
    echo "recognize: $*" >&2
    exit 1
}

toml_string() {  # $1 as a TOML basic string
    local value=${1//\\/\\\\}
    value=${value//\"/\\\"}
    printf '"%s"' "$value"
}

write_frpc_config() {
    local certs=${FRPC_CERTS_DIR:-/certs/frp}
    echo "serverAddr = $(toml_string "$HP_FRP_ADDRESS")"
    echo "serverPort = $HP_FRP_PORT"
    echo "loginFailExit = false"
    echo
    if [ -d "$certs" ]; then
        echo "transport.tls.enable = true"
        echo "transport.tls.certFile = $(toml_string "$certs/client.crt")"
        echo "transport.tls.keyFile = $(toml_string "$certs/client.key")"
        echo "transport.tls.trustedCaFile = $(toml_string "$certs/ca.crt")"
        echo 'transport.tls.serverName = "harp.nc"'
    else
        echo "transport.tls.enable = false"
    fi
    echo
    echo "metadatas.token = $(toml_string "$HP_SHARED_KEY")"
    echo
    echo "[[proxies]]"
    echo "remotePort = $APP_PORT"
    echo 'type = "tcp"'
    echo "name = $(toml_string "$APP_ID")"
    echo "[proxies.plugin]"
    echo 'type = "unix_domain_socket"'
    echo "unixPath = $(toml_string "${HP_EXAPP_SOCK:-/tmp/exapp.sock}")"
}

[ $# -gt 0 ] || fail "usage: start.sh COMMAND [ARGUMENT...]"

if [ -n "${HP_SHARED_KEY:-}" ]; then
    for port in HP_FRP_PORT APP_PORT; do
        [[ "${!port:-}" =~ ^[0-9]+$ ]] || fail "HaRP: $port must be a port number, not '${!port:-}'"
    done
    [ -n "${HP_FRP_ADDRESS:-}" ] || fail "HaRP: HP_FRP_ADDRESS is not set"
    [ -n "${APP_ID:-}" ] || fail "HaRP: APP_ID is not set"
    command -v frpc >/dev/null \
        || fail "HaRP needs frpc, which this image lacks on $(uname -m): deploy with Docker Socket Proxy"
    config=${FRPC_CONFIG:-/tmp/frpc.toml}
    (umask 077 && write_frpc_config >"$config")  # it holds the shared key
    frpc -c "$config" &
    echo $! >"${config%.toml}.pid"
    echo "recognize: frpc started for HaRP at ${HP_FRP_ADDRESS}:${HP_FRP_PORT}"
fi

exec "$@"
