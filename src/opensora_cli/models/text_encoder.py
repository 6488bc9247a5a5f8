"""Text encoder: a thin wrapper over transformers' T5-family encoders (mT5-XXL for the released model).

The released transformer reads the last hidden state of mT5-XXL's encoder (d_model 4096) for 512 tokens,
padded, with the attention mask. Any folder holding a T5, mT5 or UMT5 encoder checkpoint and its tokenizer
loads (offline, no remote code); tiny test encoders use a T5 config with the file-less ByT5 tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from opensora_cli.errors import ModelLoadError

# The reference's inference template around each prompt (the whitespace matters for token parity).
POSITIVE_TEMPLATE = "\n    high quality, high aesthetic, {}\n    "
# The reference sample script's negative prompt (note the space before the second newline).
DEFAULT_NEGATIVE_PROMPT = (
    "\n    nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, \n    low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry.\n    "
)
DEFAULT_MAX_LENGTH = 512

_ENCODER_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


def apply_template(prompt: str) -> str:
    """The prompt as the released model saw it at inference: wrapped in `POSITIVE_TEMPLATE`."""
    return POSITIVE_TEMPLATE.format(prompt)


def prompt_texts(prompt: str, negative_prompt: str | None, do_cfg: bool,
                 use_template: bool = True) -> list[str]:
    """What the encoder reads for one prompt: [negative, prompt] with CFG, else [prompt]; the prompt wrapped
    in `POSITIVE_TEMPLATE` when `use_template`; a None negative prompt is `DEFAULT_NEGATIVE_PROMPT` ("" is
    none).

    The pipeline's `encode_prompt` encodes exactly these texts, and the text cache keys its entries by them.
    """
    texts = [apply_template(prompt) if use_template else prompt]
    if do_cfg:
        texts.insert(0, DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt)
    return texts


class TextEncoder(nn.Module):
    """Frozen T5-family encoder and its tokenizer.

    Args:
        encoder: a transformers `T5EncoderModel` / `MT5EncoderModel` / `UMT5EncoderModel`.
        tokenizer: the matching tokenizer.
        max_length: tokens per prompt (truncated to it).
        padding: "max_length" pads every batch to `max_length` tokens, as the reference does; "longest" only to
            the batch's longest prompt: the same states and transformer output (padding is masked out in both)
            for a fraction of the encoder and cross-attention work.
    """

    def __init__(self, encoder: nn.Module, tokenizer, max_length: int = DEFAULT_MAX_LENGTH,
                 padding: str = "max_length") -> None:
        super().__init__()
        if padding not in ("max_length", "longest"):
            raise ValueError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        self.encoder = encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding = padding

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.d_model

    @property
    def device(self) -> torch.device:
        """Where the encoder's weights are (diffusers pipelines ask their components)."""
        return self.encoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.dtype

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None, max_length: int = DEFAULT_MAX_LENGTH,
                        padding: str = "max_length") -> TextEncoder:
        """Load encoder and tokenizer from a local folder (config.json, weights, tokenizer files)."""
        import transformers

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{folder}: not a text encoder folder (no config.json) — pass a local mT5/T5 folder")
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        class_name = _ENCODER_CLASSES.get(config.model_type)
        if class_name is None:
            raise ModelLoadError(f"{folder}: model type '{config.model_type}' is not a T5-family encoder — use one "
                                 f"of {', '.join(sorted(_ENCODER_CLASSES))}")
        transformers.utils.logging.disable_progress_bar()  # our own progress display owns the terminal
        try:
            encoder = getattr(transformers, class_name).from_pretrained(folder, dtype=dtype, local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{folder}: cannot load the text encoder ({exc})") from exc
        model = cls(encoder, tokenizer, max_length, padding)
        return model.to(device) if device is not None else model

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both (B, L) int64: L = max_length, or the longest prompt's length."""
        batch = self.tokenizer(prompts, padding=self.padding, max_length=self.max_length, truncation=True,
                               add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        return batch.input_ids, batch.attention_mask

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts as given (apply `apply_template` first for the reference's inference template).

        Returns:
            embeddings (B, 1, L, hidden_size) in the encoder's dtype, and the mask (B, 1, L) int64, 1 = token;
            the singleton axis is the reference's "number of captions" axis the transformer expects.
        """
        input_ids, attention_mask = self.tokenize(prompts)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden.unsqueeze(1), attention_mask.unsqueeze(1)
