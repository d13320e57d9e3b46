"""LatencyGateway: real round trips between the regions of a local system, through toxiproxy.

One toxiproxy server (the pinned binary, no root, no Docker) holds one proxy per directed link:
a process in region A reaches a service living in region B != A through the proxy for (A, that
service). Each proxy carries two latency toxics, half the pair's round trip on the way to the
service and half on the way back, so a request and its response together cost the configured
round trip. Traffic inside a region never touches the gateway.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pipeorch.core.regions import Regions
from pipeorch.errors import ConfigError, GatewayError
from pipeorch.local.processes import Proc, free_ports, wait_until
from pipeorch.local.tools import find as find_tool

Stream = Literal["upstream", "downstream"]
#: toxiproxy's names: "upstream" is client -> service, "downstream" is service -> client.
STREAMS: tuple[Stream, ...] = ("upstream", "downstream")
_BIND_ATTEMPTS = 5


@dataclass(frozen=True)
class Link:
    """One proxy: traffic from ``from_region`` to ``upstream`` (``upstream_name``, living in
    ``to_region``) enters at ``listen``."""

    name: str
    from_region: str
    to_region: str
    upstream_name: str
    upstream: str
    listen: str

    def touches(self, region: str) -> bool:
        return region in (self.from_region, self.to_region)

    def joins(self, a: str, b: str) -> bool:
        return {self.from_region, self.to_region} == {a, b}


def one_way_toxics(rtt_ms: float, jitter_ms: float) -> dict[Stream, dict[str, int]]:
    """Latency toxic attributes per direction, so that both directions add up to the round trip.

    toxiproxy takes whole milliseconds and adds a uniform ±jitter: an odd total is split with
    the extra millisecond on the way to the service.
    """
    rtt, jitter = round(rtt_ms), round(jitter_ms)
    return {
        "upstream": {"latency": rtt - rtt // 2, "jitter": jitter - jitter // 2},
        "downstream": {"latency": rtt // 2, "jitter": jitter // 2},
    }


class LatencyGateway:
    """A toxiproxy server and the proxies of one system's cross-region links."""

    def __init__(self, regions: Regions, workdir: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.api_address = ""
        self._latency = {
            frozenset(pair): (regions.rtt_ms(*pair), regions.jitter_ms(*pair))
            for pair in regions.pairs()
        }
        self._links: dict[tuple[str, str], Link] = {}
        self._disabled: set[str] = set()
        self._lock = threading.Lock()
        self.proc = Proc(name="toxiproxy", argv=[], log_path=workdir / "toxiproxy.log")
        self._api: httpx.Client | None = None

    @classmethod
    def attach(
        cls,
        regions: Regions,
        workdir: Path,
        api_address: str,
        links: Iterable[Link],
        partitioned: Iterable[str] = (),
        latency: Mapping[tuple[str, str], tuple[float, float]] | None = None,
    ) -> LatencyGateway:
        """The gateway of a system started by another process (a detached ``local up``): its
        toxiproxy at ``api_address``, with the links, cut regions and round trips recorded
        when it was last changed. ``close`` lets go of it; only that process's ``stop`` (or
        ``local down``) ends it."""
        gateway = cls(regions, workdir)
        gateway.api_address = api_address
        gateway._links = {(link.from_region, link.upstream_name): link for link in links}
        gateway._disabled = set(partitioned)
        for (a, b), rtt_and_jitter in (latency or {}).items():
            gateway._latency[frozenset((a, b))] = rtt_and_jitter
        gateway._api = httpx.Client(base_url=f"http://{api_address}", timeout=5.0)
        return gateway

    def close(self) -> None:
        """Let go of the API without stopping toxiproxy."""
        if self._api is not None:
            self._api.close()
            self._api = None

    # ---- process --------------------------------------------------------------------------

    def start(self) -> None:
        """Start toxiproxy on a free loopback port and wait for its API."""
        binary = str(find_tool("toxiproxy-server"))
        self.proc.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Proxies are made through the API; this empty startup list puts the work directory on
        # the command line, so that `ps` tells which system a toxiproxy belongs to.
        config = self.proc.log_path.with_name("toxiproxy-proxies.json")
        config.write_text("[]\n")
        for _ in range(_BIND_ATTEMPTS):
            (port,) = free_ports(1)
            self.api_address = f"{self.host}:{port}"
            # -proxy-metrics: per-proxy byte counters, to show which traffic crossed.
            self.proc.argv = [
                binary, "-host", self.host, "-port", str(port), "-config", str(config),
                "-proxy-metrics",
            ]  # fmt: skip
            self.proc.start()
            self._api = httpx.Client(base_url=f"http://{self.api_address}", timeout=5.0)
            try:
                wait_until(self._answers, 10, what="toxiproxy API")
                return
            except (TimeoutError, GatewayError):
                self.stop()  # most likely the port was taken meanwhile: try another one
        raise GatewayError(f"toxiproxy did not start; its log:\n{self.proc.log_tail(10)}")

    def _answers(self) -> bool:
        if not self.proc.running:
            raise GatewayError("toxiproxy exited")
        assert self._api is not None
        return self._api.get("/version").status_code == 200

    def stop(self) -> None:
        """Stop toxiproxy (its listeners close with it). Safe to call twice."""
        self.close()
        self.proc.kill(signal.SIGTERM)
        self._links.clear()

    # ---- links ----------------------------------------------------------------------------

    def proxy(
        self, from_region: str, upstream_name: str, upstream_address: str, upstream_region: str
    ) -> str:
        """The address a process in ``from_region`` dials to reach ``upstream_address`` (the
        service ``upstream_name`` in ``upstream_region``): the service itself inside a region,
        else its proxy, created on first use."""
        if from_region == upstream_region:
            return upstream_address
        with self._lock:
            link = self._links.get((from_region, upstream_name))
            if link is None:
                link = self._create(from_region, upstream_name, upstream_address, upstream_region)
                self._links[(from_region, upstream_name)] = link
        if link.upstream != upstream_address:
            raise ConfigError(
                f"{upstream_name} is already proxied to {link.upstream}, not {upstream_address}"
            )
        return link.listen

    def links(self) -> list[Link]:
        with self._lock:
            return list(self._links.values())

    def _create(self, from_region: str, upstream_name: str, upstream: str, to_region: str) -> Link:
        rtt, jitter = self._pair(from_region, to_region)
        name = f"{from_region}-to-{upstream_name}"
        body = {
            "name": name,
            "upstream": upstream,
            "enabled": self._enabled(from_region, to_region),
        }
        for _ in range(_BIND_ATTEMPTS):
            (port,) = free_ports(1)
            listen = f"{self.host}:{port}"
            response = self._request("POST", "/proxies", {**body, "listen": listen}, ok=(201, 500))
            if response.status_code == 201:
                break
            if "address already in use" not in response.text:
                raise GatewayError(f"toxiproxy refused proxy {name}: {response.text}")
        else:
            raise GatewayError(f"no free port for proxy {name} after {_BIND_ATTEMPTS} attempts")
        for stream, attributes in one_way_toxics(rtt, jitter).items():
            toxic = {"name": f"latency-{stream}", "type": "latency", "stream": stream}
            self._request("POST", f"/proxies/{name}/toxics", {**toxic, "attributes": attributes})
        return Link(name, from_region, to_region, upstream_name, upstream, listen)

    def _pair(self, a: str, b: str) -> tuple[float, float]:
        try:
            return self._latency[frozenset((a, b))]
        except KeyError:
            raise ConfigError(f"no round trip configured between {a!r} and {b!r}") from None

    def _enabled(self, a: str, b: str) -> bool:
        return not ({a, b} & self._disabled)

    def rtt_ms(self, a: str, b: str) -> float:
        """The round trip the gateway currently gives the pair (0 inside a region)."""
        return 0.0 if a == b else self._pair(a, b)[0]

    def jitter_ms(self, a: str, b: str) -> float:
        return 0.0 if a == b else self._pair(a, b)[1]

    def latencies(self) -> dict[tuple[str, str], tuple[float, float]]:
        """Round trip and jitter (ms) the gateway gives each pair now, by sorted pair."""
        with self._lock:
            items = list(self._latency.items())
        out = {}
        for pair, value in items:
            a, b = sorted(pair)
            out[(a, b)] = value
        return out

    @property
    def partitioned(self) -> list[str]:
        """The regions whose links are cut, sorted."""
        with self._lock:
            return sorted(self._disabled)

    # ---- changes --------------------------------------------------------------------------

    def set_latency(self, a: str, b: str, rtt_ms: float, jitter_ms: float) -> None:
        """Give every link between ``a`` and ``b``, both directions, this round trip."""
        self._pair(a, b)
        with self._lock:
            self._latency[frozenset((a, b))] = (rtt_ms, jitter_ms)
            links = [link for link in self._links.values() if link.joins(a, b)]
        for link in links:
            for stream, attributes in one_way_toxics(rtt_ms, jitter_ms).items():
                path = f"/proxies/{link.name}/toxics/latency-{stream}"
                self._request("PATCH", path, {"attributes": attributes})

    def disable_links(self, region: str) -> None:
        """Cut every link to and from ``region`` (its open connections close): a partition of
        the region from the others. Traffic inside it goes on."""
        with self._lock:
            self._disabled.add(region)
        self._apply_enabled(region)

    def enable_links(self, region: str) -> None:
        """Undo ``disable_links``; links to a region that is still cut stay cut."""
        with self._lock:
            self._disabled.discard(region)
        self._apply_enabled(region)

    def enable_all_links(self) -> None:
        """Every link up again, whatever cut it."""
        with self._lock:
            self._disabled.clear()
        for link in self.links():
            self._request("PATCH", f"/proxies/{link.name}", {"enabled": True})

    def _apply_enabled(self, region: str) -> None:
        for link in self.links():
            if link.touches(region):
                enabled = self._enabled(link.from_region, link.to_region)
                self._request("PATCH", f"/proxies/{link.name}", {"enabled": enabled})

    # ---- observation ----------------------------------------------------------------------

    def carried_bytes(self) -> dict[tuple[str, str], int]:
        """Bytes each link has carried, both directions, by ``(from_region, upstream_name)``,
        counting connections that have ended: toxiproxy adds a connection's bytes when it
        closes."""
        by_name = {link.name: key for key, link in list(self._links.items())}
        text = self._request("GET", "/metrics").text
        totals = dict.fromkeys(by_name.values(), 0)
        for family in text_string_to_metric_families(text):
            if family.name != "toxiproxy_proxy_received_bytes":
                continue
            for sample in family.samples:
                key = by_name.get(sample.labels.get("proxy", ""))
                if key is not None and sample.name.endswith("_total"):
                    totals[key] += int(sample.value)
        return totals

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = ()
    ) -> httpx.Response:
        if self._api is None:
            raise GatewayError("the latency gateway is not running")
        try:
            response = self._api.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise GatewayError(f"toxiproxy {method} {path}: {e}") from e
        if response.is_success or response.status_code in ok:
            return response
        raise GatewayError(
            f"toxiproxy {method} {path}: HTTP {response.status_code} {response.text}"
        )
