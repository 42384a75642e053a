"""ObjNotify's Web Push channel, routed to the axion-push daemon.

ObjNotify.deliver() walks the `def_notify` records due for delivery and
hands each channel its own; the Web Push channel takes the records with
NotifyPushSend = 'Y' and calls send_push() for each. With axion-push the
loop stays as it is. The one line to look at is the import:

    from ObjNotifyPush import send_push            # before, and still valid

works unchanged once `axion-push-client` is installed (it provides the
module `ObjNotifyPush`) and the old module file is gone from Axion's path;
to say explicitly where send_push comes from, write instead:

    from axion_push_client.objnotifypush import send_push

The record's column names below (NotifyUser, NotifyTitle, …) stand for
whatever your `def_notify` table calls them; only NotifyPushSend is given.

Run it against a running daemon (config.yaml as for `axion-push`):

    python objnotify_hook.py [--config config.yaml] USER
"""

import argparse
import logging

from axion_push_client.objnotifypush import send_push  # the one line


def push_channel(record, send=None):
    """The Web Push channel of ObjNotify: one record, one send_push()."""
    send = send or send_push
    return send(
        record["NotifyUser"],
        record["NotifyTitle"],
        record.get("NotifyText") or "",
        url=record.get("NotifyUrl") or "/",
        package=record.get("NotifyPackage") or "base",
    )


def deliver(records, send=None):
    """What ObjNotify.deliver() does for Web Push: every record with
    NotifyPushSend = 'Y' goes to send_push(); returns {NotifyID: sent}."""
    results = {}
    for record in records:
        # ... the other channels (mail, SMS, MQTT event) run here as before ...
        if record.get("NotifyPushSend") == "Y":
            results[record["NotifyID"]] = push_channel(record, send)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="config.yaml [default: $AXION_PUSH_CONFIG, else ./config.local.yaml if it exists, else ./config.yaml]")
    parser.add_argument("user")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.config:
        from axion_push_client import objnotifypush

        objnotifypush.configure(config=args.config)
    records = [
        {"NotifyID": 1, "NotifyUser": args.user, "NotifyTitle": "Ticket #7 updated",
         "NotifyText": "Status: closed", "NotifyUrl": "/tickets/7", "NotifyPushSend": "Y"},
        {"NotifyID": 2, "NotifyUser": args.user, "NotifyTitle": "Mail only",
         "NotifyText": "no push for this one", "NotifyPushSend": "N"},
    ]
    for notify_id, sent in deliver(records).items():
        print(f"def_notify {notify_id}: {'sent' if sent else 'NOT sent'}")


if __name__ == "__main__":
    main()
