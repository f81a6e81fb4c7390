"""Item texts and the sentence encoder (the real bundled all-MiniLM-L6-v2, offline)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from s2gr_core.semantic.embed import EmbeddingError, check_embeddings, encode, fingerprint, render_texts

TEMPLATE = ("Title: {title}", "Brand: {brand}", "Categories: {categories}", "Price: {price}")


def test_template_skips_missing_fields_and_formats_lists_and_numbers() -> None:
    items = pd.DataFrame(
        {
            "title": ["Lip Balm", "Shampoo."],
            "brand": [None, "Acme"],
            "categories": [["Beauty", "Lips"], []],
            "price": [3.5, float("nan")],
        }
    )
    assert render_texts(items, TEMPLATE) == [
        "Title: Lip Balm. Categories: Beauty, Lips. Price: 3.5.",
        "Title: Shampoo. Brand: Acme.",
    ]


def test_unknown_template_field_names_the_columns() -> None:
    with pytest.raises(EmbeddingError, match=r"field\(s\) \['colour'\].*columns"):
        render_texts(pd.DataFrame({"title": ["a"]}), ("Colour: {colour}",))


def test_fingerprint_changes_with_texts_and_encoder() -> None:
    base = fingerprint(["a", "b"], "enc")
    assert base == fingerprint(["a", "b"], "enc")
    assert base != fingerprint(["a", "c"], "enc")
    assert base != fingerprint(["a", "b"], "other")
    assert base != fingerprint(["ab"], "enc")  # texts are delimited, not concatenated


def test_bundled_minilm_encodes_offline_to_normalised_rows() -> None:
    texts = ["Title: Red lipstick. Brand: Acme.", "Title: Crimson lipstick. Brand: Acme.", "Title: Hiking boots."]
    vectors = encode(texts, "all-MiniLM-L6-v2", batch_size=2, device="cpu", progress=False)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]  # the two lipsticks are closer than lipstick and boots


def test_an_encoder_that_cannot_be_loaded_is_named(tmp_path) -> None:
    with pytest.raises(EmbeddingError, match=r"embed\.encoder .*cannot load"):
        encode(["x"], str(tmp_path / "no-such-model"), 2, "cpu", progress=False)


@pytest.mark.parametrize(
    ("matrix", "n_items", "message"),
    [
        (np.zeros((3, 4), np.float32), 4, "3 embedding rows for 4 items"),
        (np.array([[0.0, 1.0], [np.nan, 0.0]], np.float32), 2, "1 row.*NaN.*item_id 1"),
        (np.zeros((0, 4), np.float32), 0, "catalogue is empty"),
        (np.zeros(4, np.float32), 4, "2-d"),
    ],
)
def test_bad_embedding_matrices_are_refused(matrix: np.ndarray, n_items: int, message: str) -> None:
    with pytest.raises(EmbeddingError, match=message):
        check_embeddings(matrix, n_items, "embeddings.npy")


def test_empty_catalogue_is_refused_before_loading_a_model() -> None:
    with pytest.raises(EmbeddingError, match="catalogue is empty"):
        encode([], "all-MiniLM-L6-v2", 8, "cpu")
