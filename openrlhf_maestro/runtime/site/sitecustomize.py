"""Loaded by Python at start-up in every process whose ``PYTHONPATH`` holds this folder.

The CPU launcher puts this folder on ``PYTHONPATH`` and sets ``OPENRLHF_CPU_RUNTIME=cpu`` before Ray
starts, so Ray's workers and vLLM's engine-core subprocesses install the same post-import patches
as the driver. Without that variable this file does nothing.
"""

import os

if os.environ.get("OPENRLHF_CPU_RUNTIME") == "cpu":
    from openrlhf_maestro.runtime.cpu_patches import install

    install()
