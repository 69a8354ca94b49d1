"""Bench-only start-up hook: connector.validation.OFFLOAD_BYTES from BENCH_OFFLOAD_BYTES, in every server process.

bench/hostile_write.py puts this directory on the PYTHONPATH of one `coursewire serve`, so that process
and the uvicorn workers it spawns (they inherit the environment, and Python imports `sitecustomize` at
start-up) parse and validate every JSON body on the event loop: the bench measures what offloading
buys. Product code has no such setting. Without BENCH_OFFLOAD_BYTES this file does nothing.
"""

import os
import sys

if os.environ.get("BENCH_OFFLOAD_BYTES"):
    from connector import validation

    if not hasattr(validation, "OFFLOAD_BYTES"):
        raise SystemExit("bench: connector.validation has no OFFLOAD_BYTES to change")
    validation.OFFLOAD_BYTES = int(os.environ["BENCH_OFFLOAD_BYTES"])
    print(f"bench: OFFLOAD_BYTES={validation.OFFLOAD_BYTES} pid={os.getpid()}", file=sys.stderr, flush=True)
