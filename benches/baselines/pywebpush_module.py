"""The Python module's way of delivering, as a baseline for the load benchmark.

Subscribes to every send command, publishes the real-time event, then sends
one push at a time to each of the user's subscriptions with pywebpush's
`webpush()` (a new HTTPS connection per push), as ObjNotifyPush did. The
subscriptions come from a JSON file read at start rather than from a database
per send: an advantage over the module, never a handicap.

Prints `ready` once subscribed. Run by `cargo bench --bench load`.
"""

import argparse
import json
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from pywebpush import WebPushException, webpush

SENDS = "axion/+/push/+/send"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True, help="HOST:PORT")
    parser.add_argument("--subscriptions", required=True)
    parser.add_argument("--vapid-private-key", required=True)
    parser.add_argument("--vapid-public-key", required=True)
    parser.add_argument("--vapid-email", required=True)
    args = parser.parse_args()
    with open(args.subscriptions) as f:
        subscriptions = json.load(f)
    host, port = args.broker.rsplit(":", 1)

    def on_connect(client, userdata, flags, rc):
        client.subscribe(SENDS, qos=1)

    def on_subscribe(client, userdata, mid, granted_qos):
        print("ready", flush=True)

    def on_message(client, userdata, message):
        _, package, _, user, _ = message.topic.split("/")
        notification = json.loads(message.payload)
        notification.setdefault("id", str(uuid.uuid4()))
        notification["ts"] = time.time()
        client.publish(f"axion/{package}/push/{user}", json.dumps(notification), qos=1)
        payload = json.dumps(
            {
                "title": notification["title"],
                "body": notification.get("body", ""),
                "url": notification.get("url", "/"),
                "id": notification["id"],
            }
        )
        headers = {"Urgency": notification.get("urgency", "normal")}
        if "topic" in notification:
            headers["Topic"] = notification["topic"]
        for subscription in subscriptions.get(f"{package}/{user}", []):
            try:
                webpush(
                    subscription,
                    payload,
                    vapid_private_key=args.vapid_private_key,
                    vapid_claims={"sub": args.vapid_email},
                    ttl=notification.get("ttl", 86400),
                    headers=dict(headers),
                    timeout=10,
                )
            except WebPushException as e:
                print(f"push failed: {e}", file=sys.stderr, flush=True)

    client = mqtt.Client(client_id=f"pywebpush-baseline-{uuid.uuid4().hex}", clean_session=True)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, int(port), keepalive=30)
    client.loop_forever()


if __name__ == "__main__":
    main()
