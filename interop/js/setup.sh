#!/usr/bin/env bash
# Installs the js-libp2p test peer's dependencies (pinned in package-lock.json).
# Idempotent: skips `npm ci` when node_modules matches the current lockfile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

command -v node >/dev/null || { echo "setup.sh: node is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup.sh: npm is not installed" >&2; exit 1; }

stamp=node_modules/.peerup-setup-stamp
want="$(node --version) $(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
  echo "js peer: node_modules up to date"
  exit 0
fi

# Some transitive deps declare engines >= 22 but run fine on Node 20 (verified).
npm ci --no-audit --no-fund --engine-strict=false --loglevel=error
echo "$want" > "$stamp"
node --input-type=module -e "await import('./polyfill.mjs'); await import('libp2p')" \
  && echo "js peer: ready ($(node --version), libp2p $(node -p "require('./node_modules/libp2p/package.json').version"))"
