"""Sans-IO protocol state machines: bytes in, events and bytes out, time passed in."""
