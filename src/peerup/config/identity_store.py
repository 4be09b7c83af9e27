"""Load or create the identity key file (libp2p ``PrivateKey`` protobuf, mode 0600).

The file holds the raw protobuf bytes, the same format go-libp2p and js-libp2p write,
so a key can move between implementations. A file that group or others can read is
refused, and so is one that another user owns or could replace through a directory
on its path, as OpenSSH's StrictModes does (see ``config.files.check_private``).
"""

from __future__ import annotations

from pathlib import Path

from peerup.config import files
from peerup.core.errors import ConfigError, RemoteProtocolError
from peerup.core.keys import Ed25519PrivateKey


def load(path: Path) -> Ed25519PrivateKey:
    """Load the key at ``path``.

    Raises:
        ConfigError: missing, too open, owned by another user or in a directory
            others can write, or not a valid Ed25519 libp2p key.
    """
    raw = files.read_private(Path(path))
    try:
        return Ed25519PrivateKey.from_protobuf(raw)
    except RemoteProtocolError as exc:
        raise ConfigError(
            f"not a libp2p Ed25519 private key: {exc}", path=str(path)
        ) from None


def load_or_create(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """Load the key, creating a fresh one first if the file is missing.

    Returns:
        ``(key, created)``.
    """
    path = Path(path)
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        if files.create_exclusive(path, key.to_protobuf()):
            return key, True
    return load(path), False
