"""Analysis: complexity counts, excitation statistics, SE switched off, ablations, the zoo's reports.

The excitation names are imported when first used (`senet.lazy`), so `senet.analysis` does not bring in
the excitation study's training and data stack. (`complexity` is imported at once: the function shares
its name with its module, which would otherwise stand in its place once imported.)
"""

from senet.analysis.complexity import Complexity, StageComplexity, complexity, count_params
from senet.lazy import lazy_exports

_LAZY = {
    "ExcitationStats": "senet.analysis.excitation",
    "collect_excitations": "senet.analysis.excitation",
    "override_excitation": "senet.analysis.excitation",
    "se_blocks": "senet.analysis.excitation",
    "select_blocks": "senet.analysis.excitation",
}

__all__ = sorted(["Complexity", "StageComplexity", "complexity", "count_params", *_LAZY], key=lambda n: (n[0].islower(), n))
__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
