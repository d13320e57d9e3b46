"""Ports handed to the servers of one system never collide."""

from __future__ import annotations

from pipeorch.local.processes import free_ports


def test_a_port_is_never_handed_out_twice_by_one_process():
    # Picked one at a time, as a cluster picks a worker's port when it adds the worker. 2,000
    # random picks from the ~22,000 ports below the ephemeral range would repeat about 90
    # times if picks did not remember each other.
    ports = [port for _ in range(2000) for port in free_ports(1)]
    assert len(set(ports)) == len(ports)
