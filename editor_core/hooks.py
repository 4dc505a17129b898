"""Forward/backward plumbing on the edited modules: key/gradient caching and shifted forwards.

Everything here is a context manager that removes its hooks on exit (also on error), so the
model is left exactly as it was found.  Gradients are always taken with
`torch.autograd.grad(..., inputs=...)`, never `.backward()`, so no parameter's `.grad` is
touched and `requires_grad` flags are never changed.

Backward stops at the lowest edited module: the whole forward runs under `no_grad` and a
hook on the lowest edited module switches grad mode on from its output upward
(`grad_from`).  Lower layers therefore build no graph at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from editor_core.adapters import ModelAdapter
from editor_core.encoding import EditRequest, KeyMask, encode_edits


def _first_input(args: tuple) -> torch.Tensor:
    x = args[0]
    assert isinstance(x, torch.Tensor)
    return x


@contextmanager
def grad_from(
    adapter: ModelAdapter, bf16_below: bool = False, bf16_above: bool = False
) -> Iterator[None]:
    """Run the forward without grad below the lowest edited module, with grad from it up.

    Grad mode is thread-local and restored when this context exits, so the enabling done
    inside the hook never leaks to the caller.  `bf16_below`: run the frozen layers below
    the lowest edited module under bf16 autocast (meta-training speed, MALMEN.md §6); the
    edited modules and everything above them run in the model's own precision, unless
    `bf16_above` keeps autocast on for them too (meta-training speed when the edited layers
    sit low in the model and most of it runs above them; keys and gradients are then
    bf16-rounded, which training tolerates and editing never uses).
    """
    lowest = adapter.module(adapter.names[0])
    device_type = next(adapter.model.parameters()).device.type
    dtype = next(adapter.model.parameters()).dtype

    def enable(_m: nn.Module, args: tuple) -> tuple | None:
        torch.set_grad_enabled(True)
        if not bf16_below or bf16_above:
            return None
        torch.set_autocast_enabled(device_type, False)
        return (_first_input(args).to(dtype), *args[1:])

    handle = lowest.register_forward_pre_hook(enable)
    try:
        bf16 = bf16_below or bf16_above
        with torch.no_grad(), torch.autocast(device_type, torch.bfloat16, enabled=bf16):
            yield
    finally:
        handle.remove()


@dataclass
class KeyValueCache:
    """What one cache pass records, per edited module, at the predicting positions."""

    mask: torch.Tensor  # (B, L) bool, positions whose logits predict a target token
    keys: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (n, d_in) fp32
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B, L, d_out)


@contextmanager
def cache_keys_and_outputs(adapter: ModelAdapter, mask: torch.Tensor) -> Iterator[KeyValueCache]:
    """Record module inputs (keys) at `mask` and keep module outputs for autograd.grad.

    The lowest edited module's output is made a leaf that requires grad (parameters may be
    frozen and nothing below is tracked), so every higher output is in the graph too.
    """
    cache = KeyValueCache(mask=mask)
    lowest = adapter.names[0]
    handles = []

    def make_hook(name: str):
        def hook(_m: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            u = _first_input(args)
            cache.keys[name] = u.detach()[mask].float()  # (n, d_in)
            if name == lowest or not output.requires_grad:
                output = output.detach().requires_grad_(True)
            cache.outputs[name] = output  # (B, L, d_out)
            return output

        return hook

    try:
        for name in adapter.names:
            handles.append(adapter.module(name).register_forward_hook(make_hook(name)))
        yield cache
    finally:
        for h in handles:
            h.remove()


@contextmanager
def shifted(
    adapter: ModelAdapter,
    shifts: dict[str, torch.Tensor],
    positions: torch.Tensor | None = None,
) -> Iterator[None]:
    """Forward as if `W_rows += S` for each module in `shifts`, without writing weights.

    The module output gets `u @ S` added (fp32 product, cast back), which is exactly what
    the weight update does for a linear map; `S` may require grad (meta-training).
    `positions` ((L,) or (B, L), 0/1): the change acts at those tokens only — a diagnostic
    of where an edit reaches a prompt (scripts/leak_positions.py); None = every token.
    """
    handles = []

    def make_hook(shift: torch.Tensor):
        def hook(_m: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            add = _first_input(args).float() @ shift  # (B, L, d_out)
            if positions is not None:
                add = add * positions.reshape(-1, add.shape[1], 1).to(add)
            return output + add.to(output.dtype)

        return hook

    try:
        for name, shift in shifts.items():
            handles.append(adapter.module(name).register_forward_hook(make_hook(shift)))
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def iter_keys(
    adapter: ModelAdapter,
    tokenizer: object,
    requests: Sequence[EditRequest],
    batch_size: int = 32,
    max_length: int | None = None,
    key_position: KeyMask = "predict",
    all_positions: bool = False,
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Forward passes (no grad) over edit pairs, yielding per mini-batch `(owner, keys)`:
    owner (n_b,) the request index of each row and keys {module: (n_b, d_in) float32} at the positions that predict the
    continuation — the rows an edit of that pair would be keyed on (with `key_position`
    "subject": at the subject's last token; "template": every prompt token but the
    subject's); `all_positions`: every real token instead."""
    model = adapter.model
    device = next(model.parameters()).device
    keys: dict[str, torch.Tensor] = {}
    holder: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_m: nn.Module, args: tuple) -> None:
            keys[name] = _first_input(args)[holder["mask"]].float()  # (n_b, d_in)

        return record

    handles = [adapter.module(n).register_forward_pre_hook(hook(n)) for n in adapter.names]
    try:
        for start in range(0, len(requests), batch_size):
            batch = encode_edits(
                tokenizer,  # type: ignore[arg-type]
                requests[start : start + batch_size],
                max_length,
                key_position,
            ).to(device)
            mask = batch.attention_mask.bool() if all_positions else batch.keyed_mask
            holder["mask"] = mask
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            owner = mask.nonzero()[:, 0] + start  # (n_b,)
            yield owner, dict(keys)
            keys.clear()
    finally:
        for h in handles:
            h.remove()
