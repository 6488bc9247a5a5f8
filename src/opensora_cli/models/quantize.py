"""`--quantize`: the text encoder's and the transformer's nn.Linear weights quantised by torchao after they load.

* `int8`: torchao's weight-only int8 (`Int8WeightOnlyConfig`: one int8 per weight, one scale per output row;
  the matmul dequantises on the fly). Runs on a CPU and on any GPU, in fp32, bf16 and fp16.
* `fp8`: float8 weights and dynamically scaled float8 activations
  (`Float8DynamicActivationFloat8WeightConfig`), whose matmuls need CUDA compute capability 8.9 or newer
  (Ada, Hopper); refused elsewhere before anything loads (`quantization_problem`).

Only nn.Linear layers are touched (torchao's default filter): embeddings, norms and the VAE's convolutions keep
the run's dtype. The VAE is never quantised.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

FP8_CAPABILITY = (8, 9)


@contextlib.contextmanager
def _quiet():
    """torchao's import logs a warning for each optional CUDA kernel library it cannot load (every CPU-only
    machine) and torch warns about its enums: noise, not problems (the CLI silences them too, `cli.app`)."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _torchao():
    with _quiet():
        import torchao.quantization

    return torchao.quantization


def quantization_problem(name: str, device) -> tuple[str, str] | None:
    """(what, fix) when `--quantize name` cannot run on `device` (a torch.device), else None. Nothing loads."""
    if name == "none":
        return None
    try:
        _torchao()
    except ImportError as exc:
        return f"{name} needs torchao, which does not import ({exc})", "pip install 'opensora-cli[quant]'"
    if name == "fp8":
        import torch

        if device.type != "cuda":
            return f"fp8 needs a CUDA GPU of compute capability 8.9 or newer, not {device.type}", \
                "use --quantize int8"
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_CAPABILITY:
            return (f"fp8 needs a CUDA GPU of compute capability 8.9 or newer; this one is "
                    f"{capability[0]}.{capability[1]}"), "use --quantize int8"
    return None


def quantize_linears(module, name: str):
    """Quantise `module`'s nn.Linear weights in place (`name`: int8 or fp8; none: unchanged); returns it."""
    if name == "none":
        return module
    quantization = _torchao()
    config = (quantization.Int8WeightOnlyConfig() if name == "int8"
              else quantization.Float8DynamicActivationFloat8WeightConfig())
    with _quiet():
        quantization.quantize_(module, config)
    return module
