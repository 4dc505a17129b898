"""Which keys can tell subjects apart?  A cheap diagnostic for choosing where to edit.

For every layer's MLP down-projection input (the key of MALMEN.md §1), at two positions —
the last prompt token (where MALMEN keys an edit) and the subject's last token (where
ROME/MEMIT key theirs) — this measures how a one-fact least-squares edit with a
preservation prior would spread:

    w = (C + εI)⁻¹ u_e,   response(x) = (x · w) / (u_e · w)

C = E[k kᵀ] over keys of ordinary prompts at the same kind of position.  The edit prompt
responds with 1 by construction.  Good keys give a high response on the fact's paraphrases
(generalisation) and a low one on neighbourhood prompts (same template, another subject)
and ordinary prompts (locality).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/key_geometry.py --facts data/facts/val.jsonl \\
        --n 300 --out out/key_geometry.json [--plot docs/img/key_geometry.png]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import torch


@torch.no_grad()
def keys_at(model, tokenizer, layers, items: list[tuple[str, int | None]]) -> torch.Tensor:
    """(len(items), n_layers, d_in) keys; position None = the last prompt token."""
    out = []
    grabbed: dict[int, torch.Tensor] = {}

    def hook(i):
        def f(_m, args):
            grabbed[i] = args[0][0].float()  # (L, d_in)

        return f

    handles = [
        layers[i].mlp.down_proj.register_forward_pre_hook(hook(i)) for i in range(len(layers))
    ]
    try:
        for prompt, pos in items:
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=True)["input_ids"]
            model(input_ids=ids)
            p = ids.shape[1] - 1 if pos is None else pos
            out.append(torch.stack([grabbed[i][p] for i in range(len(layers))]))
    finally:
        for h in handles:
            h.remove()
    return torch.stack(out)


def geometry_parser(doc: str, n: int, ordinary: int, out: str) -> argparse.ArgumentParser:
    """The options this script and collision_geometry.py share."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--facts", type=Path, default=Path("data/facts/val.jsonl"))
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--ordinary", type=int, default=ordinary, help="prompts for C")
    ap.add_argument("--eps", type=float, default=1e-2, help="ε as a fraction of tr(C)/d")
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--out", type=Path, default=Path(out))
    ap.add_argument("--plot", type=Path, default=None)
    return ap


def load_default(args: argparse.Namespace) -> tuple[Any, Any, Any, list[dict]]:
    """(model, tokenizer, its blocks, the facts of --facts): the default model in fp32."""
    from editor_core.config import ModelSpec
    from editor_core.loading import load_model

    loaded = load_model(ModelSpec(source="smollm2-135m-instruct", dtype="float32"), args.data_dir)
    facts = [json.loads(x) for x in args.facts.read_text().splitlines() if x.strip()]
    return loaded.model, loaded.tokenizer, loaded.model.model.layers, facts


def one_fact_edits(
    ko: torch.Tensor, ke: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (d_in, n), the edit prompts' own responses (n,)): w = (C + εI)⁻¹ u_e per edit key
    (rows of `ke`), C = E[kkᵀ] over the keys `ko`, ε a fraction of tr(C)/d."""
    C = ko.T @ ko / ko.shape[0]
    C += eps * C.trace() / C.shape[0] * torch.eye(C.shape[0], dtype=C.dtype)
    W = torch.linalg.solve(C, ke.T)
    return W, (ke * W.T).sum(1)


def main() -> None:
    args = geometry_parser(__doc__, 300, 400, "out/key_geometry.json").parse_args()

    from tqdm import tqdm

    from editor_core.data.formats import is_question
    from editor_core.encoding import subject_token_index

    model, tok, layers, facts = load_default(args)
    random.Random(0).shuffle(facts)
    facts = [f for f in facts if f.get("subject") and f.get("neighborhood")][: args.n]

    # Ordinary keys for C: other facts' true prompts (last token), and their subject tokens.
    pool = facts[args.n // 2 :] if len(facts) > args.n // 2 else facts
    ordinary_last = [(f["neighborhood"][0]["prompt"], None) for f in pool[: args.ordinary]]
    ordinary_last += [(f["locality"][0]["prompt"], None) for f in pool if f.get("locality")][
        : args.ordinary
    ]
    results: dict[str, dict[str, list[float]]] = {}
    for where in ("last", "subject"):
        asked: list[bool] = []
        items_e, items_p, items_nb, items_q = [], [], [], []
        for f in tqdm(facts, desc=f"positions ({where})"):
            subj = f["subject"]
            para = f["paraphrases"][0]
            question = next((q for q in f["paraphrases"] if is_question(q)), None)
            nb = f["neighborhood"][0]["prompt"]
            nb_subj = neighbour_subject(f, nb)
            if where == "last":
                pe, pp, pn, pq = None, None, None, None
            else:
                pe = subject_token_index(tok, f["prompt"], subj)
                pp = subject_token_index(tok, para, subj)
                pn = subject_token_index(tok, nb, nb_subj) if nb_subj else None
                pq = subject_token_index(tok, question, subj) if question else None
                if pe is None or pp is None or pn is None:
                    continue
            items_e.append((f["prompt"], pe))
            items_p.append((para, pp))
            items_nb.append((nb, pn))
            # the fact's question paraphrase ("Q: … A:"), or its first one when it has none
            # (masked out below)
            has_q = question is not None and (where == "last" or pq is not None)
            items_q.append((question, pq) if has_q else (para, pp))
            asked.append(has_q)
        if where == "last":
            ordinary = ordinary_last
        else:
            ordinary = [(p, subject_token_index(tok, p, s)) for p, s in _subject_prompts(pool)]
            ordinary = [(p, i) for p, i in ordinary if i is not None][: 2 * args.ordinary]
        ke = keys_at(model, tok, layers, tqdm(items_e, desc="edit keys"))
        kp = keys_at(model, tok, layers, tqdm(items_p, desc="paraphrase keys"))
        kn = keys_at(model, tok, layers, tqdm(items_nb, desc="neighbour keys"))
        kq = keys_at(model, tok, layers, tqdm(items_q, desc="question keys"))
        q_mask = torch.tensor(asked)
        first_is_q = torch.tensor([is_question(p) for p, _ in items_p])
        ko = keys_at(model, tok, layers, tqdm(ordinary, desc="ordinary keys"))
        rows: dict[str, list[float]] = {
            "paraphrase": [],
            "paraphrase_question": [],
            "paraphrase_statement": [],
            "neighbour": [],
            "ordinary": [],
        }
        for layer in range(len(layers)):
            W, self_resp = one_fact_edits(ko[:, layer].double(), ke[:, layer].double(), args.eps)
            para_resp = (kp[:, layer].double() * W.T).sum(1) / self_resp  # (n,)
            rows["paraphrase"].append(float(para_resp.mean()))
            rows["paraphrase_statement"].append(float(para_resp[~first_is_q].mean()))
            q_resp = (kq[:, layer].double() * W.T).sum(1) / self_resp
            rows["paraphrase_question"].append(float(q_resp[q_mask].mean()))
            rows["neighbour"].append(
                float(((kn[:, layer].double() * W.T).sum(1) / self_resp).abs().mean())
            )
            ordin = ko[: ke.shape[0], layer].double() @ W  # (n_o, n)
            rows["ordinary"].append(float((ordin / self_resp).abs().mean()))
        results[where] = rows
        print(
            f"\n{where}-token keys ({int(q_mask.sum())} question paraphrases): layer  "
            "paraphrase (question, statement)  neighbour  ordinary"
        )
        for layer in range(len(layers)):
            print(
                f"  {layer:2d}  {rows['paraphrase'][layer]:.3f} "
                f"({rows['paraphrase_question'][layer]:.3f}, "
                f"{rows['paraphrase_statement'][layer]:.3f})  {rows['neighbour'][layer]:.3f}"
                f"  {rows['ordinary'][layer]:.3f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        for ax, where in zip(axes, ("last", "subject"), strict=True):
            for name, style in (("paraphrase", "-o"), ("neighbour", "-s"), ("ordinary", "-^")):
                ax.plot(results[where][name], style, ms=3, label=name)
            ax.set_title(
                f"keys at the {'last prompt' if where == 'last' else 'last subject'} token"
            )
            ax.set_xlabel("layer")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("response of a one-fact edit (edit prompt = 1)")
        axes[0].legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
    print(f"written {args.out}")


def neighbour_subject(fact: dict, neighbour: str) -> str | None:
    """The other subject of one of a raw fact's neighbourhood prompts (same template), or
    None (`editor_core.data.formats.neighbour_subject`)."""
    from editor_core.data.formats import Fact
    from editor_core.data.formats import neighbour_subject as of_fact

    return of_fact(
        Fact(id="", prompt=fact["prompt"], target="", subject=fact["subject"]), neighbour
    )


def _subject_prompts(facts: list[dict]) -> list[tuple[str, str]]:
    """(prompt, subject) of ordinary prompts: facts' neighbourhood prompts and own prompts."""
    out = []
    for f in facts:
        for nb in f.get("neighborhood") or []:
            other = neighbour_subject(f, nb["prompt"])
            if other:
                out.append((nb["prompt"], other))
        out.append((f["prompt"], f["subject"]))
    return out


if __name__ == "__main__":
    main()
