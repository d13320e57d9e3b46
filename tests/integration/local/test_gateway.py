"""The latency gateway on a real toxiproxy: round trips as configured, re-timed and cut links,
and nothing left behind when it stops."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from pipeorch.local.cluster import LocalCluster
from pipeorch.local.gateway import LatencyGateway
from pipeorch.local.processes import free_ports
from pipeorch.local.rtt import format_matrix, median_round_trip

from .conftest import LAYOUT


def test_every_link_takes_its_configured_round_trip_within_20_percent(wan: LocalCluster):
    wan.wait_for_leader()
    measured = wan.measure_rtt(samples=10)
    table = format_matrix(LAYOUT.names, measured, LAYOUT.rtt_ms)
    assert set(measured) == {(a, b) for a in LAYOUT.names for b in LAYOUT.names if a != b}
    for (a, b), rtt in measured.items():
        configured = LAYOUT.rtt_ms(a, b)
        # The lower bound is what fails if the gateway adds no latency (or traffic bypasses it).
        assert 0.8 * configured <= rtt <= 1.2 * configured, f"{a} -> {b}\n{table}"


class _Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[str]:
    """A tiny HTTP service, to stand for anything living in azure."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_ports(1)[0]), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def gateway(tmp_path) -> Iterator[LatencyGateway]:
    gw = LatencyGateway(LAYOUT, tmp_path)
    gw.start()
    yield gw
    gw.stop()


def median_rtt(address: str) -> float:
    return median_round_trip(f"http://{address}/", samples=7)


def test_proxies_are_per_link_and_idempotent_and_direct_inside_a_region(gateway, service):
    from_aws = gateway.proxy("aws", "svc", service, "azure")
    assert from_aws != service
    assert gateway.proxy("aws", "svc", service, "azure") == from_aws
    from_gcp = gateway.proxy("gcp", "svc", service, "azure")
    assert from_gcp not in (from_aws, service)
    assert gateway.proxy("azure", "svc", service, "azure") == service
    assert 0.8 * 75 <= median_rtt(from_aws) <= 1.2 * 75
    assert 0.8 * 125 <= median_rtt(from_gcp) <= 1.2 * 125


def test_set_latency_retimes_both_directions_of_a_pair_only(gateway, service):
    aws_to_azure = gateway.proxy("aws", "svc", service, "azure")
    gcp_to_azure = gateway.proxy("gcp", "svc", service, "azure")
    gateway.set_latency("aws", "azure", 200, 0)
    assert 0.9 * 200 <= median_rtt(aws_to_azure) <= 1.2 * 200
    assert median_rtt(gcp_to_azure) <= 1.2 * 125
    # A proxy created after the change gets the new round trip too.
    assert 0.9 * 200 <= median_rtt(gateway.proxy("azure", "svc2", service, "aws")) <= 1.2 * 200


def test_cut_links_refuse_traffic_until_enabled_again(gateway, service):
    aws_to_azure = gateway.proxy("aws", "svc", service, "azure")
    gcp_to_azure = gateway.proxy("gcp", "svc", service, "azure")
    gateway.disable_links("aws")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{aws_to_azure}/", timeout=2)
    assert httpx.get(f"http://{gcp_to_azure}/", timeout=2).status_code == 200
    # Cut at creation too, while the region is cut.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{gateway.proxy('aws', 'svc2', service, 'azure')}/", timeout=2)
    gateway.enable_links("aws")
    assert httpx.get(f"http://{aws_to_azure}/", timeout=2).status_code == 200


def test_stop_leaves_no_process_and_no_bound_port(tmp_path, service):
    gw = LatencyGateway(LAYOUT, tmp_path)
    gw.start()
    listen = gw.proxy("aws", "svc", service, "gcp")
    assert httpx.get(f"http://{listen}/", timeout=2).status_code == 200
    assert gw.proc.popen is not None
    pid = gw.proc.popen.pid
    gw.stop()
    gw.stop()  # twice is harmless
    assert not gw.proc.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    for address in (gw.api_address, listen):
        host, port = address.rsplit(":", 1)
        with socket.socket() as s:
            # As any server binds (a closed connection may linger in TIME_WAIT); fails only
            # while something still listens there.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port)))
            s.listen()
    assert (tmp_path / "toxiproxy.log").stat().st_size > 0
