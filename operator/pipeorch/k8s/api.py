"""The few Kubernetes calls the operator makes, over the official (synchronous) client.

Every call runs in a worker thread (``asyncio.to_thread``) so that neither kopf's loop nor the
status mirror blocks on the network, and every ``ApiException`` becomes a
``pipeorch.errors.KubernetesError`` carrying the HTTP status; a server that cannot be reached
becomes ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from pipeorch.errors import ConfigError, KubernetesError, Unavailable
from pipeorch.k8s.manifests import API_VERSION, GROUP, LATENCY_CONFIGMAP, Manifest

T = TypeVar("T")
VERSION = API_VERSION.split("/")[1]
#: Event reasons (phases, refusals) that `kubectl get events` should show as warnings.
WARNINGS = frozenset({"Failed", "Invalid", "Cancelled", "Skipped", "Conflict"})
#: (connect, read) seconds of every call.
REQUEST_TIMEOUT = (5.0, 30.0)
#: Who the API server records as the writer of what the operator writes.
FIELD_MANAGER = "pipeorch-operator"


def load_configuration(kubeconfig: Path | None) -> Any:
    """The client configuration: the file given, else in-cluster, else $KUBECONFIG."""
    cfg = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)
    except (config.ConfigException, OSError) as e:
        where = kubeconfig or "the pod's service account or $KUBECONFIG"
        raise ConfigError(f"cannot load Kubernetes credentials from {where}: {e}") from e
    return cfg


def connection_info(cfg: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from the client configuration (as kopf.login_via_client does, but
    from our configuration rather than the process-wide default)."""
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


def _translate(call: Callable[[], T], what: str) -> T:
    try:
        return call()
    except ApiException as e:
        raise KubernetesError(f"{what}: {e.status} {e.reason}: {_message(e)}", e.status) from e
    except HTTPError as e:
        raise Unavailable(f"{what}: Kubernetes API unreachable: {e}") from e


def _message(e: ApiException) -> str:
    import json

    try:
        return str(json.loads(e.body).get("message", ""))
    except (TypeError, ValueError):
        return str(e.body or "")[:200]


class Kube:
    """Typed, translated, awaitable calls; one ApiClient per operator run."""

    def __init__(self, cfg: Any) -> None:
        self._api = client.ApiClient(cfg)
        self._custom = client.CustomObjectsApi(self._api)
        self._core = client.CoreV1Api(self._api)
        self._apps = client.AppsV1Api(self._api)

    def close(self) -> None:
        self._api.close()

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Bounded: a call hanging on a dead API server would also hang the operator's stop.
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        bound = functools.partial(fn, *args, **kwargs)
        return await asyncio.to_thread(_translate, bound, what)

    # ---- pipeorch.dev objects ------------------------------------------------------------------

    async def create_custom(self, plural: str, body: Manifest) -> bool:
        """Create; False if an object of that name already exists (409)."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            await self._call(
                f"create {plural}/{name}",
                self._custom.create_namespaced_custom_object,
                GROUP, VERSION, ns, plural, body, field_manager=FIELD_MANAGER,
            )  # fmt: skip
        except KubernetesError as e:
            if e.status == 409:
                return False
            raise
        return True

    async def get_custom(self, plural: str, namespace: str, name: str) -> Manifest:
        result: Manifest = await self._call(
            f"get {plural}/{name}",
            self._custom.get_namespaced_custom_object,
            GROUP, VERSION, namespace, plural, name,
        )  # fmt: skip
        return result

    async def list_custom(
        self, plural: str, namespace: str, label_selector: str = ""
    ) -> list[Manifest]:
        result = await self._call(
            f"list {plural}",
            self._custom.list_namespaced_custom_object,
            GROUP, VERSION, namespace, plural, label_selector=label_selector,
        )  # fmt: skip
        items: list[Manifest] = result["items"]
        return items

    async def list_pipelines(self, namespace: str | None) -> list[Manifest]:
        """Every Pipeline in ``namespace``, or in all namespaces (a quorum read)."""
        if namespace is None:
            result = await self._call(
                "list pipelines",
                self._custom.list_cluster_custom_object, GROUP, VERSION, "pipelines",
            )  # fmt: skip
        else:
            result = await self._call(
                "list pipelines",
                self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "pipelines",
            )  # fmt: skip
        items: list[Manifest] = result["items"]
        return items

    async def patch_status(self, plural: str, namespace: str, name: str, status: Manifest) -> None:
        """Merge-patch the status subresource (a list such as conditions is replaced whole)."""
        await self._call(
            f"patch {plural}/{name}/status",
            self._custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, plural, name, {"status": status},
            field_manager=FIELD_MANAGER,
        )  # fmt: skip

    # ---- Deployments, ConfigMaps, Events -----------------------------------------------------

    async def apply_deployment(self, body: Manifest) -> None:
        """Create, or bring an existing one to ``body`` (idempotent)."""
        await self._create_or_patch(
            "deployment",
            body,
            self._apps.create_namespaced_deployment,
            self._apps.patch_namespaced_deployment,
        )

    async def apply_configmap(self, body: Manifest) -> None:
        """Create, or bring an existing one to ``body`` (idempotent)."""
        await self._create_or_patch(
            "configmap",
            body,
            self._core.create_namespaced_config_map,
            self._core.patch_namespaced_config_map,
        )

    async def _create_or_patch(
        self, kind: str, body: Manifest, create: Callable[..., Any], patch: Callable[..., Any]
    ) -> None:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            await self._call(f"create {kind}/{name}", create, ns, body, field_manager=FIELD_MANAGER)
        except KubernetesError as e:
            if e.status != 409:  # 409: it exists; bring it to body
                raise
            await self._call(
                f"patch {kind}/{name}", patch, name, ns, body, field_manager=FIELD_MANAGER
            )

    async def latency_configmap(self, namespace: str) -> Manifest | None:
        try:
            result = await self._call(
                f"get configmap/{LATENCY_CONFIGMAP}",
                self._core.read_namespaced_config_map, LATENCY_CONFIGMAP, namespace,
            )  # fmt: skip
        except KubernetesError as e:
            if e.status == 404:
                return None
            raise
        data: Manifest = self._api.sanitize_for_serialization(result)
        return data

    async def event(self, involved: Manifest, kind: str, reason: str, message: str) -> None:
        """A core/v1 Event on ``involved`` (its metadata), as `kubectl describe` shows."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ns = involved["namespace"]
        body = {
            "metadata": {"generateName": f"{involved['name']}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": kind,
                "name": involved["name"],
                "namespace": ns,
                "uid": involved.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if reason in WARNINGS else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": FIELD_MANAGER},
        }
        await self._call(
            f"create event for {involved['name']}", self._core.create_namespaced_event, ns, body
        )
