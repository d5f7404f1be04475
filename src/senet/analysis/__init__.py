"""Analysis: complexity counts, excitation statistics, SE switched off, ablations."""

from senet.analysis.complexity import Complexity, StageComplexity, complexity, count_params
from senet.analysis.excitation import ExcitationStats, collect_excitations, override_excitation, se_blocks, select_blocks

__all__ = [
    "Complexity",
    "ExcitationStats",
    "StageComplexity",
    "collect_excitations",
    "complexity",
    "count_params",
    "override_excitation",
    "se_blocks",
    "select_blocks",
]
