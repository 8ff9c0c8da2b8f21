#!/usr/bin/env bash
# Start JupyterLab on the course: localhost only, token auth on, notebooks/ as root.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${1:-8888}
TOKEN=${CROSSLAB_LAB_TOKEN:-$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')}
# (expanded as ${extra[@]+...}: bash 3.2, macOS's default, treats an empty array as unset under set -u)
extra=()
[ "$(id -u)" = "0" ] && extra+=(--allow-root)
echo "crosslab: JupyterLab at http://127.0.0.1:$PORT/lab?token=$TOKEN"
echo "crosslab: stop it with Ctrl-C"
exec "$VENV/bin/jupyter" lab --no-browser --ip=127.0.0.1 --port="$PORT" --port-retries=0 \
    --ServerApp.root_dir="$(pwd)/notebooks" --IdentityProvider.token="$TOKEN" ${extra[@]+"${extra[@]}"}
