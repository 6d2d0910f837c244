"""The study report: one self-contained HTML file (plotly, its JavaScript inline) that opens offline.

It reads the storage only: the leaderboard, the Pareto front of accuracy against every
recorded cost, accuracy against the number, kind and span of connections, a placement
map, gradient-flow profiles of the best and worst trials, training-free scores against
accuracy, Optuna's parameter importances, best-so-far over time and learning curves.
"""

from __future__ import annotations

import html
import math
import warnings
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from resnas.report import leaderboard, pareto_ranks
from resnas.search._progress import is_finished

TrialState = optuna.trial.TrialState
COSTS = ("params", "train_flops", "train_seconds", "latency_ms", "peak_memory_mb")
TOP_FRACTION = 0.25  # "top trials" of the placement map


def _go():
    import plotly.graph_objects as go

    return go


def trial_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per COMPLETE trial with its metrics and what it recorded before training."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not is_finished(t):  # a confirmation run repeats a trial with another seed
            continue
        attrs = t.user_attrs
        arch = attrs.get("architecture", {})
        conns = arch.get("connections", [])
        rows.append(
            {
                "trial": t.number,
                **attrs.get("metrics", {}),
                "connections": len(conns),
                "conn_list": conns,
                "blocks": len(arch.get("blocks", [])),
                "placements": attrs.get("placements", ""),
                "baseline": attrs.get("baseline"),
                "history": attrs.get("history") or [],
                "intermediate": dict(t.intermediate_values),
                "grad_profile": attrs.get("grad_profile"),
                "scores": attrs.get("scores", {}),
                "complete": t.datetime_complete,
            }
        )
    return pd.DataFrame(rows)


def _empty(fig, text: str):
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    return fig


def _layout(fig, title: str, height: int = 380):
    fig.update_layout(
        title={"text": title, "x": 0.01},
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        template="plotly_white",
    )
    return fig


def pareto_figure(df: pd.DataFrame):
    from plotly.subplots import make_subplots

    go = _go()
    costs = [c for c in COSTS if c in df.columns and df[c].notna().any()]
    fig = make_subplots(rows=1, cols=max(1, len(costs)), subplot_titles=costs or [""], shared_yaxes=True)
    for i, cost in enumerate(costs, start=1):
        sub = df[["trial", "val_accuracy", cost]].dropna()
        ranks = pareto_ranks(sub[["val_accuracy", cost]].to_numpy(float), [True, False])
        front = sub[ranks == 1].sort_values(cost)
        text = [f"trial {n}" for n in sub["trial"]]
        fig.add_trace(
            go.Scatter(x=sub[cost], y=sub["val_accuracy"], mode="markers", text=text, name="trial",
                       marker={"color": "#9aa", "size": 7}, showlegend=i == 1),
            row=1, col=i,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=front[cost], y=front["val_accuracy"], mode="lines+markers", name="Pareto front",
                       line={"shape": "hv", "color": "#d62728"}, marker={"size": 9},
                       text=[f"trial {n}" for n in front["trial"]], showlegend=i == 1),
            row=1, col=i,
        )  # fmt: skip
        fig.update_xaxes(type="log", row=1, col=i)
    fig.update_yaxes(title_text="val_accuracy", row=1, col=1)
    if not costs:
        _empty(fig, "no costs recorded")
    return _layout(fig, "Pareto front: accuracy against each recorded cost")


def connections_figure(df: pd.DataFrame):
    from plotly.subplots import make_subplots

    go = _go()
    fig = make_subplots(rows=1, cols=3, subplot_titles=["number", "kind", "span"], shared_yaxes=True)
    fig.add_trace(
        go.Box(x=df["connections"], y=df["val_accuracy"], boxpoints="all", name="number", marker={"color": "#1f77b4"}),
        row=1,
        col=1,
    )
    for col, key in ((2, "kind"), (3, "span")):
        xs, ys = [], []
        for _, row in df.iterrows():
            values = {c["kind"] if key == "kind" else c["dst"] - c["src"] for c in row["conn_list"]} or {"none"}
            for v in values:
                xs.append(str(v))
                ys.append(row["val_accuracy"])
        fig.add_trace(go.Box(x=xs, y=ys, boxpoints="all", name=key, marker={"color": "#2ca02c"}), row=1, col=col)
    fig.update_yaxes(title_text="val_accuracy", row=1, col=1)
    fig.update_layout(showlegend=False)
    return _layout(fig, "Accuracy against the number, kind and span of connections (a trial counts once per kind/span)")


def placement_figure(df: pd.DataFrame):
    from plotly.subplots import make_subplots

    go = _go()
    n = int(df["blocks"].max()) if len(df) else 0
    top = df.nlargest(max(1, int(math.ceil(len(df) * TOP_FRACTION))), "val_accuracy") if len(df) else df
    freq = np.full((n, n), np.nan)  # rows: source block, columns: destination block - 1
    effect = np.full((n, n), np.nan)
    has = defaultdict(set)
    for _, row in df.iterrows():
        for c in row["conn_list"]:
            has[(c["src"], c["dst"])].add(row["trial"])
    top_ids = set(top["trial"])
    for (src, dst), ids in has.items():
        freq[src, dst - 1] = len(ids & top_ids) / max(1, len(top_ids))
        with_, without = df[df["trial"].isin(ids)], df[~df["trial"].isin(ids)]
        if len(without):
            effect[src, dst - 1] = with_["val_accuracy"].mean() - without["val_accuracy"].mean()
    fig = make_subplots(
        rows=1, cols=2, horizontal_spacing=0.12,
        subplot_titles=[f"share of the top {len(top_ids)} trials using it", "mean val_accuracy with minus without"],
    )  # fmt: skip
    labels = [str(k) for k in range(n)]
    dst_labels = [str(k + 1) for k in range(n)]
    fig.add_trace(
        go.Heatmap(z=freq, x=dst_labels, y=labels, colorscale="Blues", zmin=0, zmax=1, colorbar={"x": 0.44},
                   hovertemplate="%{y}→%{x}: %{z:.2f}<extra></extra>"),
        row=1, col=1,
    )  # fmt: skip
    bound = float(np.nanmax(np.abs(effect))) if np.isfinite(effect).any() else 1.0
    fig.add_trace(
        go.Heatmap(z=effect, x=dst_labels, y=labels, colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound,
                   hovertemplate="%{y}→%{x}: %{z:+.3f}<extra></extra>"),
        row=1, col=2,
    )  # fmt: skip
    for col in (1, 2):
        fig.update_xaxes(title_text="destination block (merges into the output of block dst-1)", row=1, col=col)
        fig.update_yaxes(title_text="source block", autorange="reversed", row=1, col=col)
    if not has:
        _empty(fig, "no connections in these trials")
    return _layout(fig, "Placement map: source block × destination block", height=460)


def gradient_figure(df: pd.DataFrame):
    go = _go()
    fig = go.Figure()
    known = df[df["grad_profile"].notna()] if len(df) else df
    if len(known):
        picks = {"best": known.loc[known["val_accuracy"].idxmax()], "worst": known.loc[known["val_accuracy"].idxmin()]}
        for name, row in picks.items():
            p = row["grad_profile"]
            label = f"{name}: trial {row['trial']} (acc {row['val_accuracy']:.3f}, ratio {p['ratio']:.3g}x)"
            fig.add_trace(go.Scatter(y=p["weight"], mode="lines+markers", name=label))
    else:
        _empty(fig, "no gradient profiles recorded")
    fig.update_yaxes(type="log", title_text="|dL/dW| of the block at initialisation")
    fig.update_xaxes(title_text="block")
    return _layout(fig, "Gradient flow of the best and worst trials (one batch, at initialisation)")


def scores_figure(df: pd.DataFrame):
    from plotly.subplots import make_subplots

    go = _go()
    scores = pd.DataFrame(list(df["scores"])) if len(df) else pd.DataFrame()
    names = [c for c in scores.columns if scores[c].notna().sum() > 1]
    titles = []
    for name in names:
        rho = scores[name].corr(df["val_accuracy"].reset_index(drop=True), method="spearman")
        titles.append(f"{name} (ρ {rho:.2f})")
    cols = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles or [""], shared_yaxes=True, vertical_spacing=0.15)
    for i, name in enumerate(names):
        fig.add_trace(
            go.Scatter(x=scores[name], y=df["val_accuracy"], mode="markers", text=[f"trial {n}" for n in df["trial"]],
                       marker={"size": 6, "color": "#9467bd"}, showlegend=False),
            row=i // cols + 1, col=i % cols + 1,
        )  # fmt: skip
    if not names:
        _empty(fig, "no training-free scores recorded")
    return _layout(fig, "Training-free scores against val_accuracy (Spearman ρ)", height=260 * rows + 60)


def importance_figure(study: optuna.Study):
    go = _go()
    fig = go.Figure()
    try:
        # Optuna's default evaluator (PED-ANOVA) explains low target values: negate a maximised objective.
        sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        with warnings.catch_warnings():  # its reminder that low targets are explained: they are, by the sign
            warnings.simplefilter("ignore", UserWarning)
            importances = optuna.importance.get_param_importances(study, target=lambda t: sign * t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        importances, reason = {}, str(exc)
    else:
        reason = "no parameter varied between complete trials"
    if importances:
        names = list(importances)[:15][::-1]  # the fifteen that matter most
        fig.add_trace(go.Bar(x=[importances[n] for n in names], y=names, orientation="h", marker={"color": "#ff7f0e"}))
    else:
        _empty(fig, f"no importances: {reason}"[:120])
    fig.update_xaxes(title_text="importance for the first objective (Optuna's default evaluator)")
    fig.update_yaxes(automargin=True)
    return _layout(fig, "Optuna parameter importances", height=max(300, 26 * min(15, len(importances)) + 120))


def progress_figure(study: optuna.Study, df: pd.DataFrame):
    go = _go()
    fig = go.Figure()
    if len(df):
        order = df.sort_values("complete")
        start = min(t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start)
        minutes = [(c - start).total_seconds() / 60 for c in order["complete"]]
        fig.add_trace(go.Scatter(x=minutes, y=order["val_accuracy"], mode="markers", name="trial",
                                 text=[f"trial {n}" for n in order["trial"]], marker={"color": "#9aa"}))  # fmt: skip
        fig.add_trace(go.Scatter(x=minutes, y=order["val_accuracy"].cummax(), mode="lines", name="best so far",
                                 line={"shape": "hv", "color": "#d62728"}))  # fmt: skip
    else:
        _empty(fig, "no complete trials")
    fig.update_xaxes(title_text="minutes since the study started")
    fig.update_yaxes(title_text="val_accuracy")
    return _layout(fig, "Best val_accuracy so far over time")


def curves_figure(df: pd.DataFrame):
    go = _go()
    fig = go.Figure()
    best = set(df.nlargest(5, "val_accuracy")["trial"]) if len(df) else set()
    drawn = 0
    for _, row in df.sort_values("val_accuracy").iterrows():
        if row["history"]:
            ys = [h.get("val_accuracy") for h in row["history"]]
        else:
            ys = [row["intermediate"][k] for k in sorted(row["intermediate"])]
        if not ys:
            continue
        drawn += 1
        top = row["trial"] in best
        fig.add_trace(
            go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines", name=f"trial {row['trial']}",
                       line={"width": 2.5 if top else 1, "color": None if top else "#ccc"}, showlegend=top)
        )  # fmt: skip
    if not drawn:
        _empty(fig, "no per-epoch history recorded")
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="val_accuracy")
    return _layout(fig, "Learning curves (the five best in colour)")


def _leaderboard_html(study: optuna.Study, top: int) -> str:
    from resnas.cli._leaderboard import cell, default_columns

    board = leaderboard(study)
    if board.empty:
        return "<p>No finished trials yet.</p>"
    names = study.metric_names or [f"objective{i}" for i in range(len(study.directions))]
    cols = [c for c in default_columns(board, names) if c != "grad_ratio"] + ["grad_ratio", "fingerprint"]
    cols = list(dict.fromkeys(c for c in cols if c in board.columns))
    head = "".join(f'<th class="{c}">{html.escape(c)}</th>' for c in cols)
    rows = []
    for _, row in board.head(top).iterrows():
        base = row.get("baseline")
        mark = f' class="baseline" title="baseline: {html.escape(str(base))}"' if isinstance(base, str) and base else ""
        cells = []
        for c in cols:
            text = cell(c, row[c])
            if c == "placements" and mark:
                text = f"★ {base}: {text}"
            cells.append(f'<td class="{c}">{html.escape(text)}</td>')
        rows.append(f"<tr{mark}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;
padding:0 16px;color:#222}
h1{font-size:1.5em;margin-bottom:0}.meta{color:#666;margin-top:4px}
section{margin:28px 0}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;width:100%}th,td{padding:3px 8px;border-bottom:1px solid #eee;
text-align:right;white-space:nowrap}.placements,.fingerprint{text-align:left}
td.placements{white-space:normal;min-width:320px;font-size:12px}
tr.baseline{background:#fff6d5}.note{color:#555;font-size:13px}
"""


def render_report(study: optuna.Study, top: int = 20) -> str:
    """The report of ``study`` as one HTML document (plotly's JavaScript inline, no network)."""
    from plotly.offline import get_plotlyjs

    df = trial_frame(study)
    if "val_accuracy" not in df.columns:
        df = df.assign(val_accuracy=pd.Series(dtype=float))
    trials = study.get_trials(deepcopy=False)
    count = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    screened = sum("screened_out" in t.user_attrs for t in trials)
    figures = [
        ("pareto", "Cheaper networks that lose no accuracy lie on the red line.", pareto_figure(df)),
        ("connections", "Each dot is a trained trial.", connections_figure(df)),
        (
            "placements",
            f"Left: how often each connection is chosen among the top {TOP_FRACTION:.0%} of trials. "
            "Right: mean accuracy of trials with it minus those without (blue helps, red hurts).",
            placement_figure(df),
        ),
        ("gradients", "A line falling towards block 0 is a vanishing gradient.", gradient_figure(df)),
        ("scores", "Scores computed without training; screening keeps the highest.", scores_figure(df)),
        ("importances", "Which sampled parameters explain the first objective.", importance_figure(study)),
        ("progress", "", progress_figure(study, df)),
        ("curves", "", curves_figure(df)),
    ]
    sections = []
    for name, note, fig in figures:
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}",
                          config={"displaylogo": False, "responsive": True})  # fmt: skip
        sections.append(f'<section>{div}<p class="note">{html.escape(note)}</p></section>')
    objectives = ", ".join(
        f"{n} ({'max' if d == optuna.study.StudyDirection.MAXIMIZE else 'min'})"
        for n, d in zip(study.metric_names or [], study.directions)
    )
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = (
        f"{count['complete']} complete, {count['pruned'] - screened} pruned, {screened} screened out, "
        f"{count['fail']} failed, {count['running']} running · objectives: {objectives or '-'} · {now}"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>resnas report: {html.escape(study.study_name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body><h1>resnas study {html.escape(study.study_name)}</h1><p class="meta">{html.escape(meta)}</p>
<section><h2>Leaderboard</h2>{_leaderboard_html(study, top)}
<p class="note">★ marks a baseline (a reference network the search also trained).</p></section>
{"".join(sections)}
</body></html>
"""


def write_report(study: optuna.Study, path: str | Path, top: int = 20) -> Path:
    path = Path(path)
    path.write_text(render_report(study, top), encoding="utf-8")
    return path


def upload_report(study: optuna.Study, path: str | Path) -> str:
    """Store the report in the study's artifact store (optuna-dashboard lists it); returns its id."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    from resnas.errors import StudyError
    from resnas.search._study import ARTIFACT_DIR, artifact_dir

    if ARTIFACT_DIR not in study.user_attrs:
        raise StudyError(f"--upload: study {study.study_name!r} has no artifact store (it was not made by resnas)")
    store = FileSystemArtifactStore(artifact_dir(study))
    return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study, mimetype="text/html")


__all__ = ["render_report", "trial_frame", "upload_report", "write_report"]
