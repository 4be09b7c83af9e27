"""UPnP IGD port mapping, through the ``async-upnp-client`` library.

Specs: UPnP Device Architecture 1.1 section 1.3.2 (SSDP M-SEARCH), and the
InternetGatewayDevice v1/v2 WANIPConnection service (WANPPPConnection for PPPoE
links): ``GetExternalIPAddress``, ``AddPortMapping``, ``DeletePortMapping``, and
IGDv2's ``AddAnyPortMapping`` when the port we ask for is taken. The library does the
SSDP search, fetches and parses the device and service descriptions, and speaks SOAP
(it is what Home Assistant uses, kept up to date); this module chooses the service,
calls the actions, and turns the library's exceptions into :class:`UpnpFailure` with
the UPnP error code once, here (STYLE.md 3.3). Imported only when port mapping runs
(aiohttp is slow to import), so the CLI never pays for it.

Error codes handled (WANIPConnection:2 section 2.4.16): 718 ConflictInMappingEntry
(another machine holds the port: AddAnyPortMapping, on IGDv2), 725
OnlyPermanentLeasesSupported (IGDv1 routers: lease 0, removed on exit).

Not supported: IPv6 pinholes (WANIPv6FirewallControl), several gateways on one LAN
(the first that answers is used).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from peerup.core.errors import Error

if TYPE_CHECKING:
    from async_upnp_client.client import UpnpService

log = logging.getLogger(__name__)

IGD_SEARCH_TARGET: Final = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
"""IGDv2 devices answer v1 searches too (UDA 1.1: a device answers for its
lower versions)."""
CONNECTION_SERVICES: Final = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
CONFLICT_IN_MAPPING_ENTRY: Final = 718
ONLY_PERMANENT_LEASES: Final = 725


class UpnpFailure(Error):
    """A UPnP step failed: no answer, a bad description, or a SOAP fault (``code``)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class UpnpMapping:
    external_port: int
    lease_s: int
    """What the router accepted; 0 is a permanent mapping (removed on exit)."""


async def discover(client_ip: str, timeout_s: float) -> str | None:
    """The description URL of the first IGD that answers an SSDP search sent from
    ``client_ip`` within ``timeout_s``; None if none does."""
    from async_upnp_client.search import SsdpSearchListener

    loop = asyncio.get_running_loop()
    found: asyncio.Future[str] = loop.create_future()

    def on_response(headers: Any) -> None:
        location = headers.get("location")
        if location and not found.done():
            found.set_result(str(location))

    listener = SsdpSearchListener(
        callback=on_response,
        source=(client_ip, 0),
        timeout=max(1, int(timeout_s)),
        search_target=IGD_SEARCH_TARGET,
    )
    try:
        await listener.async_start()
        listener.async_search()
        async with asyncio.timeout(timeout_s):
            return await found
    except TimeoutError:
        return None
    except OSError as exc:
        raise UpnpFailure(f"SSDP search from {client_ip} failed: {exc}") from exc
    finally:
        listener.async_stop()


class Igd:
    """One Internet Gateway Device's connection service."""

    def __init__(self, location: str, service: UpnpService) -> None:
        self.location = location
        self.service = service

    @classmethod
    async def open(cls, location: str, timeout_s: float) -> Igd:
        """Read the device at ``location`` and find its WAN connection service.

        Raises:
            UpnpFailure: unreachable, unreadable, or without a WAN connection service.
        """
        from async_upnp_client.aiohttp import AiohttpRequester
        from async_upnp_client.client_factory import UpnpFactory
        from async_upnp_client.exceptions import UpnpError

        factory = UpnpFactory(
            AiohttpRequester(timeout=max(1, int(timeout_s))), non_strict=True
        )
        try:
            async with asyncio.timeout(timeout_s):
                device = await factory.async_create_device(location)
        except (UpnpError, TimeoutError, OSError) as exc:
            raise UpnpFailure(
                f"reading the router's description {location}: {exc}"
            ) from exc
        for service_type in CONNECTION_SERVICES:
            service = device.find_service(service_type)
            if service is not None and service.has_action("AddPortMapping"):
                return cls(location, service)
        raise UpnpFailure(
            f"the UPnP device at {location} ({device.friendly_name}) has no WAN "
            "connection service that maps ports"
        )

    @property
    def version(self) -> int:
        return 2 if self.service.service_type.endswith(":2") else 1

    async def _call(self, action: str, timeout_s: float, **args: Any) -> dict[str, Any]:
        from async_upnp_client.exceptions import UpnpActionError, UpnpError

        try:
            async with asyncio.timeout(timeout_s):
                result = await self.service.action(action).async_call(**args)
        except UpnpActionError as exc:
            raise UpnpFailure(
                f"{action}: UPnP error {exc.error_code} ({exc.error_desc})",
                exc.error_code,
            ) from exc
        except (UpnpError, TimeoutError, OSError, KeyError) as exc:
            raise UpnpFailure(f"{action}: {exc or type(exc).__name__}") from exc
        return dict(result)

    async def external_ip(self, timeout_s: float) -> str:
        """The router's own public address, as it reports it.

        Raises:
            UpnpFailure: the call failed or the answer is not an IPv4 address.
        """
        result = await self._call("GetExternalIPAddress", timeout_s)
        text = str(result.get("NewExternalIPAddress") or "")
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise UpnpFailure(
                f"GetExternalIPAddress answered {text!r}, not an IPv4 address"
            ) from None

    async def add(
        self,
        protocol: str,
        external_port: int,
        internal_client: str,
        internal_port: int,
        lease_s: int,
        description: str,
        timeout_s: float,
    ) -> UpnpMapping:
        """Map ``external_port`` (or, if taken and the router is IGDv2, any port it
        picks) to ``internal_client:internal_port``.

        Raises:
            UpnpFailure: the router refused (``code`` is its UPnP error).
        """
        args = {
            "NewRemoteHost": "",
            "NewExternalPort": external_port,
            "NewProtocol": protocol.upper(),
            "NewInternalPort": internal_port,
            "NewInternalClient": internal_client,
            "NewEnabled": True,
            "NewPortMappingDescription": description,
            "NewLeaseDuration": lease_s,
        }
        try:
            await self._call("AddPortMapping", timeout_s, **args)
            return UpnpMapping(external_port, lease_s)
        except UpnpFailure as exc:
            if exc.code == ONLY_PERMANENT_LEASES and lease_s:
                args["NewLeaseDuration"] = 0
                await self._call("AddPortMapping", timeout_s, **args)
                return UpnpMapping(external_port, 0)
            if exc.code != CONFLICT_IN_MAPPING_ENTRY or not self.service.has_action(
                "AddAnyPortMapping"
            ):
                raise
        result = await self._call("AddAnyPortMapping", timeout_s, **args)
        try:
            port = int(result.get("NewReservedPort", 0))
        except (TypeError, ValueError):
            port = 0
        if not 0 < port < 65536:
            raise UpnpFailure(f"AddAnyPortMapping reserved port {port!r}")
        return UpnpMapping(port, lease_s)

    async def delete(self, protocol: str, external_port: int, timeout_s: float) -> None:
        """Remove our mapping.

        Raises:
            UpnpFailure: the router did not confirm.
        """
        await self._call(
            "DeletePortMapping",
            timeout_s,
            NewRemoteHost="",
            NewExternalPort=external_port,
            NewProtocol=protocol.upper(),
        )
