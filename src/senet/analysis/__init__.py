"""Analysis: complexity counts, excitation statistics, SE switched off, ablations, the zoo's reports.

Names are imported when first used (`senet.lazy`): `senet.analysis.complexity` does not bring in the
excitation study's training and data stack.
"""

from senet.lazy import lazy_exports

_EXPORTS = {
    "Complexity": "senet.analysis.complexity",
    "StageComplexity": "senet.analysis.complexity",
    "complexity": "senet.analysis.complexity",
    "count_params": "senet.analysis.complexity",
    "ExcitationStats": "senet.analysis.excitation",
    "collect_excitations": "senet.analysis.excitation",
    "override_excitation": "senet.analysis.excitation",
    "se_blocks": "senet.analysis.excitation",
    "select_blocks": "senet.analysis.excitation",
}

__all__ = sorted(_EXPORTS, key=lambda name: (name[0].islower(), name))
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
