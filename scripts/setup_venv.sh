#!/usr/bin/env bash
# Create or refresh the virtual environment from requirements.lock.
# Idempotent: when $VENV already matches the lock file it only checks that
# crosslab itself is importable from this checkout, which takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# sha256sum on Linux, shasum on macOS: the same digest either way.
sha256() { if command -v sha256sum >/dev/null 2>&1; then sha256sum; else shasum -a 256; fi; }
want=$(cat requirements.lock pyproject.toml | sha256 | cut -c1-16)
stamp="$VENV/.crosslab-lock"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    # Same lock: make sure the editable install points at this checkout
    # (a venv cached outside the clone may have been built from another one).
    # Ask from outside the checkout: run here, Python would import ./crosslab from the
    # working directory and hide an install that points at another (stale) clone.
    here=$(cd / && "$VENV/bin/python" -c 'import crosslab, pathlib; print(pathlib.Path(crosslab.__file__).resolve().parent.parent)' 2>/dev/null || true)
    if [ "$here" = "$(pwd -P)" ]; then
        echo "environment: $VENV is up to date"
        exit 0
    fi
    echo "environment: pointing $VENV at this checkout"
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
    exit 0
fi

pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$pyver" in
    3.11|3.12) ;;
    *) echo "crosslab needs Python 3.11 or 3.12, but '$PYTHON' is $pyver. Run: make PYTHON=python3.11 ..." >&2; exit 1;;
esac

# pip -q still warns about this machine's empty local index folders; hide only that line.
pip_() {
    "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
    return "${PIPESTATUS[0]}"
}

echo "environment: building $VENV from requirements.lock (first time: about 2 minutes, ~7 GB with torch)"
start=$(date +%s)
rm -f "$stamp"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_ install -q --upgrade "pip>=24"
pip_ install -q -r requirements.lock
pip_ install -q --no-deps --no-build-isolation -e .
# Jupyter must use this environment's kernel, whatever else is installed.
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (crosslab)" >/dev/null
echo "$want" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "environment: ready in $(( $(date +%s) - start )) s"
