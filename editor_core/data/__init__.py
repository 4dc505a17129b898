"""Fact data: the native JSONL format, public-benchmark loaders, the synthetic generator
and the shipped real-world sets (`realworld.jsonl`, `realworld_locality.jsonl`)."""

from pathlib import Path

from editor_core.data.formats import (
    Fact,
    FactFormatError,
    LocalityPrompt,
    read_facts,
    read_locality,
    write_facts,
    write_locality,
)
from editor_core.data.public import load_counterfact, load_zsre

PACKAGE_DIR = Path(__file__).parent
REALWORLD_FACTS = PACKAGE_DIR / "realworld.jsonl"
REALWORLD_LOCALITY = PACKAGE_DIR / "realworld_locality.jsonl"


def realworld_facts() -> list[Fact]:
    """The hand-written real-world counterfactual edits (never used in training)."""
    return read_facts(REALWORLD_FACTS)


def realworld_locality() -> list[LocalityPrompt]:
    """Well-known true facts, for locality on real knowledge."""
    return read_locality(REALWORLD_LOCALITY)


__all__ = [
    "REALWORLD_FACTS",
    "REALWORLD_LOCALITY",
    "Fact",
    "FactFormatError",
    "LocalityPrompt",
    "load_counterfact",
    "load_zsre",
    "read_facts",
    "read_locality",
    "realworld_facts",
    "realworld_locality",
    "write_facts",
    "write_locality",
]
