from __future__ import annotations

from pathlib import Path

import pytest
import torch

from editor_core import EditRequest, ModelSpec
from editor_core.adapters import ModelAdapter
from editor_core.config import resolve_arch
from editor_core.editor import EditorConfig, MalmenEditor
from editor_core.hypernet import HyperConfig
from editor_core.loading import LoadedModel, prepare_tokenizer
from tests.tiny import CORPUS_WORDS, tiny_model, tiny_tokenizer


def tiny_loaded(
    model_type: str = "llama", layers: int = 2, edit: tuple[int, ...] | None = None
) -> LoadedModel:
    model = tiny_model(model_type, layers=layers)
    tok = tiny_tokenizer()
    prepare_tokenizer(tok)
    adapter = ModelAdapter(model, resolve_arch(model.config.model_type, ModelSpec()), edit)
    return LoadedModel(model=model, tokenizer=tok, adapter=adapter, path=Path("."))


def facts(n: int, seed: int = 0) -> list[EditRequest]:
    """Synthetic facts with targets of 1 to 3 words (different token counts)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        w = torch.randint(0, len(CORPUS_WORDS), (6,), generator=g).tolist()
        prompt = f"The {CORPUS_WORDS[w[0]]} {CORPUS_WORDS[w[1]]} of {CORPUS_WORDS[w[2]]} is"
        target = " ".join(CORPUS_WORDS[j] for j in w[3 : 3 + 1 + i % 3])
        out.append(EditRequest(prompt, target))
    return out


def editor_for(loaded: LoadedModel, **kw) -> MalmenEditor:
    hyper = HyperConfig(rank=8, eta_init=1e-2, lambda_key_scaled=False)
    return MalmenEditor.random_init(loaded, EditorConfig(hyper=hyper, **kw), seed=0)


def model_state(model: torch.nn.Module) -> dict[str, tuple]:
    return {
        n: (p.detach().clone(), p.requires_grad, None if p.grad is None else p.grad.clone())
        for n, p in model.named_parameters()
    }


def hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("n", [1, 7, 33])
def test_chunk_invariance(n: int) -> None:
    loaded = tiny_loaded()
    loaded.model.double()  # isolate the chunking from float32 reduction-order noise
    reqs = facts(n)
    whole = editor_for(loaded, lm_batch_size=64, hyper_chunk=10_000).compute_delta(reqs)
    chunked = editor_for(loaded, lm_batch_size=4, hyper_chunk=5).compute_delta(reqs)
    for name in loaded.adapter.names:
        a, b = whole.shifts[name], chunked.shifts[name]
        assert a.abs().max() > 0
        assert (a - b).norm() / a.norm() < 1e-5
        torch.testing.assert_close(whole.rows[name].owner, chunked.rows[name].owner)


def test_rows_are_exactly_the_predicting_positions() -> None:
    loaded = tiny_loaded()
    reqs = facts(5)
    editor = editor_for(loaded, lm_batch_size=2)
    cached = editor.cache(reqs)
    tok = loaded.tokenizer
    name = loaded.adapter.names[-1]
    offset = 0
    captured: dict[str, torch.Tensor] = {}
    for i, r in enumerate(reqs):
        p = tok(r.prompt)["input_ids"]
        t = tok(" " + r.target, add_special_tokens=False)["input_ids"]
        seq = torch.tensor([p + t])
        h = loaded.adapter.module(name).register_forward_hook(
            lambda _m, a, _o: captured.__setitem__("u", a[0].detach())
        )
        try:
            loaded.model(input_ids=seq)
        finally:
            h.remove()
        # positions len(p)-1 .. len(p)+len(t)-2 predict the target tokens
        expected = captured["u"][0, len(p) - 1 : len(p) + len(t) - 1]  # (len(t), d_in)
        rows = cached[name].owner == i
        assert int(rows.sum()) == len(t)
        torch.testing.assert_close(cached[name].keys[rows], expected, rtol=1e-5, atol=1e-6)
        assert (cached[name].keys[offset : offset + len(t)] == cached[name].keys[rows]).all()
        offset += len(t)
    assert cached[name].keys.shape[0] == offset


def full_autograd(loaded: LoadedModel, batch) -> tuple[dict, dict]:
    """A plain forward over the whole model with grad: per edited module, its inputs (keys)
    and ∂(Σ target-token CE)/∂output, both (B, L, ·) — the reference for the cache pass."""
    ins: dict[str, torch.Tensor] = {}
    outs: dict[str, torch.Tensor] = {}

    def grab(n: str):
        def hook(_m, a, o):
            ins[n], outs[n] = a[0].detach(), o

        return hook

    names = loaded.adapter.names
    handles = [loaded.adapter.module(n).register_forward_hook(grab(n)) for n in names]
    try:
        logits = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    finally:
        for h in handles:
            h.remove()
    m = batch.predict_mask
    loss = torch.nn.functional.cross_entropy(logits[m], batch.labels[m], reduction="sum")
    grads = torch.autograd.grad(loss, [outs[n] for n in names])
    return ins, dict(zip(names, grads, strict=True))


def test_value_gradients_match_full_autograd_on_sum_loss() -> None:
    """Stopping backward at the lowest edited module must not change the gradients."""
    from editor_core.encoding import encode_edits

    loaded = tiny_loaded()
    reqs = facts(3)
    cached = editor_for(loaded).cache(reqs)
    batch = encode_edits(loaded.tokenizer, reqs)
    _ins, grads = full_autograd(loaded, batch)
    m = batch.predict_mask
    for n, g in grads.items():
        torch.testing.assert_close(cached[n].grads, g[m], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox"])
def test_compute_delta_is_pure(model_type: str) -> None:
    loaded = tiny_loaded(model_type)
    p0 = next(loaded.model.parameters())
    p0.grad = torch.ones_like(p0)  # an existing .grad must survive untouched
    list(loaded.model.parameters())[1].requires_grad_(False)
    before, hooks = model_state(loaded.model), hook_count(loaded.model)
    grad_mode = torch.is_grad_enabled()
    delta = editor_for(loaded).compute_delta(facts(4))
    assert set(delta.shifts) == set(loaded.adapter.names)
    after = model_state(loaded.model)
    for n, (w, rg, g) in before.items():
        assert torch.equal(after[n][0], w), n
        assert after[n][1] == rg, n
        assert (g is None and after[n][2] is None) or torch.equal(after[n][2], g), n
    assert hook_count(loaded.model) == hooks
    assert torch.is_grad_enabled() == grad_mode


def test_edit_time_knobs() -> None:
    loaded = tiny_loaded()
    reqs = facts(3)
    base = editor_for(loaded)
    rows = base.compute_rows(reqs)
    half = editor_for(loaded, eta_scale=0.5).compute_rows(reqs)
    name = loaded.adapter.names[0]
    torch.testing.assert_close(half[name].values, 0.5 * rows[name].values)
    strong = editor_for(loaded, lambda_override=1e6)
    assert strong.lambdas()[name] == 1e6
    assert strong.solve(rows)[name].norm() < base.solve(rows)[name].norm()


def test_paraphrase_rows_edit_the_paraphrases_too() -> None:
    """paraphrase_rows = k: each request's first k paraphrases give the rows they would
    give as edits of their own (same target), owned by the request; 0 ignores them."""
    loaded = tiny_loaded()
    loaded.model.double()
    plain = facts(3)
    other = facts(6, seed=1)[3:]  # other prompts stand in for paraphrases
    reqs = [
        EditRequest(r.prompt, r.target, paraphrases=(o.prompt, "never used"))
        for r, o in zip(plain, other, strict=True)
    ]
    assert all(
        torch.equal(a.keys, b.keys)
        for a, b in zip(
            editor_for(loaded).compute_rows(reqs).values(),
            editor_for(loaded).compute_rows(plain).values(),
            strict=True,
        )
    )
    rows = editor_for(loaded, paraphrase_rows=1).compute_rows(reqs)
    alone = editor_for(loaded).compute_rows(
        plain + [EditRequest(o.prompt, r.target) for r, o in zip(plain, other, strict=True)]
    )
    for name, r in rows.items():
        a = alone[name]
        torch.testing.assert_close(r.keys, a.keys)
        torch.testing.assert_close(r.values, a.values)
        assert r.owner.tolist() == [i % 3 for i in a.owner.tolist()]
        assert r.keys.shape[0] > editor_for(loaded).compute_rows(plain)[name].keys.shape[0]
    with pytest.raises(ValueError, match="paraphrase_rows"):
        EditorConfig(paraphrase_rows=-1)
