"""lorainit: LoRA initialization and learning-rate choice, measured.

Core modules: ``inits`` (registry of init schemes), ``theory`` (gamma-operator calculus of Hayou et
al. 2024), ``batched`` (many runs as one tensor program). Experiments live in ``lorainit.experiments``.
"""

__version__ = "0.1.0"
