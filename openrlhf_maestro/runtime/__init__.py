"""Running OpenRLHF on a CPU-only machine (``--runtime cpu``); nothing here is imported on the GPU path.

- ``cpu_patches``: the list of runtime patches, each naming its target;
- ``versions``: the versions they were written against and the check that refuses others;
- ``import_hooks``, ``standin_finder``, ``flash_attn_standin``, ``gloo_sync``: their machinery;
- ``site/sitecustomize.py``: installs the patches in Ray workers and vLLM subprocesses.
"""

from pathlib import Path

SITE_DIR = Path(__file__).with_name("site")
