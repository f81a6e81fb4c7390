"""The LM's tokenizer: a local Hugging Face tokenizer with one whole token per SID code.

Built model: a byte-level BPE trained offline (``tokenizers``) on the dataset's item texts and the
task templates, with Qwen's chat markers as special tokens. Real weights: the base directory's own
tokenizer. Either way the SID code tokens and ``<think>``/``</think>`` are added as ordinary (not
special) tokens, so decoding with special tokens skipped, as RL libraries do, still shows them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from s2gr_core.models.sidreasoner.tokens import END_THINK, THINK

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL = (PAD, IM_START, IM_END)
IGNORE = -100  # label of an untrained position


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE of ``vocab_size`` (bytes, merges and the chat markers) trained on ``texts``."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=IM_END, pad_token=PAD, additional_special_tokens=[IM_START]
    )


def add_sid_tokens(tokenizer: PreTrainedTokenizerBase, code_tokens: list[list[str]]) -> int:
    """Add every code token (and the think markers where missing) as whole, non-special tokens;
    returns how many were new. Each code is then exactly one id."""
    wanted = [THINK, END_THINK, *sorted(t for position in code_tokens for t in position)]
    new = [t for t in wanted if t not in tokenizer.get_vocab()]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in new])
    return len(new)


def build_tokenizer(base_model: str, texts: Iterable[str], vocab_size: int, code_tokens: list[list[str]], out: Path):
    """The tokenizer of the run, saved to ``out`` as a Hugging Face directory."""
    if base_model:
        tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer = train_bpe(texts, vocab_size)
    add_sid_tokens(tokenizer, code_tokens)
    missing = [t for t in SPECIAL[1:] if t not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(f"{base_model}: the tokenizer lacks the chat markers {missing} the task prompts use")
    tokenizer.save_pretrained(out)
    return tokenizer


def code_token_ids(tokenizer: PreTrainedTokenizerBase, code_tokens: list[list[str]]) -> list[np.ndarray]:
    """Per position, the token id of every code (position p: ``vocab[p]`` ids); checks each code is one token."""
    ids = []
    for position in code_tokens:
        row = tokenizer.convert_tokens_to_ids(position)
        if any(i is None or i == tokenizer.unk_token_id for i in row):
            raise ValueError("the tokenizer lacks SID code tokens: rebuild it with the sids stage's SIDs")
        ids.append(np.asarray(row, dtype=np.int64))
    return ids


def encode(
    tokenizer: PreTrainedTokenizerBase,
    kinds: list[str],
    prompts: list[str],
    responses: list[str],
    train_end: bool,
    max_length: int,
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and labels of each sample (SIDREASONER.md §2, §4).

    ``chat``: prompt tokens are not trained, the response is; the end-of-turn token after it is
    trained only when ``train_end`` (stage 2), and absent otherwise (stage 1 does not train it).
    ``lm``: every token is trained, end-of-text included. Sequences longer than ``max_length`` lose
    their oldest tokens. Prompt and response are tokenized apart, so the boundary is exact.
    """
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    end, eot = tokenizer.convert_tokens_to_ids(IM_END), tokenizer.pad_token_id
    ids_out, labels_out = [], []
    for kind, p, r in zip(kinds, prompt_ids, response_ids, strict=True):
        if kind == "lm":
            ids, labels = [*p, *r, eot], [*p, *r, eot]
        else:
            tail = [end] if train_end else []
            ids, labels = [*p, *r, *tail], [IGNORE] * len(p) + [*r, *tail]
        ids_out.append(ids[-max_length:])
        labels_out.append(labels[-max_length:])
    return ids_out, labels_out
