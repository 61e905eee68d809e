"""The measures of grokscope as pure functions on arrays.

Each module is one family, and each public function carries its formula and source in its
docstring: neural collapse (:mod:`.collapse`), the nHSIC information plane (:mod:`.hsic`),
weight-matrix measures (:mod:`.weights`), O-information (:mod:`.oinfo`, :mod:`.multiplets`), the
grokking summary of a training history (:mod:`.grokking`) and the complexity of a network's weights
under lossy compression (:mod:`.complexity`).

O-information is split by route: :mod:`.oinfo` holds its entry points over :mod:`.copula` (ranks,
ties, the copula covariance), :mod:`.entropy` (Gaussian entropies, bias correction),
:mod:`.lattice` (every subset of up to 22 variables), :mod:`.oinfo_direct` (any list of sets) and
:mod:`.union_lattice` (every union of bins of neurons), with :mod:`.inputs` for the argument
checks; :mod:`.multiplets` searches a layer's bins (:mod:`.binning`, :mod:`.searches`). The
early-synergy test (:mod:`.early_synergy`) uses the leave-one-out predictor of :mod:`.crossval`.
"""

from grokscope.measures.collapse import collapse_measures, nc1, rnc1, rnc1_sup
from grokscope.measures.complexity import rate_distortion, spectral_entropy_penalty
from grokscope.measures.grokking import grokking_rows, grokking_summary
from grokscope.measures.hsic import HsicReference, cka, hsic, hsic_measures, hsic_reference, nhsic
from grokscope.measures.multiplets import cluster_neurons, oinfo_search
from grokscope.measures.oinfo import (
    Multiplets,
    copnorm,
    gaussian_entropy,
    oinfo_multiplets,
    oinfo_multiplets_from_cov,
    oinfo_of_sets,
)
from grokscope.measures.weights import weight_measures

__all__ = [
    "HsicReference",
    "Multiplets",
    "cka",
    "cluster_neurons",
    "copnorm",
    "gaussian_entropy",
    "oinfo_multiplets",
    "oinfo_multiplets_from_cov",
    "oinfo_of_sets",
    "oinfo_search",
    "rate_distortion",
    "collapse_measures",
    "grokking_rows",
    "grokking_summary",
    "hsic",
    "hsic_measures",
    "hsic_reference",
    "nc1",
    "nhsic",
    "rnc1",
    "rnc1_sup",
    "spectral_entropy_penalty",
    "weight_measures",
]
