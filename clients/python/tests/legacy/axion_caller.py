"""Axion code written against the old ObjNotifyPush module, left as it was:
it imports the module by its old name and calls the old functions. The
test runs it in a fresh interpreter with only $AXION_PUSH_CONFIG set."""

import json
import sys

import ObjNotifyPush
from ObjNotifyPush import ObjNotifyPush as ObjNotifyPushClass


def main(user, subscription_json):
    results = {}
    results["subscribe"] = ObjNotifyPush.subscribe(user, "crm", subscription_json, user_agent="Mozilla/5.0 (X11)")
    results["subscriptions"] = ObjNotifyPush.get_subscriptions(user, "crm")
    results["since"] = [s["CreatedAt"].strftime("%Y-%m-%d") for s in results["subscriptions"]]
    results["send_push"] = ObjNotifyPush.send_push(user, "Ticket #7 updated", "Status: closed", url="/tickets/7", package="crm")
    results["class_send_push"] = ObjNotifyPushClass.send_push(user, "Second", "via the class", package="crm", tag="t7")
    endpoint = results["subscriptions"][0]["Endpoint"]
    results["unsubscribe"] = ObjNotifyPush.unsubscribe(user, "crm", endpoint)
    results["after"] = ObjNotifyPush.get_subscriptions(user, "crm")
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
