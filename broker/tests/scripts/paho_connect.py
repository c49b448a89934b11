"""Connects once with paho-mqtt (a client we did not write) and prints the CONNACK code.

usage: paho_connect.py HOST PORT 311|5 USER|- PASSWORD
Prints the code as paho reports it: paho 2.x maps 3.1.1 return codes to v5
reason codes (5 -> 135, 4 -> 134); the caller accepts either spelling.
"""
import sys
import time

import paho.mqtt.client as mqtt

host, port, ver, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
proto = mqtt.MQTTv5 if ver == "5" else mqtt.MQTTv311
kw = {}
if hasattr(mqtt, "CallbackAPIVersion"):
    kw["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION2
c = mqtt.Client(client_id=f"paho-{user}-{ver}-{pw}", protocol=proto, **kw)
if user != "-":
    c.username_pw_set(user, pw)
res = {}


def on_connect(client, userdata, flags, rc, properties=None):
    res["rc"] = rc.value if hasattr(rc, "value") else int(rc)
    client.disconnect()


c.on_connect = on_connect
c.connect(host, port, 10)
end = time.time() + 10
while "rc" not in res and time.time() < end:
    c.loop(0.1)
print(res.get("rc", "timeout"))
