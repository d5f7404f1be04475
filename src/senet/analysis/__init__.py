"""Analysis: complexity counts, excitation statistics, ablations."""

from senet.analysis.complexity import Complexity, StageComplexity, complexity, count_params
from senet.analysis.excitation import ExcitationStats, collect_excitations, se_blocks

__all__ = ["Complexity", "ExcitationStats", "StageComplexity", "collect_excitations", "complexity", "count_params", "se_blocks"]
