"""paho-mqtt 1.6.x and 2.x behind one face.

Axion's own MQTT code (ObjMqtt) was written for paho-mqtt 1.x, so the client
must not force 2.0 on an installation. The two differ where this module
looks: 2.0 wants ``callback_api_version`` and passes reason-code objects
and a ``properties`` argument to the callbacks; 1.x passes integers and has
no public ``connect_timeout``. The client's callbacks take the arguments
both versions share (``on_subscribe``'s ``mid``, ``on_message``'s message)
and ask :func:`connect_refusal` about the CONNACK.
"""

from __future__ import annotations

from typing import Any, Optional

import paho.mqtt.client as mqtt

#: True on paho-mqtt 2.x.
IS_PAHO_2 = hasattr(mqtt, "CallbackAPIVersion")


def new_client(client_id: str, clean_session: bool = True) -> mqtt.Client:
    """An MQTT 3.1.1 client; on paho-mqtt 2.x with the version-2 callbacks."""
    if IS_PAHO_2:
        return mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
    return mqtt.Client(client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311)


def set_connect_timeout(client: mqtt.Client, seconds: float) -> None:
    """How long opening the TCP connection may take."""
    if IS_PAHO_2:
        client.connect_timeout = seconds
    else:
        # 1.x reads this attribute (default 5 s) and has no setter for it.
        client._connect_timeout = seconds


def connect_refusal(reason_code: Any) -> Optional[str]:
    """None when ``on_connect``'s result says connected, else the broker's
    reason in words: a ``ReasonCode`` on 2.x, the integer ``rc`` on 1.x."""
    if isinstance(reason_code, int):
        return None if reason_code == 0 else mqtt.connack_string(reason_code)
    return str(reason_code) if reason_code.is_failure else None
