"""Tiny random models and a tiny BPE tokenizer, built in-process (no downloads).

Every registered architecture gets a 2-layer model with hidden size 32-64 and a ~400-token
byte-level BPE vocabulary trained on a few hundred synthetic sentences, so tokenisation
behaves like GPT-2/Llama-3 (words carry their leading space).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    GPTJConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

VOCAB = 400
CORPUS_WORDS = [
    "the",
    "capital",
    "of",
    "france",
    "is",
    "paris",
    "rome",
    "berlin",
    "madrid",
    "london",
    "tokyo",
    "city",
    "country",
    "river",
    "mountain",
    "language",
    "spoken",
    "in",
    "born",
    "works",
    "for",
    "located",
    "president",
    "plays",
    "instrument",
    "company",
    "founded",
    "by",
    "eiffel",
    "tower",
    "colosseum",
    "a",
    "an",
    "and",
    "what",
    "which",
    "who",
    "where",
    "was",
    "were",
]


def corpus() -> list[str]:
    g = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(600):
        idx = torch.randint(0, len(CORPUS_WORDS), (8,), generator=g).tolist()
        lines.append(" ".join(CORPUS_WORDS[i] for i in idx).capitalize() + ".")
    lines.append("The capital of France is Paris. The Eiffel Tower is located in Paris.")
    return lines


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.padding_side = "right"
    return fast


def _common(vocab: int) -> dict:
    return {"vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}


def tiny_config(model_type: str, vocab: int = VOCAB, layers: int = 2) -> PretrainedConfig:
    c = _common(vocab)
    llama_like = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **c,
    )
    if model_type == "llama":
        return LlamaConfig(**llama_like)
    if model_type == "qwen2":
        return Qwen2Config(**llama_like)
    if model_type == "mistral":
        return MistralConfig(**llama_like)
    if model_type == "gemma":
        return GemmaConfig(head_dim=8, **llama_like)
    if model_type == "gemma2":
        return Gemma2Config(head_dim=8, **llama_like)
    if model_type == "gemma3_text":
        return Gemma3TextConfig(head_dim=8, **llama_like)
    if model_type == "gpt2":
        return GPT2Config(n_embd=32, n_layer=layers, n_head=4, n_positions=128, **c)
    if model_type == "gptj":
        return GPTJConfig(n_embd=32, n_layer=layers, n_head=4, rotary_dim=4, n_positions=128, **c)
    if model_type == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=128,
            **c,
        )
    raise KeyError(model_type)


TINY_TYPES = (
    "llama",
    "qwen2",
    "mistral",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gpt2",
    "gptj",
    "gpt_neox",
)


def tiny_model(model_type: str = "llama", seed: int = 0, layers: int = 2) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, layers=layers))
    model.eval()
    return model


def save_tiny(path: Path, model_type: str = "llama", seed: int = 0, layers: int = 2) -> Path:
    """Write a tiny model + tokenizer directory loadable by `load_model`."""
    path.mkdir(parents=True, exist_ok=True)
    tiny_model(model_type, seed, layers).save_pretrained(path, safe_serialization=True)
    tiny_tokenizer().save_pretrained(path)
    return path
