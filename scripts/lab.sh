#!/usr/bin/env bash
# Start JupyterLab on the course: localhost only, token auth on, notebooks/ as root.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${1:-8888}
TOKEN=${CROSSLAB_LAB_TOKEN:-$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')}
# The token never goes on a command line, where `ps` shows it to every local user: it travels
# in the environment (JUPYTER_TOKEN; /proc/PID/environ is readable by this user only), and the
# launcher below hands it to the server inside the process, as a command-line setting, so it
# still wins over a token in the user's own Jupyter config.
export JUPYTER_TOKEN="$TOKEN"
# (expanded as ${extra[@]+...}: bash 3.2, macOS's default, treats an empty array as unset under set -u)
extra=()
[ "$(id -u)" = "0" ] && extra+=(--allow-root)
echo "crosslab: JupyterLab at http://127.0.0.1:$PORT/lab?token=$TOKEN"
echo "crosslab: stop it with Ctrl-C"
exec "$VENV/bin/python" -c '
import os, sys
from jupyterlab.labapp import LabApp
sys.argv[0] = "jupyter-lab"
LabApp.launch_instance(sys.argv[1:] + ["--IdentityProvider.token=" + os.environ["JUPYTER_TOKEN"]])
' --no-browser --ip=127.0.0.1 --port="$PORT" --port-retries=0 \
    --ServerApp.root_dir="$(pwd)/notebooks" ${extra[@]+"${extra[@]}"}
