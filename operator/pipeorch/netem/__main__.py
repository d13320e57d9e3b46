"""`python -m pipeorch.netem`: the netem DaemonSet's container command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading

from pipeorch.netem.agent import NetemAgent


def default_device() -> str:
    """The interface of the default route (a pod on the host network sees the node's)."""
    out = subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True)
    words = out.stdout.split()
    return words[words.index("dev") + 1] if "dev" in words else "eth0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeorch.netem", description=__doc__)
    parser.add_argument("--node", default=os.environ.get("NODE_NAME"), help="this node's name")
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    parser.add_argument("--configmap", default="pipeorch-latency")
    parser.add_argument("--device", default=None, help="default: the default route's interface")
    parser.add_argument("--leaf", choices=["netem", "pfifo"], default="netem")
    parser.add_argument("--period", type=float, default=10.0, help="seconds between checks")
    parser.add_argument("--print", action="store_true", help="print the rules and exit")
    args = parser.parse_args(argv)
    if not args.node:
        parser.error("--node (or NODE_NAME) is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    agent = NetemAgent(
        client.CoreV1Api(), args.node, args.namespace, args.configmap,
        args.device or default_device(), args.leaf,
    )  # fmt: skip
    if args.print:
        print("\n".join(agent.desired()))
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.run(stop, args.period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
