#!/usr/bin/env bash
# Build the py-libp2p test peer's virtualenv (interop/py/.venv). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

# fastecdsa (a libp2p dependency) ships as an sdist and compiles against GMP.
if command -v dpkg >/dev/null && ! dpkg -s libgmp-dev >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgmp-dev
  else
    echo "setup.sh: libgmp-dev missing (needed to build fastecdsa); install it as root" >&2
  fi
fi

stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
   && .venv/bin/python -c 'import libp2p, trio' 2>/dev/null; then
  echo "interop/py: .venv up to date"
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
echo "$want" > "$stamp"
echo "interop/py: installed $(.venv/bin/python -c 'import importlib.metadata as m; print("libp2p", m.version("libp2p"))')"
