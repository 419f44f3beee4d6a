"""The probe server (``probe_server``), except that it outlives its stdin, as a careless or hostile
server may: after EOF it keeps running, and it ignores SIGTERM. Only SIGKILL ends it (``docker
stop`` after its timeout, a force-remove by the gateway or by its reaper).

Run as ``python3 -m stubborn_server`` in the test image, or ``python tests/servers/stubborn_server.py``.
"""

from __future__ import annotations

import signal
import sys
import time

import probe_server

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stubborn_server: ready", file=sys.stderr, flush=True)
    probe_server.server.run()  # returns at stdin's EOF...
    print("stubborn_server: stdin closed; staying up anyway", file=sys.stderr, flush=True)
    while True:  # ...and this server does not care
        time.sleep(3600)
