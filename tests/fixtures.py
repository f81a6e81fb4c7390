"""Tiny datasets in the exact raw formats of the real ones (written by code, not committed data).

``write_ml100k`` produces RecBole atomic files like ``ml-100k.inter``/``.item``;
``write_beauty`` produces ``sequential_data.txt`` + ``datamaps.json`` +
``Amazon_Beauty.item``, including the real quirks: a title with a quoted tab,
an HTML entity, an empty title, a brand "Unknown", a missing price.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Children's", "Film-Noir"]


def write_ml100k(folder: Path, n_users: int = 12, n_items: int = 40, per_user: int = 7, seed: int = 0) -> Path:
    """Write ``ml-100k.inter`` and ``ml-100k.item`` (tab-separated, typed header) into ``folder``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "ml-100k.item", "w", encoding="utf-8") as fh:
        fh.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for i in range(1, n_items + 1):
            year = "unkonwn" if i == 3 else str(1980 + i)  # the real file's typo, for one movie
            genres = " ".join(rng.sample(GENRES, 2))
            fh.write(f"{i}\tMovie {i} &amp; Friends\t{year}\t{genres}\n")
    rows = []
    for u in range(1, n_users + 1):
        items = rng.sample(range(1, n_items + 1), per_user)
        t0 = 880000000 + 1000 * u
        for k, item in enumerate(items):
            # every third event shares its predecessor's timestamp: ties are broken by item id
            ts = t0 + 10 * (k - (k % 3 == 2))
            rows.append((u, item, rng.randint(1, 5), ts))
    rng.shuffle(rows)  # file order must not matter
    with open(folder / "ml-100k.inter", "w", encoding="utf-8") as fh:
        fh.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u, i, r, t in rows:
            fh.write(f"{u}\t{i}\t{r}\t{t}\n")
    return folder


BEAUTY_ITEMS = [
    # asin, title, categories, price, brand
    ("B0001ZYL3Q", "TheraNeem Cream \t Vanilla", "'Beauty', 'Skin Care', 'Body'", "11.28", "Organix"),
    ("B000SDI6MI", "Kiwi &amp; Pear Lotion", "'Beauty', 'Skin Care', 'Body', 'Moisturizers'", "7.97", "Designer"),
    ("B000GZES7A", "", "'Beauty', 'Skin Care', 'Eyes', 'Creams'", "", ""),
    ("9788072216", "Prada Candy Eau De Parfum", "'Beauty', 'Fragrance', \"Women's\"", "65.86", "Prada"),
    ("B008UAIM52", "Nail Art Pearl Beads", "'Beauty', 'Makeup', 'Nails'", "0.93", "Unknown"),
    ("7806397051", "WAWO 15 Color Palette", "'Beauty', 'Makeup', 'Face'", "5.04", "COKA"),
]


def write_beauty(folder: Path, sequences: list[list[int]] | None = None) -> Path:
    """Write the three Beauty files. ``sequences[u]`` lists P5 item ids (1-based) of user u+1."""
    folder.mkdir(parents=True, exist_ok=True)
    if sequences is None:
        sequences = [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 1], [6, 5, 4, 3, 2], [1, 3, 5, 2, 4, 6]]
    # P5 ids in order of first appearance, deliberately not in ASIN order
    id2item = {str(i + 1): asin for i, (asin, *_) in enumerate(BEAUTY_ITEMS)}
    id2user = {str(u + 1): f"A{9 - u}REVIEWER" for u in range(len(sequences))}
    maps = {
        "user2id": {v: k for k, v in id2user.items()},
        "item2id": {v: k for k, v in id2item.items()},
        "id2user": id2user,
        "id2item": id2item,
    }
    (folder / "datamaps.json").write_text(json.dumps(maps), encoding="utf-8")
    with open(folder / "sequential_data.txt", "w", encoding="utf-8") as fh:
        for u, seq in enumerate(sequences, start=1):
            fh.write(" ".join(map(str, [u, *seq])) + "\n")
    with open(folder / "Amazon_Beauty.item", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", quotechar='"', lineterminator="\n")
        writer.writerow(
            [
                "item_id:token",
                "title:token",
                "sales_type:token",
                "sales_rank:float",
                "categories:token_seq",
                "price:float",
                "brand:token",
            ]
        )
        for asin, title, cats, price, brand in BEAUTY_ITEMS:
            writer.writerow([asin, title, "Beauty", "1000.0", cats, price, brand])
    return folder


def tiny_tokenizer():
    """A byte-level BPE tokenizer of 320 tokens plus the SID tokens of a (4, 3, 2) codebook."""
    from s2gr_core.models.sidreasoner.tokenizer import add_sid_tokens, train_bpe
    from s2gr_core.models.sidreasoner.tokens import sid_tokens

    tok = train_bpe(["Toy Story is an animated comedy.", "A user interacted with these movies in order"] * 20, 320)
    add_sid_tokens(tok, sid_tokens((4, 3, 2)))
    return tok


def tiny_lm(vocab: int, seed: int = 0):
    """A two-layer Qwen3 causal LM of hidden size 32, initialised from ``seed``."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(config).eval()
