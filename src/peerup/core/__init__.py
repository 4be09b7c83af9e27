"""Vocabulary shared by every layer: keys, peer IDs, multiaddrs, varints, errors."""
