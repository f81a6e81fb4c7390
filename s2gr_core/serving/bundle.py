"""A served model's folder: everything inference needs, and nothing that runs code when it is read.

Layout (``build_bundle`` writes it; :class:`~s2gr_core.serving.recommender.Recommender` reads it)::

    bundle/
      config.json      family, dataset, decoding settings, request limits
      weights.pt       the trained model (``best.pt``: tensors and plain values, loaded with weights_only)
      items.parquet    item_id, item_key, title: the catalogue, to turn ids into keys and titles
      users.parquet    user_key, history: each known user's whole history (item ids, oldest first)
      sids/            SASRec has none; TIGER/S2GR: sids.parquet, trie.npz, clusters.npz (decoding tables)

Example: ``build_bundle("s2gr", out, model_dir=Path("models/s2gr"), ...)`` then
``Recommender(out).recommend([Request(history_keys=("50", "172"))], k=3)`` gives one
:class:`~s2gr_core.serving.recommender.Ranked` with 3 item ids, keys, titles and scores.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from s2gr_core.config.serving import Family
from s2gr_core.io import write_json, write_parquet
from s2gr_core.split import ragged

FORMAT = 1
SID_FILES = ("sids.parquet", "trie.npz", "clusters.npz")


@dataclass(frozen=True, slots=True)
class BundleConfig:
    """``config.json``: what shaped the model and how requests are answered."""

    format: int
    family: Family
    dataset: str
    n_items: int
    max_history: int  # the model's history window: longer histories keep their most recent items
    beam: int  # constrained beam width (TIGER/S2GR; 0 for SASRec)
    batch_size: int  # requests scored per forward pass (the pipeline's inference.batch_size)
    length_buckets: bool
    default_k: int
    exclude_history: bool  # default of the per-request parameter
    max_batch: int  # requests per call above which the call is refused


def read_config(bundle: Path) -> BundleConfig:
    import json

    path = bundle / "config.json"
    if not path.is_file():
        raise ValueError(f"{bundle}: not a model bundle (no config.json)")
    raw = json.loads(path.read_text())
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: bundle format {raw.get('format')!r}, this code reads format {FORMAT}")
    return BundleConfig(**raw)


def user_histories(interactions: Path) -> pa.Table:
    """``user_key``, ``history`` (item ids, oldest first) of every user in ``interactions.parquet``."""
    frame = pd.read_parquet(interactions, columns=["user_id", "user_key", "item_id", "position"])
    frame = frame.sort_values(["user_id", "position"], kind="stable")
    _, starts, counts = np.unique(frame["user_id"].to_numpy(), return_index=True, return_counts=True)
    keys = frame["user_key"].astype(str).to_numpy()[starts]
    history = ragged(frame["item_id"].to_numpy(np.int64), starts, starts + counts)
    return pa.table({"user_key": pa.array(keys), "history": history})


def build_bundle(
    family: Family,
    dest: Path,
    *,
    model_dir: Path,
    items: Path,
    interactions: Path,
    sids: Path | None,
    dataset: str,
    max_history: int,
    beam: int,
    batch_size: int,
    length_buckets: bool,
    default_k: int,
    exclude_history: bool,
    max_batch: int,
) -> BundleConfig:
    """Copy a trained model and what inference needs into ``dest`` (created; must not exist)."""
    weights = model_dir / "best.pt"
    if not weights.is_file():
        raise ValueError(f"{weights}: no trained {family} model; run `dvc repro train_{family}` first")
    if family != "sasrec" and sids is None:
        raise ValueError(f"{family} decodes SIDs: the sids folder is needed")
    dest.mkdir(parents=True)
    catalogue = pd.read_parquet(items, columns=["item_id", "item_key", "title"]).sort_values("item_id")
    if not (catalogue["item_id"].to_numpy() == np.arange(len(catalogue))).all():
        raise ValueError(f"{items}: item ids are not 0..{len(catalogue) - 1}")
    catalogue["item_key"] = catalogue["item_key"].astype(str)
    catalogue["title"] = catalogue["title"].fillna("").astype(str)
    write_parquet(catalogue.reset_index(drop=True), dest / "items.parquet")
    write_parquet(user_histories(interactions), dest / "users.parquet")
    shutil.copyfile(weights, dest / "weights.pt")
    if family != "sasrec":
        (dest / "sids").mkdir()
        for name in SID_FILES:
            shutil.copyfile(sids / name, dest / "sids" / name)
    config = BundleConfig(
        format=FORMAT,
        family=family,
        dataset=dataset,
        n_items=len(catalogue),
        max_history=max_history,
        beam=beam if family != "sasrec" else 0,
        batch_size=batch_size,
        length_buckets=length_buckets,
        default_k=default_k,
        exclude_history=exclude_history,
        max_batch=max_batch,
    )
    write_json(asdict(config), dest / "config.json")
    return config
