"""openrlhf-maestro: MAESTRO (arXiv 2601.07208) multi-objective GRPO for OpenRLHF.

Kept tiny on purpose (as vLLM's plugins are): importing the package pulls in neither torch nor OpenRLHF.
"""

__version__ = "0.1.0"
