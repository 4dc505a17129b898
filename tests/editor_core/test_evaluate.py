"""Metrics and the eval harness on tiny random models (no downloads)."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from editor_core.apply import restore, snapshot
from editor_core.config import ModelSpec
from editor_core.data.formats import Fact, LocalityPrompt, write_facts, write_locality
from editor_core.encoding import EditRequest, tokenize_pair
from editor_core.evaluate import (
    SURE_MARGIN,
    generation_check,
    knew_answer,
    last_token_sharing,
    locality_scores,
    margin_bins,
    prepare_locality,
    same_subject_prompts,
    score_edited,
)
from editor_core.loading import load_model
from editor_core.metrics import token_accuracy
from service.commands.eval import _layers
from tests.tiny import tiny_model, tiny_tokenizer

REQUESTS = [
    EditRequest("The capital of France is", "Rome"),
    EditRequest("Q: Where is the Eiffel Tower? A:", "Berlin city"),
]
LOCALITY = [LocalityPrompt("The capital of Spain is", "Madrid"), LocalityPrompt("What was born in")]


class Forced(torch.nn.Module):
    """A tiny LM that is made to continue each request's prompt with its target."""

    def __init__(self, base: torch.nn.Module, tokenizer: Any, requests: list[EditRequest]):
        super().__init__()
        self.base = base
        self.next: dict[tuple[int, ...], int] = {}
        for r in requests:
            p, t = tokenize_pair(tokenizer, r.prompt, r.target)
            seq = p + t
            for k in range(len(p), len(seq)):
                self.next[tuple(seq[:k])] = seq[k]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        out = self.base(input_ids=input_ids, attention_mask=attention_mask)
        logits = out.logits.clone()
        for b in range(input_ids.shape[0]):
            ids = input_ids[b].tolist()
            for t in range(int(attention_mask[b].sum())):
                tok = self.next.get(tuple(ids[: t + 1]))
                if tok is not None:
                    logits[b, t, tok] = logits[b, t].max() + 100.0
        out.logits = logits
        return out


def test_forced_model_scores_one_and_base_model_does_not() -> None:
    tok, base = tiny_tokenizer(), tiny_model()
    forced = Forced(base, tok, REQUESTS)
    assert token_accuracy(forced, tok, REQUESTS) == [1.0, 1.0]
    assert generation_check(forced, tok, REQUESTS) == [1.0, 1.0]
    assert generation_check(base, tok, REQUESTS) == [0.0, 0.0]


def test_locality_is_one_for_the_unedited_model_and_drops_when_changed() -> None:
    tok, model = tiny_tokenizer(), tiny_model()
    loc = prepare_locality(model, tok, LOCALITY, greedy=3)
    assert len(loc.base[0]) == len(tokenize_pair(tok, LOCALITY[0].prompt, "Madrid")[1])
    assert len(loc.base[1]) == 3  # answer-less: the base model's own greedy tokens
    scores = locality_scores(model, tok, loc)
    assert scores["ls"] == 1.0
    assert scores["ls_gold"] is not None and 0.0 <= scores["ls_gold"] <= 1.0
    other = tiny_model(seed=1)
    assert locality_scores(other, tok, loc)["ls"] < 1.0


def test_locality_parts_are_the_mean_over_their_prompts() -> None:
    tok, model = tiny_tokenizer(), tiny_model()
    loc = prepare_locality(model, tok, LOCALITY, greedy=3)
    other = tiny_model(seed=1)
    whole = locality_scores(other, tok, loc)["ls"]
    per = [locality_scores(other, tok, loc.subset([i]))["ls"] for i in range(len(loc))]
    parts = locality_scores(other, tok, loc, parts={"a": [0], "b": list(range(1, len(loc)))})
    assert parts["ls"] == whole
    assert parts["ls_a"] == per[0]
    assert parts["ls_b"] == pytest.approx(sum(per[1:]) / (len(loc) - 1))
    assert locality_scores(other, tok, loc, parts={"none": []})["ls_none"] is None


def test_locality_by_margin_bins_every_scored_position(monkeypatch) -> None:
    """`LocalitySet.margin`: the unedited log-probability gap between argmax and runner-up
    at each scored position; `by_margin` (`margin_edges`): agreement per margin bin — all 1
    for the unedited model, and over all bins (weighted by share) the fraction of positions
    kept; `ls_sure`: agreement over the positions at least SURE_MARGIN apart."""
    tok, model = tiny_tokenizer(), tiny_model()
    loc = prepare_locality(model, tok, LOCALITY, greedy=3)
    margins = loc.margin
    assert [m.shape for m in margins] == [b.shape for b in loc.base]
    assert all(bool((m >= 0).all()) for m in margins)
    seq = loc.sequences[1][:-1]
    logp = model(input_ids=torch.tensor([seq])).logits[0, loc.start[1] :].log_softmax(-1)
    top2 = logp.topk(2, dim=-1).values
    torch.testing.assert_close(margins[1], top2[:, 0] - top2[:, 1])
    assert loc.subset([1]).margin == [margins[1]]
    edges = (float(torch.cat(margins).median()),)  # two bins, both filled
    same = locality_scores(model, tok, loc, margin_edges=edges)["by_margin"]
    assert [b["ls"] for b in same] == [1.0, 1.0]
    assert sum(b["share"] for b in same) == pytest.approx(1.0)
    other = tiny_model(seed=1)
    bins = locality_scores(other, tok, loc, margin_edges=edges)["by_margin"]
    now = [
        other(input_ids=torch.tensor([s[:-1]])).logits[0, st:].argmax(-1)
        for s, st in zip(loc.sequences, loc.start, strict=True)
    ]
    kept = torch.cat([(a == b).float() for a, b in zip(now, loc.base, strict=True)])
    assert sum(b["share"] * b["ls"] for b in bins) == pytest.approx(float(kept.mean()))
    assert float(kept.mean()) < 1.0
    monkeypatch.setattr("editor_core.evaluate.SURE_MARGIN", edges[0])
    upper = kept[torch.cat(margins) >= edges[0]].mean()
    scores = locality_scores(other, tok, loc)
    assert scores["ls_sure"] == pytest.approx(float(upper)) == pytest.approx(bins[1]["ls"])
    assert scores["sure_share"] == pytest.approx(bins[1]["share"])
    assert locality_scores(model, tok, loc)["ls_sure"] == 1.0
    assert SURE_MARGIN == 1.0
    kept, margin = torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0.1, 0.2, 1.5, 3.0])
    assert [(b["share"], b["ls"]) for b in margin_bins(kept, margin, (0.15, 2.0))] == [
        (0.25, 1.0),
        (0.5, 0.5),
        (0.25, 1.0),
    ]
    empty = margin_bins(torch.ones(2), torch.tensor([0.1, 0.2]), (1.0,))[1]
    assert empty["share"] == 0.0 and empty["ls"] != empty["ls"]  # NaN: no position there


def test_score_edited_splits_neighbours_by_the_edited_last_token(tiny_dir: Path) -> None:
    loaded = load_model(ModelSpec(source=str(tiny_dir), device="cpu"))

    def fact(subject: str, neighbour: str) -> Fact:
        return Fact(
            subject,
            f"The {subject} is located in",
            "london",
            subject=subject,
            neighborhood=(LocalityPrompt(f"The {neighbour} is located in"),),
        )

    facts = [fact("paris tower", "madrid tower"), fact("london company", "rome city")]
    nb = prepare_locality(loaded.model, loaded.tokenizer, [f.neighborhood[0] for f in facts])
    m = score_edited(loaded, facts, prepare_locality(loaded.model, loaded.tokenizer, LOCALITY), nb)
    assert m["nb_shared_token_share"] == 0.5  # "madrid tower" ends in an edited " tower"
    assert m["ls_nb_shared_token"] == 1.0 and m["ls_nb_own_token"] == 1.0  # unedited
    assert m["ls_nb_known"] is None and m["nb_known_share"] == 0.0  # no gold answers


def test_known_neighbours_are_those_whose_gold_answer_the_model_gave(tiny_dir: Path) -> None:
    """`ls_nb_known`: LS over the neighbourhood prompts whose gold answer is the unedited
    model's argmax at every answer token — the facts it knew."""
    loaded = load_model(ModelSpec(source=str(tiny_dir), device="cpu"))
    tok = loaded.tokenizer
    prompts = [LocalityPrompt(f"The {w} tower is located in", "london") for w in ("a", "b", "c")]
    fact = Fact(
        "f",
        "The paris tower is located in",
        "rome",
        subject="paris tower",
        neighborhood=tuple(prompts),
    )
    nb = prepare_locality(loaded.model, tok, prompts)
    nb.gold[0] = nb.base[0].tolist()  # the model "knew" the first answer
    nb.gold[1] = [t + 1 for t in nb.base[1].tolist()]  # and not the second
    nb.gold[2] = nb.base[2].tolist()
    assert knew_answer(nb) == [0, 2]
    ordinary = prepare_locality(loaded.model, tok, LOCALITY)
    m = score_edited(loaded, [fact], ordinary, nb)
    assert m["ls_nb_known"] == 1.0 and m["nb_known_share"] == pytest.approx(2 / 3)
    masters = snapshot(loaded.adapter)
    try:
        with torch.no_grad():
            for mod in loaded.adapter.modules:
                w = loaded.adapter.weight(mod.name)
                w.add_(torch.randn_like(w) * 5.0)
        edited = score_edited(loaded, [fact], ordinary, nb)
        want = locality_scores(loaded.model, tok, nb.subset([0, 2]))["ls"]
        assert edited["ls_nb_known"] == pytest.approx(want)
    finally:
        restore(loaded.adapter, masters)


def _facts() -> list[Fact]:
    words = ["Rome", "Berlin", "Paris", "Madrid", "London", "Tokyo"]
    return [
        Fact(
            id=f"f{i}",
            prompt=f"The capital of country {i} is",
            target=words[i % 6],
            paraphrases=(f"Q: What is the capital of country {i}? A:",),
            neighborhood=(
                LocalityPrompt(f"The capital of country {i + 50} is", words[(i + 1) % 6]),
            ),
        )
        for i in range(12)
    ]


def test_score_edited_keys(tiny_dir: Path) -> None:
    loaded = load_model(ModelSpec(source=str(tiny_dir), device="cpu"))
    facts = _facts()[:3]
    ordinary = prepare_locality(loaded.model, loaded.tokenizer, LOCALITY)
    nb = prepare_locality(loaded.model, loaded.tokenizer, [f.neighborhood[0] for f in facts])
    m = score_edited(loaded, facts, ordinary, nb)
    assert m["ls_ordinary"] == 1.0 and m["ls_neighborhood"] == 1.0
    assert set(m) >= {"es", "gs", "generation", "ls_gold_ordinary", "ls_gold_neighborhood"}
    assert "ls_ord_by_margin" not in m
    bins = score_edited(loaded, facts, ordinary, nb, margin_edges=(0.5,))["ls_ord_by_margin"]
    assert [(b["lo"], b["hi"]) for b in bins] == [(0.0, 0.5), (0.5, float("inf"))]
    assert sum(b["share"] for b in bins) == pytest.approx(1.0)


@pytest.fixture
def eval_args(tiny_dir: Path, tmp_path: Path) -> argparse.Namespace:
    from service.commands import eval as eval_cmd

    write_facts(tmp_path / "facts.jsonl", _facts())
    write_locality(tmp_path / "loc.jsonl", LOCALITY)
    parser = argparse.ArgumentParser()
    eval_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(
        [
            "eval",
            "--model",
            str(tiny_dir),
            "--device",
            "cpu",
            "--facts",
            str(tmp_path / "facts.jsonl"),
            "--locality",
            str(tmp_path / "loc.jsonl"),
            "--n",
            "1,4,16",
            "--editors",
            "none,malmen,malmen-ridge,ft",
            "--sequential-batches",
            "2",
            "--batch",
            "3",
            "--sequential-full-every",
            "0",
            "--tradeoff-n",
            "4",
            "--eta-scale",
            "0.5,1",
            "--lambda",
            "10",
            "--preserve",
            "0,100",
            "--out",
            str(tmp_path / "out"),
            "--realworld",
        ]
    )


def test_eval_end_to_end_writes_results(eval_args: argparse.Namespace) -> None:
    assert eval_args.func(eval_args) == 0
    out: Path = eval_args.out
    results = json.loads((out / "results.json").read_text())
    for name in ("facts", "realworld"):
        sim = results[name]["simultaneous"]
        assert set(sim) == {"none", "malmen", "malmen-ridge", "ft"}
        for by_n in sim.values():
            assert set(by_n) == {"1", "4", "16"}
    assert "skipped" in results["facts"]["simultaneous"]["ft"]["16"]  # 12 facts < 16
    unedited = results["facts"]["simultaneous"]["none"]["4"]
    assert unedited["ls_ordinary"] == 1.0
    assert unedited["ls_ordinary_sure"] in (1.0, None)  # None: no sure position in the set
    md = (out / "results.md").read_text()
    assert "ls_ordinary_sure" in md
    layers = results["meta"]["edited_layers"]
    assert layers and f"ft and mend included): {_layers(layers)}" in md
    assert _layers([2, 3, 4]) == "2–4" and _layers([5]) == "5" and _layers([1, 3]) == "1, 3"
    assert results["facts"]["simultaneous"]["none"]["4"]["n_same_subject"] == 0  # no subjects
    seq = results["facts"]["sequential"]
    assert set(seq) == {"malmen/joint", "malmen/sequential"}
    assert [h["edits"] for h in seq["malmen/joint"]] == [3, 6]
    first, last = seq["malmen/joint"]
    assert "es" not in first and "es_first_batch" in first  # full metrics after the last only
    assert "es" in last and "es_first_batch" in last
    tradeoff = results["facts"]["tradeoff"]
    assert [t["knob"] for t in tradeoff] == ["eta", "eta", "lambda", "preserve", "preserve"]
    assert [t["preserve"] for t in tradeoff[-2:]] == [0.0, 100.0]
    assert all(t["eta_scale"] == 1.0 for t in tradeoff[2:])
    for png in (
        "facts_vs_n.png",
        "facts_sequential.png",
        "facts_tradeoff.png",
        "realworld_vs_n.png",
    ):
        assert (out / png).stat().st_size > 1000
    md = (out / "results.md").read_text()
    assert "N simultaneous edits" in md and "| malmen |" in md and "| malmen-ridge |" in md
    assert "| preserve |" in md and "ls_same_subject" in md
    targets = md.split("### Against the targets")[1].split("###")[0]
    row = next(x for x in targets.splitlines() if x.startswith("| malmen | 16 |"))
    assert row.count("✓") + row.count("✗") == 5  # ES, GS, both LS, generation
    assert "| malmen | 4 |" not in targets  # no target row at N = 4


def test_against_targets_marks_each_metric_at_targeted_n_only() -> None:
    from editor_core.evaluate import TARGETS, against_targets
    from service.commands.eval import _mark

    m = {"es": 0.958, "gs": 0.786, "ls_ordinary": 0.90, "ls_neighborhood": None}
    checks = against_targets(m, 256)
    assert set(checks) == set(TARGETS[256])
    assert checks["es"] == (0.958, 0.95, True)
    assert checks["gs"] == (0.786, 0.80, False)
    assert checks["ls_ordinary"][2]  # exactly at the target is met
    assert not checks["ls_neighborhood"][2] and not checks["generation"][2]  # not measured
    assert against_targets(m, 64) == {}
    assert _mark(*checks["es"]) == "0.958 ✓"
    assert _mark(*checks["gs"]) == "0.786 ✗ (≥ 0.80)"


def test_with_overrides_sets_preserve_and_leaves_the_rest() -> None:
    from dataclasses import dataclass

    from editor_core.editor import EditorConfig
    from editor_core.evaluate import with_overrides

    @dataclass
    class Holder:
        config: EditorConfig

    ed = with_overrides(Holder(EditorConfig(preserve=100.0)), None, None, 0.0)
    assert ed.config.preserve == 0.0 and ed.config.eta_scale == 1.0
    ed = with_overrides(ed, 0.5, 10.0)
    assert ed.config.preserve == 0.0 and ed.config.lambda_override == 10.0


class WordTokenizer:
    """One token per word: a subject's last token is its last word."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = True) -> Any:
        ids = [self.ids.setdefault(w, len(self.ids)) for w in text.split()]
        return argparse.Namespace(input_ids=ids)


def test_last_token_sharing_marks_edits_and_neighbours_that_meet_at_one_token() -> None:
    def fact(subject: str, template: str, *neighbours: str) -> Fact:
        nb = tuple(LocalityPrompt(template.format(n)) for n in neighbours)
        return Fact(subject, template.format(subject), "x", subject=subject, neighborhood=nb)

    facts = [
        fact("Calderon College", "{} is located in", "Alwina College", "Ada Lovelace"),
        fact("Smith College", "The founder of {} is", "Tara Oliver"),
        fact("Ada Byron", "{} was born in", "Jon Byron"),
        Fact("nosubject", "Something is", "x", neighborhood=(LocalityPrompt("Else is"),)),
    ]
    edits, neighbours = last_token_sharing(WordTokenizer(), facts)
    assert edits == [True, True, False, False]  # two subjects end in "College"
    assert neighbours == {
        "Alwina College is located in": True,
        "Ada Lovelace is located in": False,
        "The founder of Tara Oliver is": False,
        "Jon Byron was born in": True,  # its own fact's subject ends in "Byron"
    }  # "Else is": no subject to read it from


def test_same_subject_prompts_are_the_edited_subjects_unedited_facts(tiny_dir: Path) -> None:
    """`same_subject_prompts`: the pool's facts about an edited subject that are not edited
    (its other relations); `score_edited` scores LS on them as `ls_same_subject`."""
    pool = [
        Fact("a1", "The paris tower is located in", "rome", subject="paris tower"),
        Fact("a2", "The paris tower was built by", "london", subject="paris tower"),
        Fact("b1", "The rome city is located in", "paris", subject="rome city"),
        Fact("c1", "A fact with no subject is", "true"),
    ]
    edited = [pool[0]]
    assert [p.prompt for p in same_subject_prompts(pool, edited)] == [pool[1].prompt]
    assert same_subject_prompts(pool, edited, cap=0) == []
    loaded = load_model(ModelSpec(source=str(tiny_dir), device="cpu"))
    tok = loaded.tokenizer
    same = prepare_locality(loaded.model, tok, same_subject_prompts(pool, edited))
    ordinary = prepare_locality(loaded.model, tok, LOCALITY)
    empty = prepare_locality(loaded.model, tok, [])
    m = score_edited(loaded, edited, ordinary, empty, same_subject=same)
    assert m["ls_same_subject"] == 1.0 and m["n_same_subject"] == 1  # unedited model
    assert score_edited(loaded, edited, ordinary, empty)["ls_same_subject"] is None


def test_requests_drop_keep_prompts_that_another_edit_of_the_subject_changes() -> None:
    """A client does not ask to keep what it edits: a fact's keep prompts lose those that
    another drawn fact about the same subject asks (its prompt, a paraphrase, or — for the
    generator's relations — any phrasing of its relation)."""
    from editor_core.data.formats import Fact
    from editor_core.evaluate import requests_of

    cap = Fact(
        "a",
        "The capital of Ruritania is",
        "Zenda",
        ("Q: Capital of Ruritania? A:",),
        subject="Ruritania",
        relation="capital",
    )
    cur = Fact(
        "b",
        "The currency of Ruritania is the",
        "crown",
        subject="Ruritania",
        relation="currency",
        keep=(
            "Ruritania is governed from",
            "q: capital of ruritania?  a:",
            "Ruritania's capital city is",
            "Ruritania uses the",
        ),
    )
    other = Fact(
        "c",
        "The capital of Freedonia is",
        "Elba",
        subject="Freedonia",
        relation="capital",
        keep=("The official language of Freedonia is",),
    )
    reqs = requests_of([cur, other])
    assert reqs[0].keep == cur.keep and reqs[1].keep == other.keep  # nothing else edits them
    (alone,) = requests_of([cur], edited=[cur, cap])  # the run edits the capital too
    # gone: a paraphrase of the capital edit (case, spacing aside) and the generator's
    # capital phrasing "{s}'s capital city is"; a capital question in words neither knows
    # is the sender's to leave out
    assert alone.keep == ("Ruritania is governed from", "Ruritania uses the")


def test_malmen_config_overrides_the_editors_settings_before_the_other_flags(
    eval_args: argparse.Namespace,
) -> None:
    """`--malmen-config` reads as FACTPATCH_EDITOR_CONFIG does (partial value_opt updates,
    unknown names an error); a --malmen-* flag given as well wins."""
    from editor_core.config import ModelSpec
    from editor_core.loading import load_model
    from service.commands.eval import build_editors

    loaded = load_model(ModelSpec(source=str(eval_args.model), device="cpu"))
    eval_args.editors = "malmen"
    eval_args.malmen_config = {"eta_scale": 0.25, "anchors": 2, "value_opt": {"keep_weight": 3}}
    eval_args.malmen_anchors = 5
    editors, _ = build_editors(loaded, eval_args)
    cfg = editors["malmen"].config
    assert (cfg.eta_scale, cfg.anchors, cfg.value_opt.keep_weight) == (0.25, 5, 3)
    assert cfg.value_opt.steps == 100  # the rest of value_opt as it was
    eval_args.malmen_config = {"value_opt": {"keep_wieght": 3}}
    with pytest.raises(ValueError, match="keep_wieght"):
        build_editors(loaded, eval_args)


def _many_facts(k: int) -> list[Fact]:
    return [Fact(id=f"m{i}", prompt=f"Fact number {i} is", target="x") for i in range(k)]


def test_draws_are_disjoint_and_the_first_is_the_one_draw_set() -> None:
    from editor_core.evaluate import sample_draws, sample_facts

    facts = _many_facts(50)
    draws = sample_draws(facts, 8, 0, 4)
    assert [len(d) for d in draws] == [8, 8, 8, 8]
    ids = [f.id for d in draws for f in d]
    assert len(set(ids)) == 32  # disjoint
    assert draws[0] == sample_facts(facts, 8, 0)  # a one-draw run keeps its facts,
    assert draws[0] == random.Random(8).sample(facts, 8)  # the ones every earlier run drew
    assert sample_facts(facts, 40, 3) == random.Random(3 * 100_003 + 40).sample(facts, 40)
    assert draws == sample_draws(facts, 8, 0, 4)  # reproducible
    assert draws[1:] != sample_draws(facts, 8, 1, 4)[1:]  # the seed picks them
    assert len(sample_draws(facts, 8, 0, 10)) == 6  # as many as fit: 50 // 8
    assert sample_draws(facts, 51, 0, 3) == [] and sample_draws(facts, 8, 0, 1) == [draws[0]]


def test_summarise_draws_means_spread_and_interval() -> None:
    from editor_core.evaluate import MIN_DRAWS_FOR_CI, summarise_draws

    one = {"n": 4, "es": 0.5, "gs": None, "peak_rss_mb": 10.0}
    assert summarise_draws([one]) == {**one, "n_draws": 1}
    es = [1.0, 0.8, 0.9, 0.7, 0.6, 1.0]
    rows = [
        {"n": 4, "es": v, "gs": None, "ls_ordinary": 1.0, "peak_rss_mb": 10.0 + i, "fact_ids": []}
        for i, v in enumerate(es)
    ]
    m = summarise_draws(rows)
    assert m["n"] == 4 and m["n_draws"] == 6 and m["draws"] == rows
    assert m["es"] == pytest.approx(sum(es) / 6)
    assert m["peak_rss_mb"] == 15.0  # the peak over draws, not their mean
    assert "gs" not in m and "gs" not in m["spread"]  # measured by no draw
    assert m["spread"]["es"]["sd"] == pytest.approx(torch.tensor(es).std().item())
    lo, hi = m["spread"]["es"]["ci95"]
    assert min(es) < lo < m["es"] < hi < max(es)
    assert m["spread"]["ls_ordinary"] == {"sd": 0.0, "draws": 6, "ci95": [1.0, 1.0]}
    few = summarise_draws(rows[: MIN_DRAWS_FOR_CI - 1])
    assert "ci95" not in few["spread"]["es"] and few["spread"]["es"]["sd"] > 0


def test_eval_with_draws_scores_disjoint_sets(
    eval_args: argparse.Namespace, caplog: pytest.LogCaptureFixture
) -> None:
    from editor_core.data import read_facts
    from editor_core.evaluate import sample_facts
    from service.commands.eval import _mark

    eval_args.draws = 3
    eval_args.n = "1,4,8"
    eval_args.editors = "none,malmen"
    eval_args.sequential_batches = 0
    eval_args.tradeoff_n = 0
    eval_args.realworld = False
    with caplog.at_level("INFO", logger="editor_core.sweeps"):
        assert eval_args.func(eval_args) == 0
    assert "malmen N=4 draw 3/3: es " in caplog.text  # each draw logged as it ends
    assert "N=8: 1 draws of disjoint facts fit, not 3" in caplog.text  # 12 facts
    results = json.loads((eval_args.out / "results.json").read_text())
    assert results["meta"]["draws"] == 3
    facts = read_facts(eval_args.facts)
    for editor in ("none", "malmen"):
        m = results["facts"]["simultaneous"][editor]["4"]
        assert m["n_draws"] == 3 and len(m["draws"]) == 3
        ids = [d["fact_ids"] for d in m["draws"]]
        assert ids[0] == [f.id for f in sample_facts(facts, 4, 0) or []]
        assert len({i for d in ids for i in d}) == 12  # three disjoint sets of four
        for metric in ("es", "ls_neighborhood"):
            assert m[metric] == pytest.approx(sum(d[metric] for d in m["draws"]) / 3)
    assert results["facts"]["simultaneous"]["malmen"]["8"]["n_draws"] == 1
    md = (eval_args.out / "results.md").read_text()
    assert "### Spread over draws" in md and "| malmen | 4 | 3 |" in md
    assert _mark(0.944, 0.95, False, [0.931, 0.957]) == "0.944 ✗ (≥ 0.95; 95 % CI 0.931–0.957)"
    assert _mark(0.96, 0.95, True, [0.95, 0.97]) == "0.960 ✓ (95 % CI 0.950–0.970)"


def test_eval_protect_scores_the_held_prompts_and_the_rest(
    eval_args: argparse.Namespace, tmp_path: Path
) -> None:
    """--protect: every MALMEN editor holds the listed prompts; the report scores them
    (ls_protected) and the neighbourhood prompts not among them (ls_nb_unprotected)."""
    held = [f.neighborhood[0] for f in _facts()[:6]]  # half the neighbourhood prompts
    write_locality(tmp_path / "protect.jsonl", held)
    eval_args.editors = "none,malmen"
    eval_args.n = "8"
    eval_args.sequential_batches = 2
    eval_args.batch = 4
    eval_args.tradeoff_n = 0
    eval_args.realworld = False
    eval_args.malmen_config = {  # an editor that edits the tiny model: optimised values
        "values": "optimise",
        "lambda_override": 1e-3,
        "protect_margin": 0.0,  # the random tiny model is sure of nothing
        "value_opt": {"steps": 60, "lr": 0.3, "stop_loss": 0.02, "prefixes": [""], "bf16": False},
    }
    runs = {}
    for name, weight in (("free", 0.0), ("held", 1.0)):  # weight 0: scored, not held
        eval_args.protect = tmp_path / "protect.jsonl"
        eval_args.protect_weight = weight
        eval_args.out = tmp_path / name
        assert eval_args.func(eval_args) == 0
        runs[name] = json.loads((eval_args.out / "results.json").read_text())
    res = runs["held"]
    assert res["meta"]["malmen_protect_weight"] == 1.0 and res["meta"]["protect_sha256"]
    assert res["facts"]["n_protected"] == 6
    none, free, kept = (
        r["facts"]["simultaneous"][e]["8"]
        for r, e in ((res, "none"), (runs["free"], "malmen"), (res, "malmen"))
    )
    assert none["ls_protected"] == 1.0 and none["n_protected"] == 6
    assert 0.0 <= kept["nb_unprotected_share"] < 1.0
    # the unlisted neighbours split by whether a listed prompt names their subject
    split = [kept["ls_nb_unprotected_named"], kept["ls_nb_unprotected_unnamed"]]
    known = [v for v in split if v is not None]
    assert known and min(known) - 1e-9 <= kept["ls_nb_unprotected"] <= max(known) + 1e-9
    # the hold is what keeps them: the same edits unheld move more of them.  (The tiny
    # model's 64-wide keys cannot tell these prompts from the edits', which share their
    # template word for word: a weight of 1 already costs ES, 10 takes all of it.)
    assert free["ls_protected"] + 0.2 < kept["ls_protected"]
    assert kept["es"] > 0.0
    joint = [r["facts"]["sequential"]["malmen/joint"][-1]["ls_protected"] for r in runs.values()]
    assert joint[0] + 0.2 < joint[1]
    md = (tmp_path / "held" / "results.md").read_text()
    assert "ls_protected" in md and "ls_nb_unprotected" in md and "protect.jsonl" in md


def test_unlisted_neighbours_split_by_whether_the_list_names_their_subject() -> None:
    from editor_core.evaluate import LocalitySet, _unprotected_parts

    lp = LocalityPrompt
    facts = [
        Fact("a", "Alwina College was founded in", "1900", subject="Alwina College",
             neighborhood=(lp("Calderon College was founded in"), lp("Brisa Group was founded in"))),
        Fact("b", "The CEO of Brisa Group is", "Ann", subject="Brisa Group",
             neighborhood=(lp("The CEO of Calderon College is"), lp("The CEO of Dunmore AG is"))),
    ]  # fmt: skip
    nb = [p for f in facts for p in f.neighborhood]
    listed = [lp("The CEO of Calderon College is")]

    def loc(prompts: list[LocalityPrompt]) -> LocalitySet:
        return LocalitySet(prompts, [], [], [], [])

    parts = _unprotected_parts(facts, loc(nb), loc(listed))
    assert parts == {
        "nb_unprotected": [0, 1, 3],
        "nb_unprotected_named": [0],  # Calderon College: the listed prompt names it
        "nb_unprotected_unnamed": [1, 3],
    }
