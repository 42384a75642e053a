"""The old module's command line, through the daemon: ``axion-push-py``,
``python -m axion_push_client``, and ``python ObjNotifyPush.py`` (the old
module's file, runnable as it was).

- ``test-push USER [--title T] [--body B] [--package P] [--url U]`` publishes a
  send command (``@group`` works too), prints the result report, says what
  it means in the words of ``axion-push test-push``, and exits as it does: 0
  when a push was delivered and none failed, expired or waits for a retry, 1
  otherwise, 2 on a usage error.
- ``generate-vapid [--email ADDR]`` prints a new key pair as a ``base.push``
  block for config.yaml, as py_vapid users know it: the private key as PEM
  (PKCS#8, what ``vapid --gen`` writes), the public key in base64url (its
  ``--applicationServerKey``). The key is made here with ``cryptography``
  when it is installed, else by the daemon's ``axion-push generate-vapid``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import shutil
import subprocess
import sys
from typing import List, Optional

from .client import DEFAULT_PACKAGE, AxionPush
from .errors import AxionPushError


def _test_push(args) -> int:
    client = AxionPush(config=args.config, timeout=args.timeout)
    try:
        report = client.send(args.user, {"title": args.title, "body": args.body, "url": args.url}, args.package)
    except (AxionPushError, ValueError) as e:
        print(f"{args.prog}: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(report, indent=2))
    if not report.get("ok"):
        print(f"the daemon refused the notification: {report.get('error')}", file=sys.stderr)
        return 1
    if report.get("subscriptions", 0) == 0:
        print(
            f"{args.user} has no active subscription in package {args.package}: "
            "nothing was pushed (subscribe a browser first)",
            file=sys.stderr,
        )
        return 1
    lines, success = _verdict(report)
    for line in lines:
        print(line, file=sys.stderr)
    return 0 if success else 1


def _pushes(n: int) -> str:
    return f"{n} push" if n == 1 else f"{n} pushes"


def _causes(causes: dict) -> str:
    """A report's ``failures`` or ``retries`` in words: one cause alone, or
    each with its count."""
    if not causes:
        return "the report names no cause"
    if len(causes) == 1:
        return _explain(next(iter(causes)))
    return "; ".join(f"{n} × {_explain(cause)}" for cause, n in sorted(causes.items()))


def _explain(cause: str) -> str:
    """One cause of a report (an HTTP status or a word), as ``axion-push
    test-push`` words it."""
    words = {
        "timeout": "the push service did not answer within delivery.request_timeout",
        "connection": "no connection to the push service (name resolution, network or TLS)",
        "policy": "the endpoint no longer passes the endpoint policy (axion_push.endpoints)",
        "endpoint": "the stored endpoint cannot be used",
        "keys": "the stored subscription keys cannot be used",
        "paused": "its push service is paused after failing repeatedly; the daemon tries again when it recovers",
        "database": "the daemon could not read the message from its database; it tries again "
        "once the database answers",
        "stale": "the push service refused this subscription alone for subscriptions.expire_after "
        "while taking others' pushes: deactivated as stale",
        "400": "the push service answered 400: it found the request malformed",
        "413": "the push service answered 413: the notification is too large for it",
        "429": "the push service answered 429: too many requests",
    }
    if cause in words:
        return words[cause]
    if cause in ("401", "403"):
        return (
            f"the push service answered {cause}: the VAPID key pair or vapid_email is wrong, "
            "or the browser subscribed with another key"
        )
    if cause.isdigit() and len(cause) == 3 and cause.startswith("5"):
        return f"the push service answered {cause}: an error on its side"
    if cause.isdigit():
        return f"the push service answered {cause}"
    return cause


def _verdict(report: dict):
    """The first report in sentences, one per kind of outcome, and whether
    it is a success: something delivered and nothing failed, expired or
    waiting for a retry — ``axion-push test-push``'s rule and words."""
    delivered, failed = report.get("delivered", 0), report.get("failed", 0)
    deactivated, expired, queued = report.get("deactivated", 0), report.get("expired", 0), report.get("queued", 0)
    retries = report.get("retries") or {}
    lines = []
    if delivered:
        lines.append(f"{_pushes(delivered)} delivered")
    if failed:
        lines.append(f"{_pushes(failed)} failed: {_causes(report.get('failures') or {})}")
    if deactivated:
        subscriptions = "1 subscription" if deactivated == 1 else f"{deactivated} subscriptions"
        lines.append(f"{subscriptions} gone (the push service answered 404 or 410): deactivated")
    if expired:
        met = f" (its attempts met: {_causes(retries)})" if retries and not queued else ""
        lines.append(f"{_pushes(expired)} expired: the message's TTL ran out before a push service took it{met}")
    if queued:
        why = (
            _causes(retries)
            if retries
            else "the push service could not take it yet (a 429, a 5xx, a timeout or no connection)"
        )
        lines.append(
            f"{_pushes(queued)} queued for retry: {why}. The daemon retries until the message's TTL runs out, "
            "then publishes a final report"
        )
    success = delivered > 0 and not failed and not expired and not queued
    return lines, success


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _normalize_email(email: str) -> str:
    if email.startswith(("mailto:", "https:")):
        return email
    if "@" in email:
        return f"mailto:{email}"
    raise ValueError(f"--email {email!r} must be mailto:address or https:URL")


# PKCS#8 for a P-256 key, as py_vapid and OpenSSL write it: the algorithm
# (id-ecPublicKey, prime256v1), then the SEC1 ECPrivateKey with the 32-byte
# scalar and the 65-byte public point (RFC 5208, RFC 5915).
_PKCS8_BEFORE_SCALAR = bytes.fromhex(
    "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420"
)
_PKCS8_BEFORE_POINT = bytes.fromhex("a144034200")


def pkcs8_pem(scalar: bytes, public: bytes) -> str:
    """The PEM text of a P-256 private key (``BEGIN PRIVATE KEY``)."""
    if len(scalar) != 32 or len(public) != 65 or public[0] != 4:
        raise ValueError("a P-256 key is a 32-byte scalar and a 65-byte uncompressed point")
    der = _PKCS8_BEFORE_SCALAR + scalar + _PKCS8_BEFORE_POINT + public
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN PRIVATE KEY-----", *lines, "-----END PRIVATE KEY-----"])


def _key_with_cryptography():
    """(scalar, public point), or None without ``cryptography``."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        return None
    key = ec.generate_private_key(ec.SECP256R1())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return scalar, public


def _key_from_the_daemon(prog: str, email: str):
    """(scalar, public point) from ``axion-push generate-vapid``, or None."""
    daemon = shutil.which("axion-push")
    if daemon is None:
        print(
            f"{prog}: generate-vapid needs `cryptography` "
            "(pip install 'axion-push-client[vapid]') or the `axion-push` binary on PATH",
            file=sys.stderr,
        )
        return None
    run = subprocess.run([daemon, "generate-vapid", "--email", email], capture_output=True, text=True)
    if run.returncode != 0:
        print(f"{prog}: axion-push generate-vapid failed: {run.stderr.strip()}", file=sys.stderr)
        return None
    values = dict(line.strip().split(": ", 1) for line in run.stdout.splitlines() if ": " in line)
    return _unb64url(values["vapid_private_key"]), _unb64url(values["vapid_public_key"])


def _generate_vapid(args) -> int:
    try:
        email = _normalize_email(args.email)
    except ValueError as e:
        print(f"{args.prog}: {e}", file=sys.stderr)
        return 2
    key = _key_with_cryptography() or _key_from_the_daemon(args.prog, email)
    if key is None:
        return 1
    scalar, public = key
    print("base:")
    print("  push:")
    print("    vapid_private_key: |")
    for line in pkcs8_pem(scalar, public).splitlines():
        print(f"      {line}")
    print(f"    vapid_public_key: {_b64url(public)}")
    print(f"    vapid_email: {email}")
    return 0


def parser(prog: str = "axion-push-py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="ObjNotifyPush's command line, through axion-push")
    p.set_defaults(prog=prog)
    p.add_argument("--config", metavar="PATH", help="config file [default: $AXION_PUSH_CONFIG, else ./config.local.yaml if it exists, else ./config.yaml]")
    verbs = p.add_subparsers(dest="verb", required=True)
    t = verbs.add_parser("test-push", help="send a notification through the daemon and print its result")
    t.add_argument("user", help="Axion user to notify (or @group)")
    t.add_argument("--title", default="axion-push test")
    t.add_argument("--body", default="If you can read this, Web Push works.")
    t.add_argument("--package", default=DEFAULT_PACKAGE)
    t.add_argument("--url", default="/", help="page opened when the notification is clicked")
    t.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the result report")
    t.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    t.set_defaults(run=_test_push)
    g = verbs.add_parser("generate-vapid", help="print a new VAPID key pair as a config.yaml block")
    g.add_argument("--email", default="mailto:admin@example.com", help="the contact to put in vapid_email")
    g.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    g.set_defaults(run=_generate_vapid)
    return p


def main(argv: Optional[List[str]] = None, prog: str = "axion-push-py") -> int:
    """Runs a verb; returns the exit code (argparse exits 2 on a usage error)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser(prog).parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
