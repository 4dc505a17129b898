"""Ordinary text written by the model itself, for the preservation prior.

MEMIT estimates E[k kᵀ] over Wikipedia; no corpus can be downloaded here, and the
generator's locality pool is templated sentences.  The model's own samples are the next
best thing: prose on varied topics, in the model's own distribution, so the prior covers
the keys the model actually produces on text it finds ordinary.  Prompts are chat requests
("Write a short encyclopedia paragraph about {topic}.") over Faker topics; only the
answers are kept, as locality prompts without an answer (the prior reads every token).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch
from faker import Faker

from editor_core.data.formats import LocalityPrompt
from editor_core.progress import bar as progress_bar

REQUESTS = (
    "Write a short encyclopedia paragraph about {topic}.",
    "Explain {topic} to a curious student in a few sentences.",
    "Tell a short story that involves {topic}.",
    "Write a news report about {topic}.",
    "Describe the history of {topic}.",
    "What should a visitor know about {topic}?",
    "Write a letter to a friend about {topic}.",
    "Give some practical advice about {topic}.",
)


def _topics(fake: Faker, rng: random.Random) -> Iterator[str]:
    makers = (
        lambda: fake.city(),
        lambda: fake.country(),
        lambda: f"the job of a {fake.job().lower()}",
        lambda: fake.name(),
        lambda: f"the company {fake.company()}",
        lambda: fake.word() + "s",
        lambda: fake.catch_phrase().lower(),
        lambda: f"{fake.first_name()}'s trip to {fake.city()}",
        lambda: fake.bs(),
        lambda: f"the year {fake.year()}",
    )
    while True:
        yield rng.choice(makers)()


def requests(n: int, seed: int = 0) -> list[str]:
    """n chat requests over varied topics, reproducible from `seed`."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)  # the caller's global random state is left alone
    topics = _topics(fake, rng)
    return [rng.choice(REQUESTS).format(topic=next(topics)) for _ in range(n)]


def _as_chat(tokenizer: Any, request: str) -> str:
    """The request as the model's chat template frames a user turn (plain text without one)."""
    if getattr(tokenizer, "chat_template", None) is None:
        return request + "\n"
    return str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
        )
    )


@torch.no_grad()
def sample_text(
    model: Any,
    tokenizer: Any,
    n: int,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    seed: int = 0,
    temperature: float = 0.9,
    min_words: int = 8,
    progress: bool = False,
) -> list[LocalityPrompt]:
    """Up to n passages the model writes itself (sampled at `temperature`, one per request;
    passages under `min_words` words are dropped), whitespace-normalised."""
    asks = requests(n, seed)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    out: list[LocalityPrompt] = []
    with progress_bar(total=n, desc="sampling text", progress=progress) as bar:
        for s in range(0, n, batch_size):
            chats = [_as_chat(tokenizer, a) for a in asks[s : s + batch_size]]
            enc = tokenizer(
                chats,
                return_tensors="pt",
                padding=True,
                padding_side="left",  # generation continues at the right edge
                add_special_tokens=False,
            ).to(device)
            gen = model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_p=0.95,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts = tokenizer.batch_decode(gen[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
            out += [LocalityPrompt(" ".join(t.split())) for t in texts if len(t.split()) >= min_words]
            bar.update(len(chats))
    return out
