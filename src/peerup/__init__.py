"""peer-up: reach your own machines through CGNAT over libp2p and your own relay."""

__version__ = "0.1.0"
