"""The causal LM: a local Hugging Face directory, or a small Qwen3-architecture model built from a config."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM
from transformers.utils import logging as hf_logging

from s2gr_core.config.sidreasoner import LMConfig

# a bar per shard when a one-shard model is saved or loaded says nothing the stage's own line does not
hf_logging.disable_progress_bar()


def build_model(cfg: LMConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """The stage-1 starting point, its vocabulary sized to ``tokenizer`` (SID tokens included).

    Real weights: new rows (the SID and think tokens) start at the mean of the existing embeddings, the
    transformers default of ``resize_token_embeddings``.
    """
    torch.manual_seed(seed)
    if cfg.base_model:
        model = AutoModelForCausalLM.from_pretrained(cfg.base_model, local_files_only=True, dtype=torch.float32)
        model.resize_token_embeddings(len(tokenizer))
    else:
        config = Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden,
            intermediate_size=cfg.ffn,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            num_key_value_heads=cfg.kv_heads,
            head_dim=cfg.head_dim,
            max_position_embeddings=cfg.max_length,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
        )
        model = Qwen3ForCausalLM(config)
    greedy(model, tokenizer)
    return model


def greedy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Deterministic generation whatever the directory's generation config says (a saved config that
    samples made public "beam search" sample): decoding here never samples unless asked to."""
    gen = model.generation_config
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k = False, None, None, None
    gen.pad_token_id, gen.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id


def load_lm(path: Path, device: torch.device) -> PreTrainedModel:
    """A phase's saved model (``save_pretrained`` directory), in eval mode on ``device``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # generation-config notes about unset sampling fields
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return model.to(device).eval()
