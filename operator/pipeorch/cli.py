"""`pipeorch`: run a control-plane replica or a worker, or look at a running cluster."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import grpc
from pydantic import ValidationError

from pipeorch import __version__, logs
from pipeorch.errors import ConfigError, InvalidInput, PipeorchError
from pipeorch.local import commands as local_commands
from pipeorch.settings import (
    ControlPlaneSettings,
    KubernetesSettings,
    RaftTiming,
    WorkerSettings,
)


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep:
            raise SystemExit(f"{flag} expects NAME=HOST:PORT, got {value!r}")
        out[key] = rest
    return out


def _given(**kwargs: Any) -> dict[str, Any]:
    """Only the flags the user gave, so PIPEORCH_* environment variables fill the rest."""
    return {key: value for key, value in kwargs.items() if value not in (None, [], {})}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeorch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pipeorch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    cp = sub.add_parser("controlplane", help="run one control-plane replica")
    cp.add_argument("--node-id", help="this replica's name, one of the --member names")
    cp.add_argument(
        "--member",
        action="append",
        metavar="NAME=HOST:PORT",
        help="a replica's Raft identity address (repeat for every replica, this one included)",
    )
    cp.add_argument(
        "--dial",
        action="append",
        metavar="NAME=HOST:PORT",
        help="dial that peer at this address instead of its identity (a latency gateway)",
    )
    cp.add_argument("--region", help="region this replica runs in")
    cp.add_argument("--grpc", dest="grpc_listen", metavar="HOST:PORT")
    cp.add_argument("--http", dest="http_listen", metavar="HOST:PORT")
    cp.add_argument("--data-dir", help="where the Raft journal and dump are kept")
    cp.add_argument("--store-endpoint", metavar="HOST:PORT", help="artifact store, for /healthz")
    cp.add_argument("--raft-password-file", help="file with the shared Raft secret")
    cp.add_argument("--raft-min-timeout", type=float, help="election timeout floor, seconds")
    cp.add_argument("--raft-max-timeout", type=float, help="election timeout ceiling, seconds")
    cp.add_argument("--raft-heartbeat", type=float, help="leader heartbeat period, seconds")
    cp.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help="run the Kubernetes operator (on the Raft leader) against this cluster",
    )
    cp.add_argument("--watch-namespace", help="the operator's namespace (default: all)")
    cp.add_argument("--log-json", action="store_true", default=None)
    cp.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    wk = sub.add_parser("worker", help="run a worker agent")
    wk.add_argument("--worker-id", help="stable id (default: generated once, kept in --state-dir)")
    wk.add_argument("--region")
    wk.add_argument(
        "--control-plane",
        action="append",
        metavar="HOST:PORT",
        help="a replica's gRPC address (repeat; nearest first)",
    )
    wk.add_argument("--heartbeat-interval", type=float, metavar="SECONDS")
    wk.add_argument("--http", dest="http_listen", metavar="HOST:PORT")
    wk.add_argument("--state-dir")
    wk.add_argument("--slots", type=int, help="steps run at once")
    wk.add_argument(
        "--store-endpoint",
        metavar="HOST:PORT",
        help="S3/MinIO endpoint for artifacts; credentials come only from "
        "PIPEORCH_WORKER_STORE_ACCESS_KEY and PIPEORCH_WORKER_STORE_SECRET_KEY",
    )
    wk.add_argument("--store-bucket")
    wk.add_argument("--store-region", help="region the object store is in")
    wk.add_argument("--work-dir", help="scratch space for step attempts")
    wk.add_argument(
        "--code-path", action="append", help="directory put on PYTHONPATH for steps (repeat)"
    )
    wk.add_argument("--log-json", action="store_true", default=None)
    wk.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    local_commands.add_parser(sub)

    cl = sub.add_parser("cluster", help="show a replica's view of Raft and the workers")
    cl.add_argument("--control-plane", default="127.0.0.1:7100", metavar="HOST:PORT")

    def client_parser(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--control-plane",
            action="append",
            metavar="HOST:PORT",
            help="a replica's gRPC address (repeat; default $PIPEORCH_CONTROL_PLANE, "
            "comma-separated, else 127.0.0.1:7100)",
        )
        return p

    sb = client_parser("submit", "submit a Pipeline file (YAML or JSON; - for stdin)")
    sb.add_argument("file", type=Path)
    sb.add_argument("--wait", action="store_true", help="follow progress until it finishes")
    gt = client_parser("get", "list pipelines or tasks")
    gt.add_argument("kind", choices=["pipelines", "pipeline", "tasks", "task"])
    gt.add_argument("pipeline", nargs="?", help="only this pipeline's tasks")
    gt.add_argument("-o", "--output", choices=["table", "wide", "json"], default="table")
    ds = client_parser("describe", "a pipeline's tasks, where they ran, and its outputs")
    ds.add_argument("kind", choices=["pipeline"])
    ds.add_argument("name")
    lg = client_parser("logs", "a step's log")
    lg.add_argument("pipeline")
    lg.add_argument("step")
    cn = client_parser("cancel", "cancel a pipeline")
    cn.add_argument("pipeline")
    return parser


def _client_command(args: argparse.Namespace) -> int:
    from pipeorch import console

    client = console.Client(args.control_plane or console.default_addresses())
    out = sys.stdout
    try:
        if args.command == "submit":
            return console.submit(client, args.file, args.wait, out)
        if args.command == "get":
            kind = "pipelines" if args.kind.startswith("pipeline") else "tasks"
            return console.get(client, kind, args.pipeline, args.output, out)
        if args.command == "describe":
            return console.describe(client, args.name, out)
        if args.command == "logs":
            return console.logs(client, args.pipeline, args.step, out)
        return console.cancel(client, args.pipeline, out)
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except (PipeorchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _controlplane_settings(args: argparse.Namespace) -> ControlPlaneSettings:
    timing = _given(
        min_timeout=args.raft_min_timeout,
        max_timeout=args.raft_max_timeout,
        append_entries_period=args.raft_heartbeat,
    )
    return ControlPlaneSettings(
        **_given(
            node_id=args.node_id,
            members=_pairs(args.member, "--member"),
            dial=_pairs(args.dial, "--dial"),
            region=args.region,
            grpc_listen=args.grpc_listen,
            http_listen=args.http_listen,
            data_dir=args.data_dir,
            store_endpoint=args.store_endpoint,
            raft_password_file=args.raft_password_file,
            log_json=args.log_json,
            log_level=args.log_level,
            raft=RaftTiming(**timing) if timing else None,
            kubernetes=_kubernetes_settings(args),
        )
    )


def _kubernetes_settings(args: argparse.Namespace) -> KubernetesSettings | None:
    """--kubeconfig turns the operator on; otherwise PIPEORCH_K8S_* decide (off by default)."""
    if args.kubeconfig is None and args.watch_namespace is None:
        return None
    return KubernetesSettings(
        **_given(enabled=True, kubeconfig=args.kubeconfig, namespace=args.watch_namespace)
    )


def _worker_settings(args: argparse.Namespace) -> WorkerSettings:
    return WorkerSettings(
        **_given(
            worker_id=args.worker_id,
            region=args.region,
            control_plane=args.control_plane,
            heartbeat_interval=args.heartbeat_interval,
            http_listen=args.http_listen,
            state_dir=args.state_dir,
            slots=args.slots,
            store_endpoint=args.store_endpoint,
            store_bucket=args.store_bucket,
            store_region=args.store_region,
            work_dir=args.work_dir,
            code_path=args.code_path,
            log_json=args.log_json,
            log_level=args.log_level,
        )
    )


def _show_cluster(address: str) -> int:
    from pipeorch.v1 import pipeorch_pb2 as pb
    from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            state = pb_grpc.ControlServiceStub(channel).ClusterState(
                pb.ClusterStateRequest(), timeout=5
            )
        except grpc.RpcError as e:
            print(f"error: {address}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    print(
        f"replica {state.node_id} ({state.raft_state}), leader {state.leader or '-'}, "
        f"term {state.term}, commit {state.commit_index}, applied {state.applied_index}"
    )
    for peer in state.peers:
        link = "connected" if peer.connected else "DISCONNECTED"
        print(f"  peer {peer.node_id:<8} {peer.address:<22} {link:<12} match {peer.match_index}")
    print(f"{'WORKER':<24} {'REGION':<8} {'STATUS':<8} ADDRESS")
    for worker in state.workers:
        status = pb.WorkerStatus.Name(worker.status).removeprefix("WORKER_STATUS_").lower()
        print(f"{worker.worker_id:<24} {worker.region:<8} {status:<8} {worker.address}")
    return 0


def _serve(server: Coroutine[Any, Any, None]) -> None:
    """Run a long-lived server on uvloop: libuv's event loop spends less CPU per RPC and per
    wake-up than asyncio's own, which shows in every step's round trip."""
    import uvloop

    # What start-up made (modules, classes, functions: some 70,000 objects, a full collection
    # of 30 ms) lives as long as the process. Frozen, the collector's full passes leave it out
    # and walk only what serving created.
    gc.collect()
    gc.freeze()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `pipeorch get tasks | head`: the reader left. Say nothing more (stdout is gone) and
        # exit as a process killed by SIGPIPE would, without Python's traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    command = args.command
    if command == "local":
        command = f"local {args.local_command}"
    try:
        if args.command == "controlplane":
            from pipeorch.controlplane.server import serve

            cp_settings = _controlplane_settings(args)
            logs.configure(cp_settings.node_id, cp_settings.log_level, cp_settings.log_json)
            _serve(serve(cp_settings))
        elif args.command == "worker":
            from pipeorch_worker.main import serve as serve_worker

            wk_settings = _worker_settings(args)
            logs.configure(
                f"worker/{wk_settings.region}", wk_settings.log_level, wk_settings.log_json
            )
            _serve(serve_worker(wk_settings))
        elif args.command in ("submit", "get", "describe", "logs", "cancel"):
            return _client_command(args)
        elif args.command == "local":
            return local_commands.run(args, sys.stdout)
        elif args.command == "cluster":
            return _show_cluster(args.control_plane)
    except (ValidationError, ConfigError) as e:
        print(f"pipeorch {command}: invalid settings:\n{e}", file=sys.stderr)
        return 2
    except InvalidInput as e:
        print(f"pipeorch {command}: {e}", file=sys.stderr)
        return 2
    except PipeorchError as e:
        print(f"pipeorch {command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
