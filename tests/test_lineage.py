"""Which params decide a stage's outputs (from the registry's DAG) and the seed-free config fingerprint."""

from __future__ import annotations

import pytest

from s2gr_core.config import params_from_dict
from s2gr_core.stages import STAGES, model_config
from s2gr_core.stages.lineage import param_value, upstream_params
from tests.conftest import TINY, repo_params


def test_upstream_params_follow_the_dag_and_nothing_else() -> None:
    sasrec = set(upstream_params(STAGES, "evaluate_sasrec"))
    assert {"sasrec", "split", "validate", "data", "inference", "evaluate"} <= sasrec
    assert not sasrec & {"tiger", "s2gr", "embed", "codebook", "sids", "tracking"}
    s2gr = set(upstream_params(STAGES, "evaluate_s2gr"))
    assert {"s2gr", "sids", "codebook", "cooccur", "embed", "split"} <= s2gr
    assert not s2gr & {"sasrec", "tiger"}
    assert upstream_params(STAGES, "fetch") == ("data",)


def test_upstream_params_rejects_an_unknown_stage() -> None:
    with pytest.raises(KeyError, match="unknown stage 'train_bert4rec'"):
        upstream_params(STAGES, "train_bert4rec")


def test_param_value_reads_sections_and_dotted_keys() -> None:
    params = params_from_dict(repo_params())
    assert param_value(params, "split.max_history") == params.split.max_history
    assert param_value(params, "split") == {"max_history": params.split.max_history}
    assert param_value(params, "gr.length_buckets") == params.gr["length_buckets"]  # a dict section's key
    assert param_value(params, "gr")["lr"] == params.tiger.lr


@pytest.mark.parametrize(
    ("model", "section", "field", "value", "same"),
    [
        ("sasrec", "sasrec", "seed", 7, True),  # another seed of one configuration
        ("sasrec", "tiger", "lr", 0.5, True),  # not upstream of SASRec
        ("sasrec", "tracking", "experiment", "other", True),
        ("sasrec", "sasrec", "lr", 0.5, False),
        ("sasrec", "split", "max_history", 5, False),
        ("sasrec", "inference", "exclude_history", True, False),
        ("tiger", "codebook", "epochs", 3, False),  # upstream through the SIDs
        ("tiger", "tiger", "seed", 7, True),
        ("tiger", "gr", "lr", 0.5, False),  # shared: both generative models' configurations change
        ("s2gr", "gr", "lr", 0.5, False),
        ("tiger", "s2gr", "lr", 0.5, True),  # S2GR's own override leaves TIGER alone
        ("tiger", "sasrec", "seed", 7, True),
    ],
)
def test_model_config_changes_with_upstream_params_but_not_the_seed(
    model: str, section: str, field: str, value: object, same: bool
) -> None:
    base = params_from_dict(repo_params())
    changed = params_from_dict(repo_params(**{section: {**TINY.get(section, {}), field: value}}))
    assert (model_config(base, model) == model_config(changed, model)) is same
    assert len(model_config(base, model)) == 12
