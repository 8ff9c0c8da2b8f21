#!/usr/bin/env bash
# Serve the collection search app (apps/collection.ipynb) as a standalone web page with Voila:
# 127.0.0.1 only, a token, a free port (or PORT=...). DIR= a folder of pictures / caption file /
# clipart (default); PIPELINE= one or more named pipelines, comma-separated (default mlp+minilm).
set -euo pipefail
DIR=${DIR:-clipart}
case "$DIR" in  # a path as you typed it: ~ expanded (make does not), relative to where you ran make
    "~") DIR=$HOME ;;
    "~/"*) DIR=$HOME/${DIR#"~/"} ;;
esac
if [ "$DIR" != clipart ] && [ "$DIR" != photos ] || [ -e "$DIR" ]; then
    if [ ! -e "$DIR" ]; then
        echo "crosslab: DIR=$DIR: no such folder or file (a folder of pictures, a .csv/.json caption file, clipart or photos)" >&2
        exit 2
    fi
    DIR=$(cd "$(dirname "$DIR")" && pwd -P)/$(basename "$DIR")  # absolute: the page's kernel runs elsewhere
fi
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${PORT:-}
if [ -z "$PORT" ]; then  # a free port, chosen by the system
    PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
export CROSSLAB_APP_SOURCE=$DIR
export CROSSLAB_APP_PIPELINES=${PIPELINE:-mlp+minilm}
# Index before serving, with a progress bar here, so the page opens on a ready collection.
IFS=, read -ra names <<< "$CROSSLAB_APP_PIPELINES"
for name in "${names[@]}"; do
    "$VENV/bin/python" -m crosslab collection "$CROSSLAB_APP_SOURCE" --pipeline "$name"
done
TOKEN=${CROSSLAB_APP_TOKEN:-$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')}
# The token travels in the environment, never on a command line (where `ps` shows it): the
# launcher below hands it to Voila inside the process. (The page's kernels inherit the
# environment; they run this course's notebook only.)
export CROSSLAB_APP_TOKEN="$TOKEN"
echo "crosslab: the search page is at http://127.0.0.1:$PORT/?token=$TOKEN"
echo "crosslab: stop it with Ctrl-C"
exec "$VENV/bin/python" -c '
import os, sys
from voila.app import Voila
sys.argv[0] = "voila"
Voila.launch_instance(sys.argv[1:] + ["--Voila.token=" + os.environ["CROSSLAB_APP_TOKEN"]])
' apps/collection.ipynb --no-browser --Voila.ip=127.0.0.1 --port="$PORT" \
    --Voila.root_dir="$(pwd)/apps"
