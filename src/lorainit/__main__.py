import os
import sys

from .cli import main

_worker = os.environ.pop("LORAINIT_SWEEP_WORKER", None)  # (sweeps.gpus.WORKER; not passed on to its children)
rc = main()
if _worker is not None:  # a --gpus worker: everything is written; skip seconds of torch/CUDA teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
raise SystemExit(rc)
