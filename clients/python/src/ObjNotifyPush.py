"""ObjNotifyPush under its old name: Axion code that imported the Python
module keeps working, now answered by the axion-push daemon.

Both spellings callers used work::

    import ObjNotifyPush
    ObjNotifyPush.send_push("alice", "Disk full", "db1 at 95%")

    from ObjNotifyPush import ObjNotifyPush
    ObjNotifyPush.send_push("alice", "Disk full", "db1 at 95%")

See :mod:`axion_push_client.objnotifypush` for the functions.

Put this file where the old one was (``factory.core/ObjNotifyPush.py``) and
the old command line works too, through the daemon:

    python factory.core/ObjNotifyPush.py test-push admin --title "Alert" --body "Server check"
    python factory.core/ObjNotifyPush.py generate-vapid

(see :mod:`axion_push_client.cli`; the exit codes are `axion-push
test-push`'s).
"""

from axion_push_client.objnotifypush import *  # noqa: F401,F403
from axion_push_client.objnotifypush import (
    add_group_members,
    get_subscriptions,
    remove_group_members,
    send_push,
    send_push_to_group,
    set_group_members,
    subscribe,
    subscribe_result,
    unsubscribe,
)


class ObjNotifyPush:
    """The same functions as static methods, for ``ObjNotifyPush.send_push``
    after ``from ObjNotifyPush import ObjNotifyPush``."""

    send_push = staticmethod(send_push)
    send_push_to_group = staticmethod(send_push_to_group)
    subscribe = staticmethod(subscribe)
    subscribe_result = staticmethod(subscribe_result)
    unsubscribe = staticmethod(unsubscribe)
    get_subscriptions = staticmethod(get_subscriptions)
    set_group_members = staticmethod(set_group_members)
    add_group_members = staticmethod(add_group_members)
    remove_group_members = staticmethod(remove_group_members)


if __name__ == "__main__":
    import os
    import sys

    from axion_push_client.cli import main

    sys.exit(main(prog=os.path.basename(sys.argv[0])))
