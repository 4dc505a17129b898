"""Offline synthetic fact generator (Faker, seeded): train / val / test facts + locality.

A fictional world: people, companies, bands, films, universities, countries, products and
teams, each with a true value for every relation that applies to it (relations.py).  A
fact edits one (subject, relation) to a counterfactual value of the same type.

Splits are disjoint BY ENTITY (a validation/test subject never appears in training, not
even in a locality prompt) and BY PHRASING (validation/test facts, their paraphrases and
their neighbourhood prompts use only the held-out phrasings of each relation).

Two locality pools per split:
- ordinary: well-known facts and plain text (commonsense.py), split by fact;
- neighbourhood: the same relation and phrasing with another subject, answer = that
  subject's own value.  Neighbour subjects are never edited, so a neighbourhood answer
  never conflicts with an edit in the same batch.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from editor_core.data.commonsense import FREE_TEMPLATES, ordinary_prompts
from editor_core.data.formats import Fact, LocalityPrompt, write_facts, write_locality
from editor_core.data.pools import SPORT_POSITIONS, VALUE_POOLS, NameMaker
from editor_core.data.relations import RELATIONS, Relation

log = logging.getLogger(__name__)

PERSON_KINDS = ("athlete", "musician", "professional")
SUBJECT_TYPES = (*PERSON_KINDS, "company", "band", "film", "university", "country", "product", "team")
SPLITS = ("train", "val", "test")
# Value-only entities (values of entity type, never subjects): how many of each.
VALUE_ENTITIES = {"person": 400, "company": 250, "label": 60, "team": 200}
MIN_NEIGHBOURS = 8
PACKAGE_DIR = Path(__file__).parent


@dataclass(frozen=True)
class GeneratorConfig:
    n_train: int = 20_000
    n_val: int = 1_000
    n_test: int = 2_000
    seed: int = 0
    n_paraphrases: int = 2
    # training phrasings written as each fact's `edit_paraphrases` (None: n_paraphrases);
    # they come from their own random stream, so this changes no other field
    n_edit_paraphrases: int | None = None
    subjects_per_fact: float = 2.0  # edit-subject pool size per relation, as a multiple of n_r
    neighbours_per_fact: float = 0.25  # neighbour-only subjects, as a multiple of n_r
    ordinary_split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    free_text_per_fact: float = 0.25  # free-text locality prompts, as a multiple of facts


@dataclass
class Entity:
    name: str
    type: str
    values: dict[str, str] = field(default_factory=dict)


@dataclass
class SplitData:
    facts: list[Fact]
    locality: list[LocalityPrompt]
    neighborhood: list[LocalityPrompt]


def _matches(relation: Relation, entity_type: str) -> bool:
    if relation.subject_type == "person":
        return entity_type in PERSON_KINDS
    return relation.subject_type == entity_type


def _fill(template: str, subject: str) -> str:
    text = template.format(s=subject)
    return text[0].upper() + text[1:]


class World:
    """Entities and their true values; draws type-correct counterfactuals."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.names = NameMaker(seed)
        self.value_names: dict[str, list[str]] = {
            kind: [self.names.make(kind) for _ in range(n)] for kind, n in VALUE_ENTITIES.items()
        }
        # Teams are values of `team` (an athlete's club): give each a sport.
        self.team_sport = {t: self.rng.choice(VALUE_POOLS["sport"]) for t in self.value_names["team"]}

    def candidates(self, value_type: str) -> tuple[str, ...] | list[str]:
        if value_type in VALUE_POOLS:
            return VALUE_POOLS[value_type]
        return self.value_names[value_type]

    def true_value(self, entity: Entity, relation: Relation) -> str:
        r = self.rng
        if relation.name == "sport" or relation.name == "team_sport":
            return r.choice(VALUE_POOLS["sport"])
        if relation.name == "position":
            return r.choice(SPORT_POSITIONS[entity.values["sport"]])
        if relation.name == "team":
            same = [t for t, s in self.team_sport.items() if s == entity.values["sport"]]
            return r.choice(same or self.value_names["team"])
        return r.choice(self.candidates(relation.value_type))

    def counterfactual(self, relation: Relation, true: str) -> str:
        pool = [v for v in self.candidates(relation.value_type) if v != true]
        return self.rng.choice(pool)

    def make_entity(self, entity_type: str) -> Entity:
        kind = "person" if entity_type in PERSON_KINDS else entity_type
        entity = Entity(self.names.make(kind), entity_type)
        # RELATIONS lists `sport` before `team` and `position`, which depend on it.
        for rel in RELATIONS:
            if _matches(rel, entity_type):
                entity.values[rel.name] = self.true_value(entity, rel)
        return entity


def _per_relation(n: int) -> list[int]:
    base, extra = divmod(n, len(RELATIONS))
    return [base + (1 if i < extra else 0) for i in range(len(RELATIONS))]


def _realworld_subjects() -> set[str]:
    """Subjects of the shipped real-world sets (kept out of synthetic locality pools)."""
    subjects: set[str] = set()
    for name in ("realworld.jsonl", "realworld_locality.jsonl"):
        path = PACKAGE_DIR / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            obj = json.loads(line)
            for item in [obj, *obj.get("neighborhood", []), *obj.get("locality", [])]:
                if item.get("subject"):
                    subjects.add(item["subject"])
    return subjects


def split_ordinary(config: GeneratorConfig) -> dict[str, list[LocalityPrompt]]:
    """Ordinary locality prompts split by fact (all phrasings of one fact in one split)."""
    banned = _realworld_subjects()
    by_group: dict[str, list[LocalityPrompt]] = {}
    for group, prompt in ordinary_prompts():
        if any(s in prompt.prompt for s in banned):
            continue
        by_group.setdefault(group, []).append(prompt)
    groups = sorted(by_group)
    random.Random(config.seed + 17).shuffle(groups)
    n_train = round(config.ordinary_split[0] * len(groups))
    n_val = round(config.ordinary_split[1] * len(groups))
    parts = {
        "train": groups[:n_train],
        "val": groups[n_train : n_train + n_val],
        "test": groups[n_train + n_val :],
    }
    return {split: [p for g in gs for p in by_group[g]] for split, gs in parts.items()}


class _SplitBuilder:
    def __init__(self, world: World, config: GeneratorConfig, split: str, n: int):
        self.world, self.config, self.split = world, config, split
        self.rng = random.Random(f"{config.seed}-{split}")
        # keep prompts and edit paraphrases draw from their own streams, so adding them
        # changed no other field
        self.keep_rng = random.Random(f"{config.seed}-{split}-keep")
        self.para_rng = random.Random(f"{config.seed}-{split}-edit-paraphrases")
        self.counts = _per_relation(n)
        need: dict[str, int] = {}
        for rel, n_r in zip(RELATIONS, self.counts, strict=True):
            types = PERSON_KINDS if rel.subject_type == "person" else (rel.subject_type,)
            for t in types:
                need[t] = max(need.get(t, 0), n_r)
        self.edit: dict[str, list[Entity]] = {}
        self.neighbours: dict[str, list[Entity]] = {}
        for t in SUBJECT_TYPES:
            n_edit = max(1, round(need.get(t, 0) * config.subjects_per_fact))
            n_nb = max(MIN_NEIGHBOURS, round(need.get(t, 0) * config.neighbours_per_fact))
            self.edit[t] = [world.make_entity(t) for _ in range(n_edit)]
            self.neighbours[t] = [world.make_entity(t) for _ in range(n_nb)]

    def phrasings(self, rel: Relation) -> tuple[str, ...]:
        return rel.train_phrasings if self.split == "train" else rel.heldout_phrasings

    def pool(self, groups: dict[str, list[Entity]], rel: Relation) -> list[Entity]:
        return [e for t, es in groups.items() if _matches(rel, t) for e in es]

    def fact(self, i: int, rel: Relation, subject: Entity, ordinary: list[LocalityPrompt]) -> Fact:
        rng = self.rng
        phrasings = self.phrasings(rel)
        main = rng.choice(phrasings)
        others = [p for p in phrasings if p != main]
        paraphrases = rng.sample(others, min(self.config.n_paraphrases, len(others)))
        true = subject.values[rel.name]
        target = self.world.counterfactual(rel, true)
        neighbours = self.pool(self.neighbours, rel)
        nb = rng.choice(neighbours)
        for _ in range(8):  # prefer a neighbour whose answer differs from the new target
            if nb.values[rel.name] != target:
                break
            nb = rng.choice(neighbours)
        return Fact(
            id=f"{self.split}-{i:06d}",
            prompt=_fill(main, subject.name),
            target=target,
            paraphrases=tuple(_fill(p, subject.name) for p in paraphrases),
            subject=subject.name,
            relation=rel.name,
            true_answer=true,
            locality=(rng.choice(ordinary),) if ordinary else (),
            neighborhood=(LocalityPrompt(_fill(main, nb.name), nb.values[rel.name]),),
            keep=self.keep(rel, subject),
            edit_paraphrases=self.edit_paraphrases(rel, subject, (main, *paraphrases)),
        )

    def edit_paraphrases(self, rel: Relation, subject: Entity, used: tuple[str, ...]) -> tuple[str, ...]:
        """The fact in other words a client might send with the edit: TRAINING phrasings
        of its relation that the fact itself does not use (GS is scored on held-out ones)."""
        free = [p for p in rel.train_phrasings if p not in used]
        n = self.config.n_edit_paraphrases
        n = self.config.n_paraphrases if n is None else n
        chosen = self.para_rng.sample(free, min(n, len(free)))
        return tuple(_fill(p, subject.name) for p in chosen)

    def keep(self, rel: Relation, subject: Entity) -> tuple[str, ...]:
        """One prompt for each of the subject's other relations, in random order — what a
        client asks the edit to leave alone.  Always a TRAINING phrasing, in every split:
        validation and test facts about the subject are asked in held-out phrasings, so
        LS on them (`ls_same_subject`) measures whether keeping carries over to new words."""
        others = [r for r in RELATIONS if r.name != rel.name and _matches(r, subject.type)]
        prompts = [_fill(self.keep_rng.choice(r.train_phrasings), subject.name) for r in others]
        self.keep_rng.shuffle(prompts)
        return tuple(prompts)

    def free_text(self, n: int) -> list[LocalityPrompt]:
        cities = VALUE_POOLS["city"]
        return [
            LocalityPrompt(self.rng.choice(FREE_TEMPLATES).format(
                name=self.world.names.make("person"), city=self.rng.choice(cities)))
            for _ in range(n)
        ]

    def build(self, known: list[LocalityPrompt], n: int) -> SplitData:
        ordinary = known + self.free_text(round(n * self.config.free_text_per_fact))
        self.rng.shuffle(ordinary)
        facts: list[Fact] = []
        for rel, n_r in zip(RELATIONS, self.counts, strict=True):
            subjects = self.pool(self.edit, rel)
            for subject in self.rng.sample(subjects, min(n_r, len(subjects))):
                facts.append(self.fact(len(facts), rel, subject, ordinary))
        self.rng.shuffle(facts)
        neighborhood = [
            LocalityPrompt(_fill(self.rng.choice(self.phrasings(rel)), e.name), e.values[rel.name])
            for rel in RELATIONS
            for e in self.pool(self.neighbours, rel)
        ]
        self.rng.shuffle(neighborhood)
        return SplitData(facts, ordinary, neighborhood)


def generate(config: GeneratorConfig | None = None) -> dict[str, SplitData]:
    """The three splits, deterministic for `config.seed`."""
    config = config or GeneratorConfig()
    world = World(config.seed)
    ordinary = split_ordinary(config)
    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    out: dict[str, SplitData] = {}
    for split in SPLITS:
        builder = _SplitBuilder(world, config, split, sizes[split])
        out[split] = builder.build(ordinary[split], sizes[split])
        log.info("%s: %d facts, %d ordinary and %d neighbourhood prompts", split,
                 len(out[split].facts), len(out[split].locality), len(out[split].neighborhood))
    return out


def write_splits(data: dict[str, SplitData], out_dir: str | Path, config: GeneratorConfig) -> Path:
    """`{split}.jsonl`, `locality_{split}.jsonl`, `neighborhood_{split}.jsonl`, manifest.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for split, d in data.items():
        write_facts(out / f"{split}.jsonl", d.facts)
        write_locality(out / f"locality_{split}.jsonl", d.locality)
        write_locality(out / f"neighborhood_{split}.jsonl", d.neighborhood)
        counts[split] = {
            "facts": len(d.facts), "locality": len(d.locality), "neighborhood": len(d.neighborhood)
        }
    manifest = {
        "generator": "editor_core.data.generator",
        "config": asdict(config),
        "counts": counts,
        "relations": {
            r.name: {"subject": r.subject_type, "value": r.value_type,
                     "train_phrasings": list(r.train_phrasings),
                     "heldout_phrasings": list(r.heldout_phrasings)}
            for r in RELATIONS
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out
