"""peer-up: reach your own machines through CGNAT over libp2p and your own relay."""

from peerup import native as _native

__version__ = "0.1.0"

# Before any data-path module is imported: stale compiled modules must not shadow
# edited sources (see peerup/native.py).
_native.prefer_fresh()
