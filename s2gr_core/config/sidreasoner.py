"""Parameters of SIDReasoner: an LLM that reasons over SID tokens (SIDREASONER.md).

One section, ``sidreasoner``, with a sub-section per phase so DVC re-runs only the phase whose
parameters changed: ``model`` (the base LM and its tokenizer), ``corpus`` (the stage-1/2 tasks),
``align`` (stage-1 SFT), ``reason`` (stage-2 SFT), ``grpo`` (stage-3 RL) and ``infer`` (constrained decoding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from s2gr_core.config.base import _help, require

TASKS = (
    "sid_to_sid",
    "title_to_sid",
    "sid_to_title",
    "sid_to_title_next",
    "title_to_title_next",
    "title_to_sid_next",
    "item_paragraph",
    "sequence_narrative",
)


@dataclass(frozen=True, slots=True)
class LMConfig:
    base_model: str = _help(
        "A local Hugging Face causal-LM directory (e.g. Qwen3-0.6B weights), relative to the project root; "
        "empty = a small Qwen3-architecture model built from the sizes below, with a byte-level BPE "
        "tokenizer trained on the dataset's item texts (no language knowledge: see docs/models.md)."
    )
    vocab_size: int = _help("Text vocabulary of the trained BPE tokenizer (SID and chat tokens come on top).")
    hidden: int = _help("Hidden size of the built model.")
    layers: int = _help("Decoder layers of the built model.")
    heads: int = _help("Attention heads of the built model.")
    kv_heads: int = _help("Key/value heads (grouped-query attention; must divide heads).")
    head_dim: int = _help("Size of each attention head.")
    ffn: int = _help("Feed-forward (SwiGLU) width of the built model.")
    max_length: int = _help("Longest training sequence in tokens; longer ones are cut from the left.")

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden", "layers", "heads", "kv_heads", "head_dim", "ffn", "max_length"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.heads % self.kv_heads == 0, "kv_heads", f"{self.kv_heads} does not divide heads {self.heads}")
        require(self.vocab_size >= 300, "vocab_size", f"must be >= 300 (256 bytes + merges), got {self.vocab_size}")


@dataclass(frozen=True, slots=True)
class CorpusConfig:
    tasks: tuple[str, ...] = _help(
        f"Stage-1 tasks to build (SIDREASONER.md §2; the general-reasoning task 9 has no public source): {list(TASKS)}."
    )
    history: int = _help("Items of history in every sequential task and prompt (the paper: 10).")
    max_per_task: int = _help("Most samples per task, drawn at random from the training sequences (0 = all).")
    max_reasoning: int = _help("Most stage-2 reasoning samples (0 = all).")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS))
        require(not unknown, "tasks", f"unknown task(s) {unknown}; choose from {list(TASKS)}")
        require(len(self.tasks) > 0, "tasks", "must name at least one task")
        require(self.history >= 1, "history", f"must be >= 1, got {self.history}")
        require(self.max_per_task >= 0, "max_per_task", f"must be >= 0, got {self.max_per_task}")
        require(self.max_reasoning >= 0, "max_reasoning", f"must be >= 0, got {self.max_reasoning}")


@dataclass(frozen=True, slots=True)
class TeacherConfig:
    kind: Literal["templates", "openai"] = _help(
        "Who writes the item paragraphs and reasoning texts: 'templates' (deterministic, from item fields and what "
        "a history shares) or 'openai' (any OpenAI-compatible chat endpoint, e.g. a local vLLM or Ollama server)."
    )
    base_url: str = _help("openai: the API root, e.g. http://127.0.0.1:8000/v1 (/chat/completions is appended).")
    model: str = _help("openai: the model name the endpoint serves.")
    api_key_env: str = _help("openai: the environment variable holding the API key (empty or unset: no key sent).")
    temperature: float = _help("openai: sampling temperature of the teacher (0 = its most likely text).")
    max_tokens: int = _help("openai: longest answer in tokens.")
    timeout_s: float = _help("openai: seconds to wait for one answer.")
    retries: int = _help("openai: extra tries after a connection error, a timeout or HTTP 408/429/5xx.")
    concurrency: int = _help("openai: requests in flight at once.")
    cache_dir: str = _help(
        "openai: where answers are cached (relative to the project root), keyed by model, messages and sampling "
        "settings: a re-run sends only what is not there. Not a DVC output, so a re-run of the stage keeps it."
    )

    def __post_init__(self) -> None:
        if self.kind == "openai":
            require(
                self.base_url.startswith(("http://", "https://")),
                "base_url",
                f"teacher 'openai' needs an http(s) URL, got {self.base_url!r}",
            )
            require(bool(self.model), "model", "teacher 'openai' needs the model name the endpoint serves")
        require(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        require(self.timeout_s > 0, "timeout_s", f"must be > 0, got {self.timeout_s}")
        require(self.retries >= 0, "retries", f"must be >= 0, got {self.retries}")
        for name in ("max_tokens", "concurrency"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(bool(self.cache_dir), "cache_dir", "must name a directory")


@dataclass(frozen=True, slots=True)
class PhaseConfig:
    lr: float = _help("Peak AdamW learning rate (linear decay after the warm-up).")
    warmup_steps: int = _help("Linear warm-up steps.")
    weight_decay: float = _help("AdamW weight decay.")
    batch_size: int = _help("Sequences per optimiser step.")
    max_epochs: int = _help("Upper bound on epochs over the phase's corpus.")
    patience: int = _help("Stop after this many epochs without a lower validation next-SID loss.")

    def __post_init__(self) -> None:
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        for name in ("batch_size", "max_epochs", "patience"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")


@dataclass(frozen=True, slots=True)
class GRPOPhaseConfig:
    lr: float = _help("AdamW learning rate of the policy (the paper: 5e-7 on a pre-trained LM).")
    prompts: int = _help("Training prompts, drawn from the stage-2 samples (0 = all of them).")
    prompts_per_step: int = _help("Prompts per optimiser step (the paper: 256); each gets num_generations rollouts.")
    num_generations: int = _help("Rollouts per prompt, the group its advantages are normalised in (the paper: 16).")
    epochs: int = _help("Passes over the training prompts.")
    beta: float = _help("KL coefficient to the stage-2 model (k3 estimator, a loss term; the paper: 0.001).")
    epsilon: float = _help("PPO-style clipping of the probability ratio.")
    temperature: float = _help("Sampling temperature of the rollouts (top-p 1).")
    max_completion_tokens: int = _help("Longest rollout; a longer one is cut (and earns what its text earns).")
    constrained: bool = _help(
        "false (the paper): rollouts are sampled freely. true: every rollout ends in </think>, a real item's SID "
        "and the end of turn (</think> forced when only the answer still fits; each code sampled among the codes "
        "the SID trie allows), so each earns the validity bonus and groups differ by matching codes."
    )

    def __post_init__(self) -> None:
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.num_generations >= 2, "num_generations", f"must be >= 2 (a group), got {self.num_generations}")
        for name in ("prompts_per_step", "epochs", "max_completion_tokens"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.prompts >= 0, "prompts", f"must be >= 0, got {self.prompts}")
        require(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        require(self.epsilon > 0, "epsilon", f"must be > 0, got {self.epsilon}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@dataclass(frozen=True, slots=True)
class InferConfig:
    mode: Literal["plain", "thinking"] = _help(
        "'plain': next-SID prompt, empty think block, constrained beam; 'thinking': one greedy reasoning trace "
        "per user (cut at </think>), then the same constrained beam after it."
    )
    beam: int = _help("Beam width of the constrained beam search (>= inference.top_k).")
    max_think_tokens: int = _help("Longest reasoning trace in thinking mode (a trace without </think> is cut).")
    batch_size: int = _help("Users per decoding call.")

    def __post_init__(self) -> None:
        for name in ("beam", "max_think_tokens", "batch_size"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class SIDReasonerConfig:
    model: LMConfig = _help("The base causal LM and its tokenizer.")
    corpus: CorpusConfig = _help("Stage-1/2 training tasks, built from the training split only.")
    teacher: TeacherConfig = _help("Who writes the item paragraphs and reasoning texts of the corpus.")
    align: PhaseConfig = _help("Stage 1: SID-language alignment (multi-task SFT).")
    reason: PhaseConfig = _help("Stage 2: reasoning activation (SFT on <think>reasoning</think> SID).")
    grpo: GRPOPhaseConfig = _help("Stage 3: GRPO with the outcome reward (TRL's GRPOTrainer).")
    infer: InferConfig = _help("Constrained decoding of the top-K lists.")
    seed: int = _help("Seed of sampling the corpus, initialisation and shuffling.")
    device: Literal["auto", "cpu", "cuda"] = _help("'auto' takes a GPU when one is visible.")
    threads: int = _help("CPU threads for torch (0 = all cores).")
    precision: Literal["fp32", "bf16"] = _help(
        "'bf16' autocasts matmuls on a GPU or a CPU with native bf16; elsewhere the run says so and stays fp32."
    )

    def __post_init__(self) -> None:
        require(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
