"""Kamailio with its TLS module (Debian ``kamailio-tls-modules``) and a PKI made by the test.

``make_pki`` writes, with the ``openssl`` command line, a CA, a server certificate signed by it for the
names asked (``IP:127.0.0.1``, ``DNS:fax.test``...), a client certificate signed by it, and a second,
unrelated CA (for the "untrusted" cases). ``KamailioTls`` is the usual test Kamailio (kamailio.py,
kamailio.cfg.tmpl: registrar with digest auth, record-routing proxy) plus a TLS listener using that
server certificate; ``verify_client`` makes it ask for and require a client certificate from the CA.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.peers.kamailio import KamailioError, KamailioServer, free_udp_tcp_port


def find_tls_module() -> Path | None:
    """tls.so of Kamailio, or None (Debian: apt-get install kamailio-tls-modules)."""
    for base in ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules",
                 "/usr/lib/aarch64-linux-gnu/kamailio/modules", "/usr/local/lib64/kamailio/modules"):
        if (Path(base) / "tls.so").exists():
            return Path(base) / "tls.so"
    return None


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA the tests trust
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing of the above


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise KamailioError("openssl command not found")
    done = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise KamailioError(f"openssl {' '.join(args)} failed: {done.stderr}")


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], san: str, usage: str) -> tuple[Path, Path]:
    cert, key, csr = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=directory)  # fmt: skip
    return cert, key


def make_pki(directory: Path, server_names: tuple[str, ...] = ("IP:127.0.0.1", "DNS:fax.test")) -> Pki:
    """A CA, a server certificate for ``server_names`` (subjectAltName entries), a client one, another CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "test-ca")
    other = _ca(directory, "other-ca")
    server = _leaf(directory, "server", ca, ",".join(server_names), "serverAuth")
    # vfax's own certificate: presented as a client one, and served by its TLS listener
    client = _leaf(directory, "client", ca, "DNS:vfax-client.test,IP:127.0.0.1", "clientAuth,serverAuth")
    return Pki(ca[0], server[0], server[1], client[0], client[1], other[0])


@dataclass
class KamailioTls(KamailioServer):
    """The test Kamailio plus ``tls:host:tls_port`` serving ``pki.server_cert``."""

    pki: Pki | None = None
    tls_port: int = 0
    verify_client: bool = False  # ask for a client certificate signed by pki.ca and refuse without one

    @property
    def tls_uri(self) -> str:
        return f"sip:{self.host}:{self.tls_port};transport=tls"

    def render_config(self) -> str:
        assert self.pki is not None
        module = find_tls_module()
        if module is None:
            raise KamailioError("Kamailio's tls.so is missing (apt-get install kamailio-tls-modules)")
        p = self.pki
        need = "yes" if self.verify_client else "no"
        tls_cfg = self.workdir / "tls.cfg"
        tls_cfg.write_text(
            "[server:default]\nmethod = TLSv1.2+\n"
            f"verify_certificate = {need}\nrequire_certificate = {need}\n"
            f"private_key = {p.server_key}\ncertificate = {p.server_cert}\nca_list = {p.ca}\n\n"
            "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
        )
        text = super().render_config()
        extra = f'enable_tls=yes\nloadmodule "{module}"\nmodparam("tls", "config", "{tls_cfg}")\n'
        text, n = re.subn(r'^loadmodule "kex.so"$', extra + 'loadmodule "kex.so"', text, count=1, flags=re.M)
        if n != 1:
            raise KamailioError("kamailio.cfg.tmpl has no loadmodule \"kex.so\" line to put tls.so before")
        return text

    def command_line(self) -> list[str]:
        if not self.tls_port:
            self.tls_port = free_udp_tcp_port(self.host)
        return [*super().command_line(), "-l", f"tls:{self.host}:{self.tls_port}"]
