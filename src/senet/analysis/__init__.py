"""Analysis: complexity counts, excitation statistics, ablations."""

from senet.analysis.complexity import (
    Complexity,
    StageComplexity,
    complexity,
    count_params,
)

__all__ = ["Complexity", "StageComplexity", "complexity", "count_params"]
