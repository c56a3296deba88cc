"""The operator's mutating admission webhook: options, server and helpers.

The webhook only *stamps* identity so that people need not type it:

- an ApprovalRequest UPDATE that newly sets ``spec.decision`` gets
  ``spec.decidedBy`` = the authenticated user (whatever was typed is overwritten),
  unless the caller is a trusted requester (the gateway) relaying the decision
  of the user it names;
- a CodexSession CREATE gets ``spec.requestedBy`` = the authenticated user,
  unless the caller is a trusted requester (the gateway) naming someone.

The ValidatingAdmissionPolicies of ``codex_devenv.generate.admission`` (shipped as manifests) are the
enforcement: they run after every mutating webhook and check the stamped
value against ``request.userInfo`` again. So the webhook is a convenience,
and the shipped configuration (manifests/base/webhook.yaml) lets requests
through when it is down (failurePolicy Ignore).

The operator never writes webhook configurations: they ship as manifests,
and the operator needs no RBAC on admissionregistration. The server is
``admission_server`` (not kopf's): it runs in every replica, leading or not,
at the paths below, which the manifests name.
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import admission

if TYPE_CHECKING:  # kopf is imported only by `codex-operator run`: `config validate` stays fast
    import kopf


DEFAULT_TRUSTED_REQUESTER = "system:serviceaccount:codex-system:codex-gateway"
DEFAULT_HOST = "0.0.0.0"  # in-cluster, the Service reaches the pod's address

# The webhook's paths are "/<id>" (see `path`); the manifests name them.
DECIDER_HANDLER = "stamp-decider"
REQUESTER_HANDLER = "stamp-requester"


def path(handler_id: str) -> str:
    """The URL path a stamp is served at (``clientConfig.service.path``)."""
    return "/" + urllib.parse.quote(handler_id)


@dataclass(frozen=True)
class WebhookOptions:
    port: int = 0  # 0: no webhook server, no mutate handlers
    host: str = DEFAULT_HOST
    cert: Path | None = None
    key: Path | None = None
    trusted_requesters: frozenset[str] = field(default_factory=lambda: frozenset({DEFAULT_TRUSTED_REQUESTER}))

    @property
    def enabled(self) -> bool:
        return self.port != 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "identity webhook",
        "The mutating webhook that stamps spec.decidedBy / spec.requestedBy from the caller's identity. "
        "The webhook configuration itself ships as a manifest (manifests/base/webhook.yaml).",
    )
    group.add_argument(
        "--webhook-port",
        type=int,
        default=0,
        help="HTTPS port of the identity-stamping webhook (0: no webhook server; default 0)",
    )
    group.add_argument(
        "--webhook-host",
        default=DEFAULT_HOST,
        help=f"address the webhook server listens on (default {DEFAULT_HOST})",
    )
    group.add_argument("--webhook-cert", type=Path, help="PEM serving certificate (chain) of the webhook")
    group.add_argument("--webhook-key", type=Path, help="PEM private key of --webhook-cert")
    group.add_argument(
        "--trusted-requester",
        action="append",
        default=None,
        metavar="USERNAME",
        help=(
            "a user allowed to name another user as spec.requestedBy, and as spec.decidedBy when relaying "
            "that user's decision on their own action (repeatable; keep in step with the "
            f"policy's trustedRequesters); default: {DEFAULT_TRUSTED_REQUESTER}"
        ),
    )


def options_from_args(args: argparse.Namespace) -> WebhookOptions:
    """The parsed flags as options; ValueError with a one-line reason when they do not fit together."""
    port: int = args.webhook_port
    if not 0 <= port <= 65535:
        raise ValueError(f"--webhook-port {port}: must be 0 (off) or a port number")
    trusted = args.trusted_requester if args.trusted_requester is not None else [DEFAULT_TRUSTED_REQUESTER]
    for name in trusted:
        if not name or name != name.strip():
            raise ValueError(f"--trusted-requester {name!r}: must be a username without padding")
    cert, key = args.webhook_cert, args.webhook_key
    if port:
        if cert is None or key is None:
            raise ValueError("--webhook-port needs --webhook-cert and --webhook-key (PEM files)")
        for flag, file in (("--webhook-cert", cert), ("--webhook-key", key)):
            if not file.is_file():
                raise ValueError(f"{flag} {file}: no such file")
    return WebhookOptions(
        port=port, host=args.webhook_host, cert=cert, key=key, trusted_requesters=frozenset(trusted)
    )


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf serves no webhook (admission_server does, in every replica) and never
    manages webhook configurations (they ship as manifests)."""
    settings.admission.server = None
    settings.admission.managed = None


def username(userinfo: Mapping[str, Any] | None) -> str:
    name = (userinfo or {}).get("username")
    return name if isinstance(name, str) else ""


def decider_changes(
    operation: str | None,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any] | None,
    trusted: frozenset[str],
) -> dict[str, Any]:
    """Spec changes for an ApprovalRequest admission request (UPDATE only)."""
    if operation != "UPDATE" or new is None:
        return {}
    return admission.stamp_decider(old, new, username(userinfo), trusted)


def requester_changes(
    operation: str | None,
    new: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any] | None,
    trusted: frozenset[str],
) -> dict[str, Any]:
    """Spec changes for a CodexSession admission request (CREATE only)."""
    if operation != "CREATE" or new is None:
        return {}
    return admission.stamp_requester(new, username(userinfo), set(trusted))
