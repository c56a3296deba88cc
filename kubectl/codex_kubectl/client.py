"""API access with the official (synchronous) kubernetes client, as the
user of the kubeconfig: so whatever the API server decides — RBAC, the
admission policies — it decides about that user.

Every object comes back as the API server's JSON (camelCase dicts), the
shape `kubectl get -o json` shows and codex_kubectl.views renders."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from codex_api import names
from codex_api.common import GROUP, VERSION
from codex_api.status import session_status

SESSIONS = "codexsessions"
APPROVALS = "approvalrequests"
DEFAULT_NAMESPACE = "codex-sessions"
RUNNER_CONTAINER = "runner"
REQUEST_TIMEOUT = 30


class KubeError(Exception):
    """An API call that failed, with the API server's own words."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason

    @classmethod
    def from_api(cls, err: ApiException) -> KubeError:
        body: Any = None
        with contextlib.suppress(TypeError, ValueError):
            body = json.loads(err.body or "")
        if isinstance(body, Mapping) and body.get("message"):
            return cls(str(body["message"]), err.status, str(body.get("reason") or err.reason or ""))
        text = (err.body or "").strip() if isinstance(err.body, str) else ""
        return cls(text or str(err.reason or "request failed"), err.status, str(err.reason or ""))

    def describe(self) -> str:
        """As kubectl prints it: 'Error from server (Forbidden): ...'."""
        if self.status is None:
            return f"error: {self.message}"
        return f"Error from server ({self.reason or self.status}): {self.message}"


class SetupError(Exception):
    """No usable kubeconfig or context."""


@dataclass(frozen=True)
class KubeTarget:
    api_client: Any
    namespace: str
    context: str | None


def connect(kubeconfig: str | None, context: str | None) -> KubeTarget:
    """Load the kubeconfig as kubectl would; the default namespace is the context's, else codex-sessions."""
    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = context or (current or {}).get("name")
        entry = next((c for c in contexts or [] if c.get("name") == chosen), None)
        if context and entry is None:
            known = ", ".join(sorted(str(c.get("name")) for c in contexts or [])) or "none"
            raise SetupError(f'context "{context}" not found in the kubeconfig (contexts: {known})')
        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (ConfigException, OSError) as err:
        where = kubeconfig or "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
        raise SetupError(f"cannot load {where}: {err}") from err
    namespace = ((entry or {}).get("context") or {}).get("namespace") or DEFAULT_NAMESPACE
    return KubeTarget(client.ApiClient(configuration), namespace, chosen)


class CodexApi:
    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.auth = client.AuthenticationV1Api(api_client)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as err:
            raise KubeError.from_api(err) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:  # refused, TLS, DNS, timeouts
            raise KubeError(f"cannot reach the API server: {err}") from err

    def _raw(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A core API answer as the server's JSON, not as generated model objects."""
        response = self._call(fn, *args, _preload_content=False, **kwargs)
        return cast(dict[str, Any], json.loads(response.data))

    # -- reads ---------------------------------------------------------------------
    def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """Every object of the kind, in one namespace or (None) in all."""
        if namespace is None:
            answer = self._call(self.custom.list_cluster_custom_object, GROUP, VERSION, plural)
        else:
            answer = self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural)
        return list(answer.get("items") or [])

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return cast(
                dict[str, Any],
                self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name),
            )
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    def events_for(self, namespace: str, object_names: list[str]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for name in object_names:
            answer = self._raw(
                self.core.list_namespaced_event, namespace, field_selector=f"involvedObject.name={name}"
            )
            events += answer.get("items") or []
        return events

    def runner_pod(self, namespace: str, session: Mapping[str, Any]) -> dict[str, Any] | None:
        """status.podName, else the newest pod labelled with the session."""
        pod_name = session_status(session).pod_name
        if pod_name:
            try:
                return self._raw(self.core.read_namespaced_pod, pod_name, namespace)
            except KubeError as err:
                if err.status != 404:
                    raise
        name = session["metadata"]["name"]
        pods = (
            self._raw(
                self.core.list_namespaced_pod, namespace, label_selector=f"{names.LABEL_SESSION}={name}"
            ).get("items")
            or []
        )

        def attempt(pod: Mapping[str, Any]) -> tuple[int, str]:
            annotations = (pod.get("metadata") or {}).get("annotations") or {}
            raw = annotations.get(names.ANNOTATION_ATTEMPT, "0")
            return (int(raw) if str(raw).isdigit() else 0, pod["metadata"].get("creationTimestamp", ""))

        return max(pods, key=attempt) if pods else None

    def pod_log(self, namespace: str, pod: str) -> str:
        response = self._call(
            self.core.read_namespaced_pod_log,
            pod,
            namespace,
            container=RUNNER_CONTAINER,
            _preload_content=False,
        )
        return bytes(response.data).decode(errors="replace")

    def follow_log(self, namespace: str, pod: str) -> Iterator[str]:
        """The log's lines as they come, until the container ends."""
        try:
            response: Any = self.core.read_namespaced_pod_log(
                pod, namespace, container=RUNNER_CONTAINER, follow=True, _preload_content=False
            )
        except ApiException as err:
            raise KubeError.from_api(err) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise KubeError(f"cannot reach the API server: {err}") from err
        pending = b""
        try:
            for chunk in response.stream(4096, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if pending:
                yield pending.decode(errors="replace")
        finally:
            response.release_conn()

    # -- identity and decisions ----------------------------------------------------
    def whoami(self) -> str:
        """The authenticated username, as the API server sees this kubeconfig (`kubectl auth whoami`)."""
        review = self._call(
            self.auth.create_self_subject_review,
            client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"),
        )
        username = getattr(getattr(getattr(review, "status", None), "user_info", None), "username", None)
        if not username:
            raise KubeError("the API server did not say who you are (SelfSubjectReview without a username)")
        return str(username)

    def patch_approval(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self._call(
                self.custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, APPROVALS, name, patch
            ),
        )
