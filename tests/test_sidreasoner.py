"""SIDReasoner: the reward, the tokenizer, the task corpus and its masks, constrained decoding, SFT resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from s2gr_core.config import Params
from s2gr_core.config.base import ConfigError
from s2gr_core.models.gr.beam import DecodingTables
from s2gr_core.models.runtime import runtime_for
from s2gr_core.models.sidreasoner import sft
from s2gr_core.models.sidreasoner.corpus import Catalogue, build_corpus, next_sid_prompt
from s2gr_core.models.sidreasoner.decode import decode_lists, greedy_is_real, left_pad
from s2gr_core.models.sidreasoner.reward import sid_reward
from s2gr_core.models.sidreasoner.tokenizer import IGNORE, IM_END, add_sid_tokens, code_token_ids, encode
from s2gr_core.models.sidreasoner.tokens import END_THINK, THINK, sid_texts, sid_tokens
from s2gr_core.semantic.sids import SidTrie, load_sids
from s2gr_core.split import load_eval, load_train
from tests.conftest import repo_params
from tests.fixtures import tiny_lm, tiny_tokenizer

VALID3 = {"<a_1><b_2><c_3>", "<a_1><b_2><c_4>", "<a_5><b_0><c_0>"}
TARGET3 = "<a_1><b_2><c_3>"


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("<a_1><b_2><c_3>", 0.0),  # no </think>: nothing is read
        ("<think>x</think>\n\n<a_1><b_2>", 0.0),  # fewer codes than the target has
        ("</think><a_1><b_9><c_3>", 0.25),  # first code only (not a real item)
        ("</think><a_1><b_2><c_9>", 0.5),
        ("</think><a_1><b_2><c_4>", 0.6),  # two leading codes, and a real item
        ("</think><a_1><b_2><c_3>", 1.1),
        ("</think><a_9><b_2><c_3>", 0.0),  # later codes match but the first does not: they do not count
        ("</think><a_5><b_0><c_0>", 0.1),  # a real item, no leading match
        ("</think>\n\n<a_1><b_2><c_3> and then some text <a_7>", 1.1),  # text after the SID cannot hide it
        ("<think>it is <a_1><b_2><c_3></think>\n<a_5><b_0><c_0>", 0.1),  # only the answer after </think> counts
        ("</think>the answer: </x><a_1><b_2>", 0.0),  # another angle-bracket token takes a code's place
    ],
)
def test_reward_branches(completion: str, reward: float) -> None:
    assert sid_reward(completion, TARGET3, VALID3) == pytest.approx(reward)


def test_reward_generalises_to_our_four_code_sids() -> None:
    target, valid = "<a_1><b_2><c_3><d_0>", {"<a_1><b_2><c_3><d_0>", "<a_1><b_2><c_3><d_1>"}
    got = [
        sid_reward(f"</think>{c}", target, valid)
        for c in ("<a_1><b_0><c_0><d_0>", "<a_1><b_2><c_0><d_0>", "<a_1><b_2><c_3><d_1>", "<a_1><b_2><c_3><d_0>")
    ]
    assert got == pytest.approx([0.125, 0.25, 0.5 + 0.1, 1.0 + 0.1])
    with pytest.raises(ValueError, match="holds no <x_n> code tokens"):
        sid_reward("</think><a_1>", "a1", valid)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def test_every_code_is_one_token_and_decoding_keeps_sids_and_think(tokenizer) -> None:
    codes = sid_tokens((4, 3, 2))
    ids = code_token_ids(tokenizer, codes)
    assert [len(set(row)) for row in ids] == [4, 3, 2] and len({i for row in ids for i in row}) == 9
    text = f"<|im_start|>user\nnext after <a_3><b_1><c_0>?<|im_end|>\n{THINK}\nwhy\n{END_THINK}\n\n<a_0><b_2><c_1>"
    encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(encoded).count("<a_3>") == 1
    shown = tokenizer.decode(encoded, skip_special_tokens=True)  # what an RL library scores
    assert f"{THINK}\nwhy\n{END_THINK}\n\n<a_0><b_2><c_1>" in shown and "<|im_start|>" not in shown
    assert add_sid_tokens(tokenizer, codes) == 0  # adding again adds nothing


def test_label_masks_follow_each_phase(tokenizer) -> None:
    prompt, response = "<|im_start|>user\nnext?<|im_end|>\n<|im_start|>assistant\n", "<a_1><b_0><c_1>"
    end = tokenizer.convert_tokens_to_ids(IM_END)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    (ids,), (labels,) = encode(tokenizer, ["chat"], [prompt], [response], False, 1024)
    assert labels[:n_prompt] == [IGNORE] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert len(ids) == n_prompt + 3 and ids[-1] != end  # stage 1: no end-of-turn token after the SID
    (ids,), (labels,) = encode(tokenizer, ["chat"], [prompt], [response], True, 1024)
    assert ids[-1] == end and labels[-1] == end  # stage 2: the end-of-turn token is trained
    (ids,), (labels,) = encode(tokenizer, ["lm"], [""], [f"{response} is a comedy."], False, 1024)
    assert labels == ids and ids[-1] == tokenizer.pad_token_id  # plain LM: every token, end of text included
    (ids,), (labels,) = encode(tokenizer, ["chat"], [prompt], [response], False, 4)
    assert len(ids) == 4 and ids[-3:] == labels[-3:]  # cut from the left: the response survives


def test_corpus_uses_training_targets_only_and_reasoning_never_sees_the_target(sid_root: Path, params: Params) -> None:
    items = pd.read_parquet(sid_root / "data/processed/items.parquet")
    sids = load_sids(sid_root / "data/sids/sids.parquet", len(items))
    cat = Catalogue.from_items(items, sid_texts(sids), "ml-100k")
    users, sequences = load_train(str(sid_root / "data/split/train.parquet"))
    frame = build_corpus(cat, users, sequences, params.sidreasoner.corpus, seed=0)
    train_pairs = {(int(u), int(i)) for u, seq in zip(users, sequences, strict=True) for i in seq[1:]}
    held_out = set()
    for split in ("valid", "test"):
        split_users, _, targets = load_eval(str(sid_root / f"data/split/{split}.parquet"))
        held_out |= {(int(u), int(t)) for u, t in zip(split_users, targets, strict=True)}
    sequential = frame[frame["user_id"] >= 0]
    pairs = set(zip(sequential["user_id"].tolist(), sequential["item_id"].tolist(), strict=True))
    assert pairs <= train_pairs and not pairs & (held_out - train_pairs)
    assert set(frame["task"]) == {*params.sidreasoner.corpus.tasks, "reason"}
    reason = frame[frame["phase"] == "reason"]
    assert reason["response"].str.match(rf"^{THINK}\n.+\n{END_THINK}\n\n(<[a-d]_\d+>){{4}}$").all()
    # the stage-2 reasoning is the history's alone, and never writes the target's SID unless the history holds it
    for _, row in reason.iterrows():
        thought = row["response"].split(END_THINK)[0]
        target = cat.sid[row["item_id"]]
        assert target not in thought or target in row["prompt"]


@pytest.mark.parametrize("think_tokens", [0, 6])
def test_beam_over_the_whole_catalogue_is_the_exhaustive_ranking(tokenizer, think_tokens: int) -> None:
    rng = np.random.default_rng(0)
    sids = np.unique(np.stack([rng.integers(0, v, 30) for v in (4, 3, 2)], axis=1), axis=0)
    trie, n = SidTrie.build(sids), len(sids)
    tables = DecodingTables.from_numpy(trie.children)
    model = tiny_lm(len(tokenizer))
    code_ids = code_token_ids(tokenizer, sid_tokens(trie.vocab))
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("next after <a_1>", "a user", "x")]
    runtime = runtime_for("cpu", 0, "fp32", False)
    sid_text = frozenset("".join(f"<{'abc'[p]}_{c}>" for p, c in enumerate(row)) for row in sids.tolist())
    out = decode_lists(model, tokenizer, prompts, code_ids, tables, n, n, 2, runtime, think_tokens, sid_text)
    items, scores = out.items, out.scores
    assert out.real is not None and out.real.shape == (3,)
    assert (np.sort(items, axis=1) == np.arange(n)).all()  # every item once
    if think_tokens:  # the SID is scored after the trace: recompute that prefix the same way
        from s2gr_core.models.sidreasoner.decode import think

        prompts = think(model, tokenizer, prompts, think_tokens)
    # exhaustive: the log-probability of every item's SID after each prompt, by teacher forcing
    sid_ids = np.stack([code_ids[p][sids[:, p]] for p in range(sids.shape[1])], axis=1)
    for row, prompt in enumerate(prompts):
        x, mask = left_pad([[*prompt, *s] for s in sid_ids.tolist()], 0, torch.device("cpu"))
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=x, attention_mask=mask).logits.float(), -1)
        width = sid_ids.shape[1]
        picked = logp[:, -width - 1 : -1].gather(2, torch.as_tensor(sid_ids)[:, :, None])[..., 0].sum(1).numpy()
        order = np.argsort(-picked, kind="stable")
        np.testing.assert_allclose(scores[row], picked[order], atol=1e-4)
        np.testing.assert_array_equal(items[row], order)


def test_a_killed_phase_resumes_from_its_last_epoch(tokenizer, tmp_path: Path, monkeypatch) -> None:
    from s2gr_core.config import params_from_dict

    phase = params_from_dict(repo_params(sidreasoner={"align": {"max_epochs": 2, "patience": 2}})).sidreasoner.align
    prompt = next_sid_prompt(
        Catalogue("movie", ["<a_1><b_0><c_1>"] * 3, ["t"] * 3, [[]] * 3, [""] * 3, [np.nan] * 3, [np.nan] * 3), [0, 1]
    )
    data = encode(tokenizer, ["chat"] * 8, [prompt] * 8, ["<a_1><b_0><c_1>", "<a_2><b_1><c_0>"] * 4, False, 256)
    runtime = runtime_for("cpu", 0, "fp32", False)
    calls = {"n": 0}
    real = sft.run_batches

    def dies_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as a kill between checkpoints
        return real(*args, **kwargs)

    monkeypatch.setattr(sft, "run_batches", dies_in_epoch_two)
    kwargs = {"pad": tokenizer.pad_token_id, "seed": 0, "start": "tiny", "resume_dir": tmp_path, "name": "align"}
    with pytest.raises(KeyboardInterrupt):
        sft.train_phase(tiny_lm(len(tokenizer)), data, data, phase, runtime, **kwargs)
    outcome = sft.train_phase(tiny_lm(len(tokenizer)), data, data, phase, runtime, **kwargs)
    assert outcome.resumed_from == 1 and [h["epoch"] for h in outcome.history] == [1, 2]
    assert {"valid_sid_nll", "valid_code_geo_prob", "train_loss"} <= set(outcome.history[-1])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model": {"kv_heads": 3}}, "sidreasoner.model.kv_heads: 3 does not divide heads 2"),
        ({"corpus": {"tasks": ["sid_to_sid", "poetry"]}}, r"sidreasoner.corpus.tasks: unknown task\(s\) \['poetry'\]"),
        ({"infer": {"beam": 5}}, "sidreasoner.infer.beam: 5 is below inference.top_k 20"),
        ({"align": {"lr": 0}}, "sidreasoner.align.lr: must be > 0"),
        ({"infer": {"mode": "dream"}}, r"sidreasoner.infer.mode: must be one of \['plain', 'thinking'\]"),
        ({"teacher": {"kind": "openai"}}, "sidreasoner.teacher.base_url: teacher 'openai' needs an http"),
        (
            {"teacher": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
            "sidreasoner.teacher.model: teacher 'openai' needs the model name",
        ),
        ({"teacher": {"concurrency": 0}}, "sidreasoner.teacher.concurrency: must be >= 1, got 0"),
    ],
)
def test_bad_sidreasoner_params_are_named(override: dict, message: str) -> None:
    from s2gr_core.config import params_from_dict

    with pytest.raises(ConfigError, match=message):
        params_from_dict(repo_params(sidreasoner=override))


def test_grpo_steps_change_the_weights_and_log_rewards(tokenizer, tmp_path: Path) -> None:
    """Two GRPO steps from a tiny model taught the answer format: rewards vary within a group, the policy moves,
    and reward, its std, the valid-SID share and KL are logged per step."""
    from s2gr_core.config import params_from_dict
    from s2gr_core.models.sidreasoner.grpo import SidReward, train_grpo
    from s2gr_core.models.sidreasoner.model import greedy

    raw = repo_params(
        sidreasoner={
            "reason": {"max_epochs": 15, "patience": 15, "batch_size": 4, "lr": 0.01, "warmup_steps": 0},
            "grpo": {
                "prompts": 4,
                "prompts_per_step": 2,
                "num_generations": 4,
                "temperature": 1.0,
                "max_completion_tokens": 16,
                "lr": 0.01,
            },
        }
    )
    cfg = params_from_dict(raw).sidreasoner
    sids = ["<a_0><b_0><c_0>", "<a_1><b_2><c_1>", "<a_3><b_1><c_0>", "<a_2><b_0><c_1>"]
    prompts = ["<|im_start|>user\nnext?<|im_end|>\n<|im_start|>assistant\n"] * 4
    responses = [f"{THINK}\nhmm\n{END_THINK}\n\n{s}" for s in sids]
    data = encode(tokenizer, ["chat"] * 32, prompts * 8, responses * 8, True, 64)
    runtime = runtime_for("cpu", 0, "fp32", False)
    model = tiny_lm(len(tokenizer))
    sft.train_phase(
        model,
        data,
        data,
        cfg.reason,
        runtime,
        pad=tokenizer.pad_token_id,
        seed=0,
        start="t",
        resume_dir=tmp_path / "sft",
        name="reason",
    )
    greedy(model, tokenizer)
    ready = tokenizer(prompts[0] + f"{THINK}\nhmm\n{END_THINK}\n\n", add_special_tokens=False)["input_ids"]
    assert greedy_is_real(model, tokenizer, [ready], frozenset(sids), 3).all()  # it answers one of its SIDs
    assert not greedy_is_real(model, tokenizer, [ready], frozenset({"<a_3><b_2><c_1>"}), 3).any()
    model.save_pretrained(tmp_path / "stage2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logged: list[tuple[dict, int]] = []
    trainer = train_grpo(
        tmp_path / "stage2",
        tokenizer,
        prompts,
        sids,
        frozenset(sids),
        cfg.grpo,
        seed=0,
        device="cpu",
        bf16=False,
        resume_dir=tmp_path / "grpo",
        start="t",
        log=lambda m, s: logged.append((m, s)),
    )
    steps = [m for m, _ in logged if "reward" in m]
    assert len(steps) == 2 and all({"reward", "reward_std", "valid_sid_share", "kl"} <= set(m) for m in steps)
    assert any(m["reward_std"] > 0 for m in steps)  # a group with different rewards: a non-zero advantage
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k].cpu()) for k in before)
    assert SidReward(frozenset(sids), 3)([""], ["</think><a_0><b_0><c_0>"], ["<a_0><b_0><c_0>"]) == [1.1]


def test_a_grpo_checkpoint_is_resumed_only_by_the_same_run(tmp_path: Path) -> None:
    from s2gr_core.models.sidreasoner.grpo import resumable

    assert not resumable(tmp_path, "run-a")  # nothing yet
    (tmp_path / "checkpoint-3").mkdir()
    assert resumable(tmp_path, "run-a")  # same settings and data: resume
    assert not resumable(tmp_path, "run-b") and not (tmp_path / "checkpoint-3").exists()  # stale: removed


def trie_fixture(tokenizer) -> tuple[np.ndarray, SidTrie, list[np.ndarray]]:
    """Some of the (4, 3, 2) SID space as real items, their trie and the code token ids."""
    rng = np.random.default_rng(0)
    sids = np.unique(np.stack([rng.integers(0, v, 12) for v in (4, 3, 2)], axis=1), axis=0)
    trie = SidTrie.build(sids)
    return sids, trie, code_token_ids(tokenizer, sid_tokens(trie.vocab))


def test_the_answer_constraint_walks_the_trie_per_row(tokenizer) -> None:
    """Hand-built rows at each point of the answer: the mask allows exactly what the format and trie allow."""
    from s2gr_core.models.sidreasoner.constrain import AnswerFormat

    sids, trie, code_ids = trie_fixture(tokenizer)
    fmt = AnswerFormat.build(tokenizer, code_ids, DecodingTables.from_numpy(trie.children))
    end, eos, gap = fmt.end_think, fmt.eos, list(fmt.gap)
    a, b = int(sids[0, 0]), int(sids[0, 1])
    think_word = tokenizer("why", add_special_tokens=False)["input_ids"][0]
    prompt = [7, 8]
    rows = {
        "thinking": [think_word],
        "budget spent": [think_word] * 5,
        "gap": [think_word, end],
        "code a": [end, *gap],
        "code b": [end, *gap, int(code_ids[0][a])],
        "code c": [end, *gap, int(code_ids[0][a]), int(code_ids[1][b])],
        "done": [end, *gap, *(int(code_ids[p][c]) for p, c in enumerate(sids[0]))],
    }
    pad = tokenizer.pad_token_id
    allowed = {}
    for name, written in rows.items():
        x = torch.tensor([[*prompt, *written]])
        scores = fmt.processor(len(prompt), 5 + fmt.answer_tokens)(x, torch.zeros(1, len(tokenizer)))
        allowed[name] = set(torch.isfinite(scores[0]).nonzero()[:, 0].tolist())
    assert len(allowed["thinking"]) == len(tokenizer) - 1 and eos not in allowed["thinking"]
    assert allowed["budget spent"] == {end} and allowed["gap"] == {gap[0]} and allowed["done"] == {eos}
    assert allowed["code a"] == {int(code_ids[0][c]) for c in np.unique(sids[:, 0])}
    assert allowed["code b"] == {int(code_ids[1][c]) for c in np.unique(sids[sids[:, 0] == a, 1])}
    under = sids[(sids[:, 0] == a) & (sids[:, 1] == b), 2]
    assert allowed["code c"] == {int(code_ids[2][c]) for c in np.unique(under)} and pad not in allowed["code c"]


@pytest.mark.parametrize("max_new", [8, 20])
def test_constrained_sampling_always_answers_a_real_item(tokenizer, max_new: int) -> None:
    """A random model sampled at temperature 1: every rollout closes its thoughts, names a real SID and stops."""
    from s2gr_core.models.sidreasoner.constrain import AnswerFormat, constrain_generate
    from s2gr_core.models.sidreasoner.reward import answer_codes

    sids, trie, code_ids = trie_fixture(tokenizer)
    fmt = AnswerFormat.build(tokenizer, code_ids, DecodingTables.from_numpy(trie.children))
    model = tiny_lm(len(tokenizer), seed=1)
    constrain_generate(model, fmt)
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("a user", "next after <a_1>")]
    x, mask = left_pad(prompts, tokenizer.pad_token_id, torch.device("cpu"))
    torch.manual_seed(0)
    out = model.generate(
        input_ids=x,
        attention_mask=mask,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        num_return_sequences=16,
        max_new_tokens=max_new,
        eos_token_id=fmt.eos,
        pad_token_id=tokenizer.pad_token_id,
    )[:, x.shape[1] :]
    real = {"".join(f"<{'abc'[p]}_{c}>" for p, c in enumerate(row)) for row in sids.tolist()}
    texts = tokenizer.batch_decode(out, skip_special_tokens=True)
    answers = {"".join(answer_codes(t, 3) or []) for t in texts}
    assert answers <= real and len(answers) > 1  # real items only, and still sampled
    assert all((row == fmt.eos).any() for row in out)  # every rollout ended its turn
    with pytest.raises(ValueError, match="max_completion_tokens = 7 leaves no room to think"):
        fmt.processor(2, fmt.answer_tokens)


def test_constrained_grpo_rollouts_are_all_real_items(tokenizer, tmp_path: Path) -> None:
    """GRPO with ``constrained``: from an untrained model every rollout still earns the validity bonus."""
    from s2gr_core.config import params_from_dict
    from s2gr_core.models.sidreasoner.constrain import AnswerFormat
    from s2gr_core.models.sidreasoner.grpo import train_grpo

    sids, trie, code_ids = trie_fixture(tokenizer)
    cfg = params_from_dict(
        repo_params(sidreasoner={"grpo": {"constrained": True, "num_generations": 4, "temperature": 1.0}})
    ).sidreasoner.grpo
    targets = ["".join(f"<{'abc'[p]}_{c}>" for p, c in enumerate(row)) for row in sids[:4].tolist()]
    model = tiny_lm(len(tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(tmp_path / "stage2")
    logged: list[dict] = []
    train_grpo(
        tmp_path / "stage2",
        tokenizer,
        ["<|im_start|>user\nnext?<|im_end|>\n<|im_start|>assistant\n"] * 4,
        targets,
        frozenset(sid_texts(sids)),
        cfg,
        seed=0,
        device="cpu",
        bf16=False,
        resume_dir=tmp_path / "grpo",
        start="t",
        log=lambda m, s: logged.append(m),
        answer=AnswerFormat.build(tokenizer, code_ids, DecodingTables.from_numpy(trie.children)),
    )
    steps = [m for m in logged if "reward" in m]
    assert len(steps) == 2 and all(m["valid_sid_share"] == 1.0 and m["reward"] >= 0.1 for m in steps)
    with pytest.raises(ValueError, match="no answer format"):
        kw = {"seed": 0, "device": "cpu", "bf16": False, "resume_dir": tmp_path / "x", "start": "t"}
        train_grpo(tmp_path / "stage2", tokenizer, [], [], frozenset(), cfg, **kw)


def test_with_titles_reads_back_whole_sids_only() -> None:
    from s2gr_core.models.sidreasoner.explain import with_titles

    cat = Catalogue("movie", ["<a_1><b_0><c_1>", "<a_2><b_1><c_0>"], ["Heat", "Up"], [[], []], ["", ""], [0, 0], [0, 0])
    text = "liked <a_2><b_1><c_0>, then <a_1><b_0><c_1><a_1><b_0><c_0> and <a_1><b_0>."
    assert with_titles(text, cat) == (
        "liked <a_2><b_1><c_0> [Up], then <a_1><b_0><c_1> [Heat]<a_1><b_0><c_0> [no such item] and <a_1><b_0>."
    )


@pytest.mark.parametrize("think_tokens", [0, 6])
def test_explain_shows_the_list_the_pipeline_decodes(tokenizer, think_tokens: int) -> None:
    """``s2gr explain --model sidreasoner`` prints the same top-K (and scores) as ``infer_sidreasoner`` writes,
    and its trace is the text of the tokens the beam was conditioned on."""
    from s2gr_core.models.sidreasoner.corpus import thinking_prompt
    from s2gr_core.models.sidreasoner.decode import think
    from s2gr_core.models.sidreasoner.explain import explain_user, with_titles

    sids, trie, code_ids = trie_fixture(tokenizer)
    texts = ["".join(f"<{'abc'[p]}_{c}>" for p, c in enumerate(row)) for row in sids.tolist()]
    n = len(texts)
    cat = Catalogue("movie", texts, [f"title {i}" for i in range(n)], [[]] * n, [""] * n, [0.0] * n, [0.0] * n)
    tables = DecodingTables.from_numpy(trie.children)
    model = tiny_lm(len(tokenizer), seed=2)
    history = [3, 0, 1]
    prompt = (thinking_prompt if think_tokens else next_sid_prompt)(cat, history)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    runtime = runtime_for("cpu", 0, "fp32", False)
    want = decode_lists(model, tokenizer, [ids], code_ids, tables, n, 5, 1, runtime, think_tokens)
    got = explain_user(
        model, tokenizer, cat, history, code_ids, tables, runtime, think_tokens=think_tokens, beam=n, top_k=5
    )
    np.testing.assert_array_equal(got.top, want.items[0])
    np.testing.assert_allclose(got.scores, want.scores[0], atol=1e-5)
    assert f"{texts[3]} [title 3], {texts[0]} [title 0]" in got.prompt
    if think_tokens:
        traced = think(model, tokenizer, [ids], think_tokens)[0][len(ids) :]
        assert got.trace == with_titles(tokenizer.decode(traced, skip_special_tokens=True).strip(), cat)
        assert got.trace.endswith(END_THINK)
    else:
        assert got.trace == ""


def test_a_phase_directory_is_the_same_bytes_whether_resumed_or_not(tokenizer, tmp_path: Path) -> None:
    """A resumed GRPO run reads its history back from a checkpoint (keys sorted, TRL's json), a fresh one
    in logging order: the saved directory must not tell them apart, or DVC sees a new output."""
    from s2gr_core.stages.sidreasoner import save_lm

    model = tiny_lm(len(tokenizer))
    fresh = [{"step": 1, "reward": 0.1, "kl": 0.0, "epoch_seconds": 1.2}]
    resumed = [{"kl": 0.0, "reward": 0.1, "step": 1, "epoch_seconds": 3.4}]
    save_lm(model, tokenizer, fresh, tmp_path / "a")
    save_lm(model, tokenizer, resumed, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "history.json" in files and files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
