"""The text cache: prompt embeddings computed once. A run whose prompts are all cached never loads the text
encoder (mT5-XXL, the largest of the three models); `opensora encode-prompts` fills the cache ahead of a run,
on this machine or on another one.

A cache folder (`--text-cache DIR`; else `$OPENSORA_TEXT_CACHE`, else `$XDG_CACHE_HOME/opensora-cli/text` or
`~/.cache/opensora-cli/text`) holds:

    entries/ab/ab12...ef.safetensors   one prompt's `encode_prompt` output: "states" (R, 1, L, C) in the
                                       run's dtype and "mask" (R, 1, L) int64; R = 2 with CFG ([negative;
                                       prompt]), else 1
    file-hashes.json                   the SHA-256 of the text encoders' files, by (path, size, mtime)

An entry is named by its key, the SHA-256 of a JSON of everything its tensors depend on (`Encoding.key`):

* `encoder`: the text encoder's identity, a SHA-256 over its config, tokenizer files and weights (the bytes,
  not the path: a copy of the encoder on another machine has the same identity);
* `texts`: the strings encoded, `prompt_texts(...)`: the prompt inside the template when it is on, after the
  negative prompt when CFG is on (with CFG off the negative prompt is not read, so it is not in the key);
* `padding` ("longest": to the longer of the two texts) and `max_length`: the token count L;
* `dtype` and the device type (`cpu`, `cuda`, `npu`): bf16 states differ from fp32 ones, and fp32 on a CPU
  differs from fp32 on a GPU in the last bits (other kernels, other summation order);
* the torch and transformers versions (kernels and tokenizers change between releases) and `FORMAT`;
* `--quantize` and the torchao version, only when it is on (an unquantised run's keys are as before).

So a video made from a cached entry is the video made without the cache, bit for bit, when the entry was
computed on this kind of device with these library versions, which the key ensures. Not in the key: the GPU
model and the device index. An entry made on another machine with the same device type and library versions
(what `encode-prompts` on another machine gives) is used as is; on another GPU model its states may differ
from this GPU's in the last bits, and every run that uses the entry gives the same video.

Writes are atomic (a temporary file renamed onto the entry): processes of `--nproc`, or runs sharing the
folder, that store the same entry each rename a complete file of the same content. A damaged or foreign entry
is a miss, recomputed and overwritten; never an error. Nothing is ever evicted: delete the folder, or any
entry, at any time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensora_cli.schemas.problems import Problem

ENV = "OPENSORA_TEXT_CACHE"
FORMAT = 1  # bump when the entries' layout or the meaning of a key field changes
# How `sample` encodes (and so `encode-prompts`): padded to the longer of prompt and negative prompt, not 512:
# the same video (padding is masked out), less work per step.
PADDING = "longest"
HASHES_FILE = "file-hashes.json"  # the hashes of big files, by path, size and mtime
_WEIGHT_SUFFIXES = (".safetensors",)
_OTHER_SUFFIXES = (".json", ".model", ".txt")  # config, tokenizer files (sentencepiece .model, vocab .txt)


# ------------------------------------------------------------------------------------------------------------
# The folder
# ------------------------------------------------------------------------------------------------------------


def default_dir() -> tuple[Path, str | None]:
    """The cache folder when `--text-cache` is not given, and the environment variable that named it (None for
    the XDG default)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser(), ENV
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "opensora-cli" / "text", None


def resolve_dir(given: Path | None, disabled: bool = False,
                need_write: bool = False) -> tuple[Path | None, bool, list[Problem], list[Problem]]:
    """Where the cache is, and whether this process may add to it. Nothing is created.

    A folder that is a file (or under a file) is refused when the user named it (`--text-cache`, or the
    environment variable); the default folder is then skipped with a warning (a run should not fail over a
    cache nobody asked for). A folder that cannot be written is read only, with a warning: a shared cache
    on a read-only mount still saves the encoder; `need_write` (encode-prompts) refuses it.

    Returns:
        (folder or None for no cache, writable, problems, warnings).
    """
    if disabled:
        return None, False, [], []
    named = "--text-cache" if given is not None else None
    folder, variable = (Path(given).expanduser(), None) if given is not None else default_dir()
    where = named or variable or "text cache"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == folder else f"cannot be created: '{existing}' is a file"
        fix = "pass a folder to --text-cache" + ("" if need_write else ", or --no-text-cache")
        if named or variable or need_write:
            return None, False, [Problem.of(where, None, f"'{folder}' {what}", fix)], []
        return None, False, [], [Problem.of(where, None, f"'{folder}' {what}; running without the text cache",
                                            "pass --text-cache DIR or --no-text-cache")]
    try:  # a real write: permission bits say nothing to root, nor about a read-only mount
        fd, probe = tempfile.mkstemp(prefix=".opensora-write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        what = f"'{existing}' is not writable ({exc.strerror})"
        if need_write:
            return None, False, [Problem.of(where, None, what, "pick a folder you can write to")], []
        warning = Problem.of(where, None, f"{what}: cached embeddings are used, new ones are not stored",
                             "pick a folder you can write to, or --no-text-cache")
        return folder, False, [], [warning]
    return folder, True, [], []


# ------------------------------------------------------------------------------------------------------------
# The text encoder's identity
# ------------------------------------------------------------------------------------------------------------


def encoder_files(folder: Path) -> list[Path]:
    """The files of a text encoder folder that decide its output: config and tokenizer files (.json, .model,
    .txt) and the weights: the .safetensors, or the .bin files where there is none (what transformers
    loads)."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
    weights = [p for p in files if p.suffix in _WEIGHT_SUFFIXES] or [p for p in files if p.suffix == ".bin"]
    return [p for p in files if p.suffix in _OTHER_SUFFIXES] + weights


def encoder_fingerprint(folder: Path, cache_dir: Path | None = None, writable: bool = True) -> str:
    """The text encoder's identity: SHA-256 over the (name, SHA-256) of each of `encoder_files(folder)`, each
    file's hash remembered in `cache_dir/file-hashes.json` (see `utils.io.files_fingerprint`).

    Raises:
        OSError: a file cannot be read.
    """
    from opensora_cli.utils.io import files_fingerprint

    book = cache_dir / HASHES_FILE if cache_dir is not None else None
    return files_fingerprint(encoder_files(folder), book, writable)


# ------------------------------------------------------------------------------------------------------------
# Keys and entries
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoding:
    """How a run encodes its prompts: everything an embedding depends on besides the prompt itself.

    Build it with `Encoding.of` so that `sample` and `encode-prompts` agree.
    """

    encoder: str  # encoder_fingerprint
    negative_prompt: str | None  # None: the reference's negative prompt
    cfg: bool  # guidance_scale > 1
    template: bool
    dtype: str  # fp32, bf16, fp16
    device_type: str  # cpu, cuda, npu
    padding: str = PADDING
    max_length: int = 512
    quantize: str = "none"  # --quantize: a quantised encoder makes other states

    @classmethod
    def of(cls, encoder: str, negative_prompt: str | None, guidance_scale: float, prompt_template: bool,
           dtype: str, device_type: str, quantize: str = "none") -> Encoding:
        from opensora_cli.models.text_encoder import DEFAULT_MAX_LENGTH

        return cls(encoder, negative_prompt, guidance_scale > 1.0, prompt_template, dtype, device_type,
                   PADDING, DEFAULT_MAX_LENGTH, quantize)

    def texts(self, prompt: str) -> list[str]:
        """The strings the encoder reads for `prompt` (the pipeline's `encode_prompt` reads the same)."""
        from opensora_cli.models.text_encoder import prompt_texts

        return prompt_texts(prompt, self.negative_prompt, self.cfg, self.template)

    def key(self, prompt: str) -> str:
        """The entry's name: SHA-256 of the JSON of every field the tensors depend on (see the module)."""
        import torch
        import transformers

        fields = {"format": FORMAT, "encoder": self.encoder, "texts": self.texts(prompt),
                  "padding": self.padding, "max_length": self.max_length, "dtype": self.dtype,
                  "device": self.device_type, "torch": torch.__version__,
                  "transformers": transformers.__version__}
        if self.quantize != "none":  # in the key only when on: the entries of unquantised runs keep their names
            from importlib.metadata import version

            fields |= {"quantize": self.quantize, "torchao": version("torchao")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class TextCache:
    """The entries of one cache folder for one `Encoding`.

    Args:
        root: the cache folder (created on the first store).
        writable: False: `put` stores nothing (a read-only cache).
    """

    def __init__(self, root: Path, encoding: Encoding, writable: bool = True) -> None:
        self.root, self.encoding, self.writable = Path(root), encoding, writable

    def path(self, prompt: str) -> Path:
        key = self.encoding.key(prompt)
        return self.root / "entries" / key[:2] / f"{key}.safetensors"

    def get(self, prompt: str):
        """The cached (states (R, 1, L, C), mask (R, 1, L)) of `prompt` on the CPU, or None: missing, damaged,
        or not what this encoding would make (another key inside, other rows or dtype)."""
        import torch

        from opensora_cli.distributed.device import torch_dtype

        path = self.path(prompt)
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                if (handle.metadata() or {}).get("key") != path.stem:
                    return None
                # copies: the reader maps the file, and a mapping of a file someone truncates is a bus error
                states, mask = handle.get_tensor("states").clone(), handle.get_tensor("mask").clone()
        # A truncated or foreign file raises whatever the reader meets: a miss, never a crash.
        except Exception:  # noqa: BLE001
            return None
        rows = len(self.encoding.texts(prompt))
        if (states.dtype != torch_dtype(self.encoding.dtype) or mask.dtype != torch.int64 or states.ndim != 4
                or tuple(states.shape[:3]) != tuple(mask.shape) or states.shape[0] != rows):
            return None
        return states, mask

    def put(self, prompt: str, states, mask) -> bool:
        """Store an entry (atomically: written beside it, then renamed onto it). False when it could not be
        stored (a read-only cache, a full disk): the run goes on without it."""
        if not self.writable:
            return False
        from safetensors.torch import save_file

        from opensora_cli.utils.io import atomic_path

        path = self.path(prompt)
        metadata = {"key": path.stem, "prompt": prompt, "texts": json.dumps(self.encoding.texts(prompt)),
                    "dtype": self.encoding.dtype, "device": self.encoding.device_type}
        try:
            with atomic_path(path) as tmp:
                tensors = {"states": states.contiguous(), "mask": mask.contiguous()}
                save_file(tensors, str(tmp), metadata=metadata)
        except OSError:
            return False
        return True

    def lookup(self, prompts: Iterable[str]) -> dict[str, Any]:
        """{prompt: (states, mask)} of the prompts that are cached."""
        found = {}
        for prompt in prompts:
            entry = self.get(prompt)
            if entry is not None:
                found[prompt] = entry
        return found


def load_text_encoder(folder: Path, dtype, device, quantize: str = "none"):
    """The text encoder as `sample` uses it (padding `PADDING`, the default 512 tokens), its Linear weights
    quantised by `--quantize` (`models.quantize`)."""
    from opensora_cli.models.quantize import quantize_linears
    from opensora_cli.models.text_encoder import TextEncoder

    encoder = TextEncoder.from_pretrained(folder, dtype=dtype, device=device, padding=PADDING)
    return quantize_linears(encoder, quantize)


@dataclass
class Encoded:
    embeddings: dict[str, Any]  # {prompt: (states (R, 1, L, C), mask (R, 1, L))}, on the CPU
    hidden_size: int  # C
    unstored: int = 0  # entries that could not be stored


def encode(prompts: list[str], encoding: Encoding, load: Callable[[], Any], cache: TextCache | None = None,
           on_done: Callable[[str], None] | None = None) -> Encoded:
    """Encode `prompts` with the encoder `load()` returns (freed on return) and store each in `cache`.

    The texts are `encoding.texts(prompt)`, encoded together (one batch of 1 or 2), as `encode_prompt` does.
    """
    import torch

    encoder = load()
    embeddings, unstored = {}, 0
    with torch.no_grad():
        for prompt in prompts:
            states, mask = encoder(encoding.texts(prompt))
            embeddings[prompt] = (states.cpu(), mask.cpu())
            if cache is not None and not cache.put(prompt, *embeddings[prompt]):
                unstored += cache.writable  # a read-only cache is not a failure
            if on_done is not None:
                on_done(prompt)
    return Encoded(embeddings, encoder.hidden_size, unstored)


def hidden_size_of(embeddings: Mapping[str, Any]) -> int:
    """C, the width of the states (the transformer's caption_channels must match it)."""
    return next(iter(embeddings.values()))[0].shape[-1]


# ------------------------------------------------------------------------------------------------------------
# `opensora encode-prompts`
# ------------------------------------------------------------------------------------------------------------


@dataclass
class EncodeSummary:
    prompts: int  # distinct prompts (a line's stretches each count)
    computed: int
    cached: int  # found in the cache already
    cache_dir: Path
    device: str
    dtype: str
    text_encoder: Path
    quantize: str = "none"


def encode_prompts(options: Mapping[str, Any], on_start: Callable[[int], None] | None = None,
                   on_done: Callable[[str], None] | None = None) -> EncodeSummary:
    """Fill the text cache with the entries `opensora sample` looks up for the same options.

    Every prompt line is encoded, and every stretch of a line with `|||` (each window takes one). The model
    folder's defaults fill the options left out, as for `sample` (`resolve_fields`).

    Args:
        options: prompts, model, text_encoder, text_cache, negative_prompt, prompt_template, guidance_scale,
            dtype, device, quantize; None where not given.
        on_start: called with the number of prompts to encode, before the encoder loads.
        on_done: called after each prompt encoded.

    Raises:
        InputError: one line naming every problem (nothing loaded, nothing written).
    """
    from opensora_cli.errors import InputError
    from opensora_cli.schemas.sample import SampleRequest
    from opensora_cli.schemas.windows import SEGMENT_SEPARATOR, stretch_prompts
    from opensora_cli.services.model_folders import find_model_folders, resolve_fields
    from opensora_cli.services.validation import build_request, read_lines

    request, problems = build_request(resolve_fields(options), SampleRequest)
    lines, line_problems = read_lines(request.prompts, "--prompts")
    problems += line_problems
    prompts: list[str] = []
    label = str(request.prompts)
    for number, line in enumerate(lines or [], start=1):
        stretches = stretch_prompts(line)
        if not all(stretches):
            what = "empty prompt" if len(stretches) == 1 else \
                f"an empty stretch between '{SEGMENT_SEPARATOR}'"
            problems.append(Problem.of(label, number, what, "write a prompt or delete the line"))
        prompts += stretches
    if lines == []:
        problems.append(Problem.of(label, None, "the prompts file is empty", "write one prompt per line"))
    folders, folder_problems = find_model_folders(request.model, {"text_encoder": request.text_encoder})
    problems += [p for p in folder_problems if p.file == "--text-encoder"]
    cache_dir, _, cache_problems, _ = resolve_dir(request.text_cache, need_write=True)
    problems += cache_problems
    if problems:
        raise InputError("; ".join(p.render() for p in problems))

    from opensora_cli.distributed.device import resolve_device, torch_dtype
    from opensora_cli.models.quantize import quantization_problem

    device = resolve_device(request.device)
    dtype = request.dtype_for(device.type)
    refused = quantization_problem(request.quantize, device)  # fp8 on a CPU, torchao missing: before loading
    if refused:
        raise InputError(Problem.of("--quantize", None, *refused).render())
    folder = folders["text_encoder"]
    try:
        fingerprint = encoder_fingerprint(folder, cache_dir)
    except OSError as exc:
        raise InputError(f"{folder}: cannot read the text encoder ({exc.strerror or exc})") from None
    encoding = Encoding.of(fingerprint, request.negative_prompt, request.guidance_scale,
                           request.prompt_template, dtype, device.type, request.quantize)
    cache = TextCache(cache_dir, encoding)
    prompts = list(dict.fromkeys(prompts))
    found = cache.lookup(prompts)
    misses = [p for p in prompts if p not in found]
    if on_start is not None:
        on_start(len(misses))
    if misses:
        result = encode(misses, encoding,
                        lambda: load_text_encoder(folder, torch_dtype(dtype), device, request.quantize), cache,
                        on_done)
        if result.unstored:
            raise InputError(f"{cache_dir}: {result.unstored} embedding(s) could not be stored — free some "
                             "space or pick another --text-cache")
    return EncodeSummary(prompts=len(prompts), computed=len(misses), cached=len(found), cache_dir=cache_dir,
                         device=str(device), dtype=dtype, text_encoder=folder, quantize=request.quantize)
