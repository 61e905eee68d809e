"""Mixed precision: what "compute in float16 or bfloat16" means for a forward pass.

Half precision runs as ``torch.autocast`` runs it: weights, real inputs and stored activations
stay float32, matrix products round to half precision. Only the weights autocast would cast at
every call are held in half precision, once.
"""

from __future__ import annotations

import torch
from torch import nn

HALF_DTYPES = (torch.float16, torch.bfloat16)


def weights_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the weights, real-valued inputs and stored activations are held in to compute in
    ``dtype``. Half precision runs mixed (float32 weights; matrix products in half precision under
    ``torch.autocast``): it rounds only what the hardware's half units compute, and on CPUs with
    bfloat16 matrix units (AMX) it is several times faster than float32, where casting the whole
    model to half is not (element-wise kernels in bfloat16 are slower on CPU than in float32)."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


# Modules whose parameters autocast casts to half precision at every call (its cast cache is
# off without autograd, so a 16 M-parameter model is cast once per batch).
_MATMUL_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                   nn.ConvTranspose3d)


def hold_matmul_weights_in(model: nn.Module, dtype: torch.dtype) -> None:
    """Hold the parameters of ``model``'s linear and convolution layers (and Hugging Face's
    ``Conv1D``, an ``addmm``) in ``dtype`` once, as autocast would cast them at every call: the
    products are the same numbers, at a quarter less CPU on GPT-2. A parameter shared with
    another kind of module (an embedding tied to the output layer) stays as it is."""
    def is_matmul(module: nn.Module) -> bool:
        return isinstance(module, _MATMUL_MODULES) or type(module).__name__ == "Conv1D"

    others = {id(p) for m in model.modules() if not is_matmul(m) for p in m.parameters(recurse=False)}
    for module in filter(is_matmul, model.modules()):
        for parameter in module.parameters(recurse=False):
            if id(parameter) not in others and parameter.is_floating_point():
                parameter.data = parameter.data.to(dtype)
