#!/usr/bin/env bash
# Builds the go-libp2p interop peer into interop/go/bin/peer (idempotent).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="/usr/local/go/bin:$PATH"
go build -trimpath -o bin/peer .
