"""Before any test module imports torch: the tests' own process computes with MKL's reproducible
mode, as every grokscope process does (grokscope.reproducibility)."""

from grokscope.reproducibility import make_reproducible

make_reproducible()
