"""Persistent volumes for the test node: binds every pending
PersistentVolumeClaim to a hostPath PersistentVolume made for it, the way
kind's local-path provisioner does. The volume's `home` and `workspace`
directories (the runner mounts them as subPaths) are created owned by the
runner's uid, since hostPath volumes get no fsGroup."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

SUBDIRS = ("home", "workspace")


class LocalVolumeProvisioner:
    def __init__(
        self, kube_client: Any, root: Path, *, owner_uid: int = 10001, interval: float = 0.2
    ) -> None:
        self.core = client.CoreV1Api(kube_client)
        self.root = root
        self.owner_uid = owner_uid
        self.interval = interval
        self.provisioned: dict[str, Path] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-volumes", daemon=True)

    def start(self) -> LocalVolumeProvisioner:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                claims: list[Any] = self.core.list_persistent_volume_claim_for_all_namespaces().items
                for claim in claims:
                    if claim.status.phase == "Pending" and not claim.spec.volume_name:
                        self._provision(claim)
            except Exception:  # the API server may be restarting; try again next round
                pass
            self._stop.wait(self.interval)

    def _provision(self, claim: Any) -> None:
        ns, name = claim.metadata.namespace, claim.metadata.name
        pv_name = re.sub(r"[^a-z0-9.-]", "-", f"local-{ns}-{name}")[:253]
        if pv_name in self.provisioned:
            return
        path = self.root / ns / name
        for sub in SUBDIRS:
            (path / sub).mkdir(parents=True, exist_ok=True)
            os.chown(path / sub, self.owner_uid, self.owner_uid)
        volume: Any = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "labels": {"codex.techsapo.io/local-volume": "true"}},
            "spec": {
                "capacity": {"storage": claim.spec.resources.requests.get("storage", "1Gi")},
                "accessModes": claim.spec.access_modes or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": claim.spec.storage_class_name or "",
                "claimRef": {"namespace": ns, "name": name, "uid": claim.metadata.uid},
                "hostPath": {"path": str(path), "type": "Directory"},
            },
        }
        try:
            self.core.create_persistent_volume(volume)
        except ApiException as err:
            if err.status != 409:
                raise
        self.provisioned[pv_name] = path

    def cleanup(self) -> None:
        """Delete the volumes this provisioner made, and their directories."""
        for pv_name in list(self.provisioned):
            with contextlib.suppress(ApiException):
                self.core.delete_persistent_volume(pv_name)
        shutil.rmtree(self.root, ignore_errors=True)
