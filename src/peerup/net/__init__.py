"""Thin asyncio drivers: TCP and in-memory transports, connections, streams, the host."""
