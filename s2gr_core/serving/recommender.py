"""Answer recommendation requests from a model bundle, with the pipeline's own ranking code.

A request is one user: a known user key, or a recent history given as the dataset's item keys
(ASINs, MovieLens ids) or as the project's item ids. The lists are those the pipeline writes:
the same ``predict`` functions, the same batch size and length buckets, so a history from the test
split gets the test list of ``predictions/<model>/test.parquet`` (checked in the tests).

Example (ml-100k, SASRec)::

    rec = Recommender(Path("bundle"))
    [ranked] = rec.recommend([Request(history_keys=("50", "172", "133"))], k=3)
    ranked.item_keys, ranked.titles   # ['181', '174', '98'], ['Return of the Jedi (1983)', ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from s2gr_core.models.common import pad_right
from s2gr_core.serving.bundle import BundleConfig, read_config

MAX_LISTED = 10  # unknown keys quoted in one error


class RequestError(ValueError):
    """A request the model cannot answer; the message names the request, the field and the value."""


@dataclass(frozen=True, slots=True)
class Request:
    """Exactly one of ``user``, ``history_keys``, ``history_ids``."""

    user: str | None = None
    history_keys: tuple[str, ...] | None = None
    history_ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Ranked:
    """One request's top-k, best first."""

    item_ids: list[int]
    item_keys: list[str]
    titles: list[str]
    scores: list[float]


class Recommender:
    """A trained SASRec, TIGER or S2GR with its catalogue and known users, on the CPU (or ``device``)."""

    def __init__(self, bundle: Path, device: str = "cpu"):
        self.config: BundleConfig = read_config(bundle)
        self.device = torch.device(device)
        items = pd.read_parquet(bundle / "items.parquet")
        self.item_keys = items["item_key"].to_numpy(dtype=object)
        self.titles = items["title"].to_numpy(dtype=object)
        self.item_of_key = dict(zip(self.item_keys, range(len(items)), strict=True))
        users = pq.read_table(bundle / "users.parquet")
        self.user_row = {key: row for row, key in enumerate(users["user_key"].to_pylist())}
        self.user_histories = users["history"]
        weights = bundle / "weights.pt"
        if self.config.family == "sasrec":
            from s2gr_core.models.sasrec import load_model

            self.model = load_model(weights, self.device)
            self.sem = None
        else:
            from s2gr_core.models.gr.train import load_model
            from s2gr_core.stages.generative import load_semantic

            self.model = load_model(weights, self.device)
            self.sem = load_semantic(bundle / "sids", self.config.n_items, str(self.device))

    @property
    def max_k(self) -> int:
        """The longest list one request may ask for: the catalogue, or the beam for SID decoding."""
        return self.config.n_items if self.config.family == "sasrec" else self.config.beam

    def recommend(
        self, requests: list[Request], k: int | None = None, exclude_history: bool | None = None
    ) -> list[Ranked]:
        """Top-``k`` items for each request (``k`` and ``exclude_history`` default to the bundle's).

        Raises :class:`RequestError` naming the request index, field and value for an empty batch,
        a batch over ``max_batch``, a bad ``k``, an unknown user or item, or an empty history.
        """
        cfg = self.config
        k = cfg.default_k if k is None else k
        exclude = cfg.exclude_history if exclude_history is None else bool(exclude_history)
        if not requests:
            raise RequestError("the batch holds no requests")
        if len(requests) > cfg.max_batch:
            raise RequestError(f"the batch holds {len(requests)} requests; at most {cfg.max_batch} per call")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= self.max_k:
            limit = "the catalogue size" if cfg.family == "sasrec" else f"{cfg.family}'s beam width"
            raise RequestError(f"k={k!r}: must be an integer from 1 to {self.max_k} ({limit})")
        histories = [self._history(i, r)[-cfg.max_history :] for i, r in enumerate(requests)]
        items, scores = self._rank(histories, int(k), exclude)
        return [
            Ranked(row.tolist(), self.item_keys[row].tolist(), self.titles[row].tolist(), s.tolist())
            for row, s in zip(items, scores.astype(np.float64), strict=True)
        ]

    def _history(self, index: int, request: Request) -> np.ndarray:
        given = [f for f in ("user", "history_keys", "history_ids") if getattr(request, f) is not None]
        if len(given) != 1:
            raise RequestError(
                f"request {index}: give exactly one of user, history, item_ids (got {', '.join(given) or 'none'})"
            )
        if request.user is not None:
            row = self.user_row.get(str(request.user))
            if row is None:
                raise RequestError(f"request {index}: unknown user {request.user!r}")
            return self.user_histories[row].values.to_numpy().astype(np.int64)
        if request.history_keys is not None:
            keys = [str(key) for key in request.history_keys]
            unknown = [key for key in keys if key not in self.item_of_key]
            if unknown:
                raise RequestError(
                    f"request {index}: history holds {len(unknown)} unknown item key(s): "
                    f"{unknown[:MAX_LISTED]}{' …' if len(unknown) > MAX_LISTED else ''}"
                )
            ids = np.asarray([self.item_of_key[key] for key in keys], dtype=np.int64)
        else:
            ids = np.asarray(request.history_ids, dtype=np.int64)
            bad = ids[(ids < 0) | (ids >= self.config.n_items)]
            if len(bad):
                raise RequestError(
                    f"request {index}: item_ids outside 0..{self.config.n_items - 1}: {bad[:MAX_LISTED].tolist()}"
                )
        if len(ids) == 0:
            field = "history" if request.history_keys is not None else "item_ids"
            raise RequestError(f"request {index}: {field} is empty; give at least one item")
        return ids

    @torch.inference_mode()
    def _rank(self, histories: list[np.ndarray], k: int, exclude: bool) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        if self.sem is None:
            from s2gr_core.models.sasrec.train import predict

            return predict(self.model, histories, k, exclude, cfg.batch_size, self.device, None, cfg.length_buckets)
        from s2gr_core.models.gr.train import predict

        # beam search cannot skip the history's items: widen it by the window, then drop them
        width = cfg.beam + (cfg.max_history if exclude else 0)
        users = np.zeros(len(histories), dtype=np.int64)  # a hashed user token (if any) sees bucket 0
        items, scores = predict(
            self.model, histories, users, self.sem, width, width if exclude else k, cfg.batch_size,
            self.device, None, cfg.length_buckets,
        )  # fmt: skip
        if not exclude:
            return items, scores
        keep = first_unseen(items, histories, k)
        return np.take_along_axis(items, keep, 1), np.take_along_axis(scores, keep, 1)


def first_unseen(items: np.ndarray, histories: list[np.ndarray], k: int) -> np.ndarray:
    """Column indices of the first ``k`` entries of each row of ``items`` (U, W) not in that row's history.

    >>> first_unseen(np.array([[5, 7, 9, 2]]), [np.array([7, 1])], 2)
    array([[0, 2]])
    """
    tokens, _ = pad_right(histories, max(len(h) for h in histories))
    padded = tokens.astype(np.int64) - 1  # padding 0 -> -1: no item
    seen = (items[:, :, None] == padded[:, None, :]).any(-1)
    return np.argsort(seen, axis=1, kind="stable")[:, :k]
