"""A Web Push service on loopback for the tests: HTTPS with a certificate
from a CA of its own, and for every request the checks a real push service
and browser make — the VAPID JWT must verify (ES256, aud, exp, sub) and the
body must decrypt (RFC 8291 aes128gcm, via http_ece) with the simulated
browser's private key. A request that fails either check is answered 400
and recorded with the reason; an unknown endpoint is answered 410. A
browser may be given the statuses its next requests are answered with
(after both checks), as a push service that refuses or is overloaded."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional

import http_ece
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """A simulated browser: its own P-256 key pair and auth secret."""

    name: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    #: Statuses for its next requests, in order; then 201.
    answers: deque = field(default_factory=deque)

    @property
    def key(self) -> str:
        """The endpoint's last path level, unique per browser."""
        return self.endpoint.rsplit("/", 1)[1]

    @property
    def p256dh(self) -> str:
        return b64url(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    @property
    def auth_text(self) -> str:
        return b64url(self.auth)

    def subscription(self) -> dict:
        """What `PushSubscription.toJSON()` gives."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth_text},
        }


@dataclass
class Received:
    #: The last level of the endpoint's path (`Browser.key`).
    browser: str
    headers: Dict[str, str]
    payload: Optional[dict] = None
    vapid: Optional[dict] = None
    error: Optional[str] = None
    status: int = 0


def _make_certificates(directory: Path):
    """A CA and a leaf for 127.0.0.1 signed by it; returns the paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "axion-push test push service CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path = directory / "push-service-ca.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    cert_path = directory / "push-service-cert.pem"
    cert_path.write_bytes(leaf.public_bytes(pem))
    key_path = directory / "push-service-key.pem"
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    return ca_path, cert_path, key_path


def verify_vapid(header: Optional[str], audience: str) -> dict:
    """Checks `Authorization: vapid t=…, k=…`; returns the JWT claims."""
    if not header or not header.startswith("vapid "):
        raise ValueError(f"Authorization is not vapid: {header!r}")
    params = dict(part.strip().split("=", 1) for part in header[len("vapid "):].split(","))
    token, key = params["t"], params["k"]
    head, body, signature = token.split(".")
    if json.loads(unb64url(head)).get("alg") != "ES256":
        raise ValueError("the JWT is not ES256")
    raw = unb64url(signature)
    if len(raw) != 64:
        raise ValueError("the ES256 signature is not 64 bytes")
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{head}.{body}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    claims = json.loads(unb64url(body))
    if claims.get("aud") != audience:
        raise ValueError(f"aud {claims.get('aud')!r} is not {audience!r}")
    if not claims.get("exp") or claims["exp"] <= time.time():
        raise ValueError("the JWT has expired")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise ValueError(f"sub {claims.get('sub')!r} is not a contact")
    claims["k"] = key
    return claims


class PushService:
    def __init__(self, directory: Path):
        self.ca_path, cert, key = _make_certificates(directory)
        self._browsers: Dict[str, Browser] = {}
        self._received: List[Received] = []
        self._changed = threading.Condition()
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = service._handle(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                if status == 201:
                    self.send_header("Location", f"{self.path}/m/{uuid.uuid4()}")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.set_alpn_protocols(["http/1.1"])
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.origin = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def browser(self, name: str, answers=()) -> Browser:
        """A new browser with an endpoint of its own on this service; its
        first requests are answered `answers` (statuses), the rest 201."""
        b = Browser(
            name=name,
            endpoint=f"{self.origin}/push/{name}-{uuid.uuid4().hex[:12]}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=os.urandom(16),
            answers=deque(answers),
        )
        with self._changed:
            self._browsers[b.key] = b
        return b

    def _handle(self, path: str, headers: Dict[str, str], body: bytes) -> int:
        name = path.rsplit("/", 1)[-1]
        browser = self._browsers.get(name)
        lowered = {k.lower(): v for k, v in headers.items()}
        received = Received(browser=name, headers=lowered)
        if browser is None:
            received.status = 410
        else:
            try:
                received.vapid = verify_vapid(lowered.get("authorization"), self.origin)
                if lowered.get("content-encoding") != "aes128gcm":
                    raise ValueError(f"Content-Encoding is {lowered.get('content-encoding')!r}")
                plain = http_ece.decrypt(body, private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm")
                received.payload = json.loads(plain)
                with self._changed:
                    received.status = browser.answers.popleft() if browser.answers else 201
            except Exception as e:  # recorded for the test to see
                received.error = f"{type(e).__name__}: {e}"
                received.status = 400
        with self._changed:
            self._received.append(received)
            self._changed.notify_all()
        return received.status

    def received(self, browser: Optional[Browser] = None) -> List[Received]:
        with self._changed:
            return [r for r in self._received if browser is None or r.browser == browser.key]

    def wait_for(self, browser: Browser, count: int = 1, timeout: float = 15.0) -> List[Received]:
        """Waits until `browser` got `count` requests; returns them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                got = [r for r in self._received if r.browser == browser.key]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{browser.name} got {len(got)} of {count} pushes within {timeout} s")
                self._changed.wait(left)
