"""Reference servers: what the gateway's figures are printed next to.

bare.py answers the gateway's gRPC contract with no upstream (gRPC's own
ceiling in Python on this machine); relay.py reads the same fake upstream with
plain aiohttp and nothing else (the ceiling for any Python gateway that reads
an upstream). Both run N workers on one port through SO_REUSEPORT, as the
gateway does (serving.py).
"""
