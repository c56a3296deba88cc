"""A throwaway CA, a serving certificate for 127.0.0.1 and the service-account
signing key, made with the openssl command line."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class CertBundle:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path

    def issue(
        self,
        out_dir: Path,
        name: str,
        sans: str | None,
        *,
        subject: str | None = None,
        usage: str = "serverAuth,clientAuth",
    ) -> tuple[Path, Path]:
        """A certificate signed by the CA: `sans` like 'IP:127.0.0.1', `subject` like
        '/CN=system:node:n/O=system:nodes' (default: CN=name)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        key, csr, crt = out_dir / f"{name}.key", out_dir / f"{name}.csr", out_dir / f"{name}.crt"
        ext = out_dir / f"{name}.ext"
        ext.write_text((f"subjectAltName={sans}\n" if sans else "") + f"extendedKeyUsage={usage}\n")
        _openssl(
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            subject or f"/CN={name}",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(self.ca_cert),
            "-CAkey",
            str(self.ca_key),
            "-CAcreateserial",
            "-out",
            str(crt),
            "-days",
            "30",
            "-extfile",
            str(ext),
        )
        return crt, key


KUBERNETES_SERVICE_IP = "10.96.0.1"  # the first address of --service-cluster-ip-range
KUBERNETES_SERVICE_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def make_certs(out_dir: Path, *, address: str = "127.0.0.1") -> CertBundle:
    """The CA, the service-account keys and the API server's serving certificate
    (valid for 127.0.0.1, `address`, the `kubernetes` Service's IP and names)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = out_dir / "ca.key", out_dir / "ca.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_cert),
        "-days",
        "30",
        "-subj",
        "/CN=codex-test-ca",
    )
    sa_key, sa_pub = out_dir / "sa.key", out_dir / "sa.pub"
    _openssl("genrsa", "-out", str(sa_key), "2048")
    _openssl("rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
    bundle = CertBundle(ca_cert, ca_key, out_dir / "apiserver.crt", out_dir / "apiserver.key", sa_key, sa_pub)
    # The names and the Service IP a pod uses for the API server, as in a real cluster.
    sans = [f"IP:{ip}" for ip in dict.fromkeys(("127.0.0.1", address, KUBERNETES_SERVICE_IP))]
    sans += [f"DNS:{name}" for name in ("localhost", *KUBERNETES_SERVICE_NAMES)]
    bundle.issue(out_dir, "apiserver", ",".join(sans))
    return bundle
