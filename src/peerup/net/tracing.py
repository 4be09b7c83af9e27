"""Optional OpenTelemetry traces: spans for dial (a handshake span inside it for each
address tried; inbound handshakes are not traced), reservation, hole punch and
proxied connection (issue 15, item 4).

Spec: the OpenTelemetry tracing API (``opentelemetry-api``) and OTLP export
(``opentelemetry-exporter-otlp-proto-http``), from the extra ``peerup[otel]``. Off
unless :func:`enable` is called (the daemon and the relay call it when
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_TRACES_EXPORTER`` is set, OpenTelemetry's
own variables): until then :func:`span` returns one shared no-op object and builds no
attributes (they come from a callable that is not called), and nothing of
OpenTelemetry is imported, so a node without the extra pays one function call and a
``with`` per traced event (never per frame).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

Attrs = Callable[[], Mapping[str, str | int | float | bool]]


class _NoSpan:
    """What :func:`span` gives while tracing is off."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def set(self, key: str, value: str | int | float | bool) -> None:
        """Set an attribute (nothing while tracing is off)."""

    def end(self) -> None:
        """End a span from :func:`start` (nothing while tracing is off)."""



class _Span:
    def __init__(self, cm: Any) -> None:
        self._cm = cm
        self._span: Any = None

    def __enter__(self) -> _Span:
        self._span = self._cm.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cm.__exit__(kind, exc, tb)

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)


class _Started:
    """A span that ends when :meth:`end` is called (events with no ``with`` around
    their lifetime: a proxied connection)."""

    def __init__(self, span_: Any) -> None:
        self._span = span_

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def end(self) -> None:
        self._span.end()


_NO_SPAN = _NoSpan()
NO_SPAN = _NO_SPAN
Span = _NoSpan | _Started
"""What :func:`start` gives: ``set`` attributes, then ``end``."""
_tracer: Any = None


def span(name: str, attrs: Attrs | None = None) -> _NoSpan | _Span:
    """A span around one event (``with tracing.span("peerup.dial", lambda: {...})``);
    an exception leaving it is recorded on it."""
    if _tracer is None:
        return _NO_SPAN
    return _Span(
        _tracer.start_as_current_span(name, attributes=dict(attrs()) if attrs else None)
    )


def start(name: str, attrs: Attrs | None = None) -> _NoSpan | _Started:
    """A span that lasts until its ``end()``."""
    if _tracer is None:
        return _NO_SPAN
    return _Started(
        _tracer.start_span(name, attributes=dict(attrs()) if attrs else None)
    )


def is_enabled() -> bool:
    return _tracer is not None


def enable(provider: Any = None, service_name: str = "peerup") -> bool:
    """Start tracing: with ``provider`` (an SDK ``TracerProvider``, e.g. in tests), or
    from the environment (OTLP over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``). False,
    logged once, when OpenTelemetry is not installed or nothing is configured."""
    global _tracer
    if provider is None:
        if not (
            os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_TRACES_EXPORTER")
        ):
            return False
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]
                OTLPSpanExporter,
            )
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning(
                "OTEL_* is set but OpenTelemetry is not installed: no traces "
                "(pip install 'peerup[otel]')"
            )
            return False
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = provider.get_tracer("peerup")
    return True


def disable() -> None:
    global _tracer
    _tracer = None
