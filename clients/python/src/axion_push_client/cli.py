"""``axion-push-py``: the old module's command line, through the daemon.

- ``test-push USER [--title T] [--body B] [--package P] [--url U]`` publishes a
  send command (``@group`` works too), prints the result report and exits 0
  when at least one push was delivered and none failed, 1 otherwise — as
  ``axion-push test-push`` does.
- ``generate-vapid [--email ADDR]`` prints a new key pair as a ``base.push``
  block for config.yaml: made here with ``cryptography`` when it is
  installed, else by running the daemon's ``axion-push generate-vapid``.
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
        print(f"axion-push-py: {e}", file=sys.stderr)
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
    if report.get("failed", 0) or not report.get("delivered", 0):
        print(f"{report.get('failed')} of {report.get('subscriptions')} pushes failed", file=sys.stderr)
        return 1
    return 0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _normalize_email(email: str) -> str:
    if email.startswith(("mailto:", "https:")):
        return email
    if "@" in email:
        return f"mailto:{email}"
    raise ValueError(f"--email {email!r} must be mailto:address or https:URL")


def _generate_vapid(args) -> int:
    try:
        email = _normalize_email(args.email)
    except ValueError as e:
        print(f"axion-push-py: {e}", file=sys.stderr)
        return 2
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:
        daemon = shutil.which("axion-push")
        if daemon is None:
            print(
                "axion-push-py: generate-vapid needs `cryptography` "
                "(pip install 'axion-push-client[vapid]') or the `axion-push` binary on PATH",
                file=sys.stderr,
            )
            return 1
        return subprocess.call([daemon, "generate-vapid", "--email", email])
    key = ec.generate_private_key(ec.SECP256R1())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    print("base:")
    print("  push:")
    print(f"    vapid_private_key: {_b64url(scalar)}")
    print(f"    vapid_public_key: {_b64url(public)}")
    print(f"    vapid_email: {email}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="axion-push-py", description="ObjNotifyPush's command line, through axion-push")
    p.add_argument("--config", metavar="PATH", help="config file [default: $AXION_PUSH_CONFIG, else ./config.yaml]")
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


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
