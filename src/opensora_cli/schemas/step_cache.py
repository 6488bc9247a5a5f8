"""`--step-cache POLICY`: reuse the transformer's work on denoising steps where it barely changes.

    off                 every step runs every block (the default)
    first-block[:T]     diffusers' First Block Cache: when the first block's residual moved less than T
                        (relative mean absolute change) since the last full step, the other blocks are skipped
                        and their cached residual is reused; T = 0 is exactly the uncached video
    taylorseer[:N]      diffusers' TaylorSeer: the attention and feed-forward outputs are computed every N-th
                        step and predicted in between by a first-order Taylor step; N = 1 is the uncached video

Torch-free: `models.step_cache` turns a policy into diffusers' cache configs.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# kind -> its default value. TaylorSeer every 2nd step: on the demo model the best trade of those measured
# (README). First Block Cache at 0.1, between diffusers' default (0.05) and its documented example (0.2), meant
# for large models; the demo model needs 0.4 to skip anything, as its first block changes 25-40 % a step.
KINDS = {"off": None, "first-block": 0.1, "taylorseer": 2}


class StepCache(BaseModel):
    """A parsed policy: `kind` and its value (first-block: threshold >= 0; taylorseer: interval >= 1)."""

    model_config = ConfigDict(frozen=True)

    kind: str = "off"
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> StepCache:
        """'first-block:0.2' -> StepCache(kind='first-block', value=0.2).

        Raises:
            ValueError: an unknown kind or a bad value, with what to write instead.
        """
        from opensora_cli.schemas.problems import did_you_mean

        kind, _, value = text.strip().partition(":")
        if kind not in KINDS:
            fix = did_you_mean(kind, KINDS, "use off, first-block[:THRESHOLD] or taylorseer[:INTERVAL]")
            raise ValueError(f"'{text}' is not a step-cache policy; {fix}")
        if kind == "off":
            if value:
                raise ValueError(f"'{text}': off takes no value; write off")
            return cls()
        try:
            number = float(value) if value else float(KINDS[kind])
        except ValueError:
            raise ValueError(f"'{value}' is not a number; write {kind}:{KINDS[kind]}") from None
        if kind == "first-block" and not 0 <= number < float("inf"):
            raise ValueError(f"the first-block threshold must be >= 0, got {value}; write first-block:0.2")
        if kind == "taylorseer" and (number < 1 or number != int(number)):
            raise ValueError(f"the taylorseer interval must be a whole number >= 1, got {value}; write taylorseer:3")
        return cls(kind=kind, value=number if kind == "first-block" else int(number))

    @property
    def off(self) -> bool:
        return self.kind == "off"

    def __str__(self) -> str:
        return "off" if self.off else f"{self.kind}:{self.value:g}"
