"""The ``promote`` stage: register every evaluated model, gate it, and choose the served champion.

For each family of ``registry.families``: package the trained model (``s2gr_core.serving.bundle``),
log it as a pyfunc in a run nested in this stage's MLflow run (``promote/<family>``, linked to the
training run that wrote its weights), register it as a new version of
``<prefix>-<dataset>-<family>`` with ``@challenger``, and move ``@champion`` to it if it beats the
family's champion on ``registry.split`` (``s2gr_core.evaluation.gate``). Then the best of the
families' champions goes through the same gate against ``<prefix>-<dataset>@champion``, the model
``s2gr serve`` serves. ``reports/promotion.{json,md}`` say what was compared and why.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from s2gr.registry import TAG_CONTENT, TAG_MODEL, TAG_RESULTS, TAG_SOURCE, Registry, Scored, family_model, serving_model
from s2gr_core.config import Params
from s2gr_core.config.serving import Family
from s2gr_core.evaluation.compare import read_per_user
from s2gr_core.evaluation.gate import Decision, metric_mean
from s2gr_core.io import md5_file, write_json, write_parquet, write_text
from s2gr_core.serving.bundle import BundleConfig, build_bundle
from s2gr_core.stages.base import Reporter, StageResult


def bundle_for(
    params: Params, family: Family, dest: Path, model_dir: Path, items: Path, interactions: Path, sids: Path
) -> BundleConfig:
    """The serving bundle of one family, with the pipeline's own decoding settings."""
    section = getattr(params, family)
    return build_bundle(
        family,
        dest,
        model_dir=model_dir,
        items=items,
        interactions=interactions,
        sids=None if family == "sasrec" else sids,
        dataset=params.data.name,
        max_history=params.split.max_history,
        beam=getattr(section, "beam", 0),
        batch_size=params.inference.batch_size,
        length_buckets=section.length_buckets,
        default_k=params.serve.k,
        exclude_history=params.inference.exclude_history,
        max_batch=params.serve.max_batch,
    )


def label(scored: Scored | None) -> str | None:
    return None if scored is None else f"{scored.version.name}/{scored.version.version}"


def row(model: str, challenger: Scored, champion: Scored | None, decision: Decision) -> dict[str, Any]:
    return {
        "model": model,
        "challenger": label(challenger),
        "champion_before": label(champion),
        "champion_after": label(challenger if decision.promote else champion),
        "notes": [s.note for s in (challenger, champion) if s is not None and s.note],
        **decision.as_dict(),
    }


def kept(model: str, champion: Scored, why: str, results: pd.DataFrame, params: Params) -> dict[str, Any]:
    """The row of a model whose champion stays without a new version to gate (``results``: its per-user results)."""
    mean = metric_mean(results, params.registry)[0]
    return row(model, champion, champion, Decision(False, why, params.registry.metric, params.registry.split, mean))


def markdown(report: dict[str, Any]) -> str:
    def num(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    lines = [
        f"## Promotion on {report['dataset']} ({report['metric']}, {report['split']} split)",
        "",
        "| registered model | challenger | champion before | old | new | delta | CI | decision | why |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in [*report["families"].values(), report["serving"]]:
        ci = "—" if r["ci_low"] is None else f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        delta = "—" if r["delta"] is None else f"{r['delta']:+.4f}"
        lines.append(
            f"| {r['model']} | {r['challenger']} | {r['champion_before'] or '—'} | {num(r['old'])} | {num(r['new'])} "
            f"| {delta} | {ci} "
            f"| {'**promote**' if r['promote'] else 'keep'} | {r['reason']} |"
        )
    serving = report["serving"]
    lines += ["", f"Served (`s2gr serve`): `models:/{serving['model']}@champion` = {serving['champion_after']}"
              f" ({serving['served_source']})."]  # fmt: skip
    notes = [n for r in [*report["families"].values(), report["serving"]] for n in r["notes"]]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def promote_stage(
    params: Params,
    *,
    items: Path,
    interactions: Path,
    sids: Path,
    valid: Path,
    test: Path,
    report: Path,
    summary: Path,
    reporter: Reporter,
    **models: Path,
) -> StageResult:
    """Register, gate and promote (see the module docstring). ``models``: ``<family>_model`` and ``<family>_eval``."""
    cfg = params.registry
    run_id = getattr(reporter, "run_id", None)
    base = {"dataset": params.data.name, "metric": cfg.metric, "split": cfg.split}
    if run_id is None:
        why = "MLflow tracking is off (S2GR_TRACKING=off or --no-track): nothing registered, nothing promoted"
        write_json({**base, "skipped": why}, report)
        write_text(f"## Promotion on {params.data.name}\n\nSkipped: {why}.\n", summary)
        return StageResult(tags={"skipped": why}, artifacts=[report, summary], summary=f"skipped: {why}")
    root: Path = reporter.root  # type: ignore[attr-defined]  (a StageRun: tracking is on)
    registry = Registry(root, params, run_id, md5_file(interactions), valid if cfg.split == "valid" else test, items)
    families: dict[str, dict[str, Any]] = {}
    winners: dict[str, Scored] = {}
    for family in cfg.families:
        name, per_user = family_model(params, family), models[f"{family}_eval"]
        weights = md5_file(models[f"{family}_model"] / "best.pt")
        content = weights + md5_file(per_user)
        champion = registry.champion(name)
        if champion is not None and not champion.note and champion.version.tags.get(TAG_CONTENT) == content:
            why = f"unchanged: {label(champion)} has these weights and results"
            families[family] = kept(name, champion, why, champion.results, params)
            winners[family] = champion
            continue
        with tempfile.TemporaryDirectory() as tmp:
            bundle_for(params, family, Path(tmp) / "bundle", models[f"{family}_model"], items, interactions, sids)
            logged = registry.log(Path(tmp) / "bundle", family, per_user, weights)
        version = registry.register(
            name, logged.model_uri, family, logged.results_uri, content=content, run_id=logged.run_id
        )
        challenger = Scored(version, read_per_user(per_user))
        decision = registry.gate(name, challenger, champion)
        families[family] = {**row(name, challenger, champion, decision), "training_run": logged.training_run}
        winners[family] = challenger if decision.promote or champion is None else champion
    serving = serve_choice(registry, params, winners)
    out = {**base, "data_version": registry.data_version, "families": families, "serving": serving}
    write_json(out, report)
    write_text(markdown(out), summary)
    promoted = [r["model"] for r in [*families.values(), serving] if r["promote"]]
    served = f"{serving['champion_after']} ({serving['served_source']})"
    return StageResult(
        metrics={"promoted": float(len(promoted))},
        tags={"served_champion": serving["champion_after"] or "", "served_source": serving["served_source"] or ""},
        artifacts=[report, summary],
        summary=f"promoted: {', '.join(promoted) or 'none'}; serving {served}",
    )


def serve_choice(registry: Registry, params: Params, winners: dict[str, Scored]) -> dict[str, Any]:
    """Gate the best family champion against the served champion; register it there if it is new."""
    name = serving_model(params)
    family = max(winners, key=lambda f: metric_mean(winners[f].results, params.registry)[0])
    best = winners[family]
    current = registry.champion(name)
    if current is not None and current.version.tags.get(TAG_SOURCE) == label(best):
        why = f"{label(best)} is already served"
        return {**kept(name, current, why, best.results, params), "served_source": label(best)}
    results = best.version.tags[TAG_RESULTS]
    if best.note:  # re-scored on this data: log the results the new version is judged by
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{family}_per_user.parquet"
            write_parquet(best.results, path)
            registry.mlf.log_artifact(registry.run_id, str(path), artifact_path="evaluation")
        results = f"runs:/{registry.run_id}/evaluation/{path.name}"
    version = registry.register(
        name, best.version.tags[TAG_MODEL], family, results, source=label(best) or "",
        content=best.version.tags.get(TAG_CONTENT, ""),
    )  # fmt: skip
    challenger = Scored(version, best.results, best.note)
    decision = registry.gate(name, challenger, current)
    source = label(best) if decision.promote or current is None else current.version.tags.get(TAG_SOURCE)
    return {**row(name, challenger, current, decision), "served_source": source}
