"""Dashboard: compute what to draw (pure, tested), then render one self-contained plotly page."""
from __future__ import annotations

import html
from pathlib import Path

from .pareto import feasible, front

RUN_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f")


def front_info(rows: list[dict], budget: dict, teacher: dict | None, selected_trial: int | None) -> dict:
    """Points split into front / other feasible / infeasible, plus the teacher and the selected trial."""
    ok = {r["trial"] for r in rows if feasible(r["metrics"], budget)}
    front_ids = {r["trial"] for r in front([r["metrics"] | {"trial": r["trial"]} for r in rows if r["trial"] in ok])}
    groups = {"front": [], "feasible": [], "infeasible": []}
    for r in rows:
        key = "front" if r["trial"] in front_ids else "feasible" if r["trial"] in ok else "infeasible"
        groups[key].append(r)
    selected = next((r for r in rows if r["trial"] == selected_trial), None)
    return {"groups": groups, "teacher": teacher, "selected": selected, "budget": budget}


def _hover(run: str, r: dict) -> str:
    m = r["metrics"]
    recipe = "<br>".join(f"{k} = {v}" for k, v in r["params"].items())
    return (f"{html.escape(run)} trial {r['trial']}<br>accuracy {m['accuracy']:.4f}<br>p99 "
            f"{m['p99_latency_ms']:.2f} ms ({m['latency_source']})<br>memory {m['memory_mb']:.2f} MB<br>{recipe}")


def render(runs: list[tuple[str, dict]], path: Path, title: str) -> Path:
    """One page for one or several runs (fronts overlaid, one colour per run); plotly.js inlined."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy vs p99 latency", "accuracy vs memory"))
    for i, (name, info) in enumerate(runs):
        color, budget = RUN_COLORS[i % len(RUN_COLORS)], info["budget"]
        tag = f"{name}: " if len(runs) > 1 else ""
        for col, x in ((1, "p99_latency_ms"), (2, "memory_mb")):
            styles = {"front": (f"{tag}Pareto front (within budget)", color, 11, 1.0),
                      "feasible": (f"{tag}within budget", color, 7, 0.45),
                      "infeasible": (f"{tag}over budget", "#aaaaaa", 7, 0.6)}
            for key, (label, c, size, alpha) in styles.items():
                pts = sorted(info["groups"][key], key=lambda r: r["metrics"][x])
                fig.add_trace(go.Scatter(
                    x=[r["metrics"][x] for r in pts], y=[r["metrics"]["accuracy"] for r in pts],
                    mode="markers", name=label, legendgroup=f"{name}-{key}", showlegend=col == 1,
                    marker={"color": c, "size": size, "opacity": alpha},
                    hovertext=[_hover(name, r) for r in pts], hoverinfo="text"), row=1, col=col)
            for label, point, symbol, c in ((f"{tag}teacher (fp32)", info["teacher"], "star", "#d62728"),
                                            (f"{tag}selected", info["selected"] and info["selected"]["metrics"],
                                             "diamond-open", "#2ca02c")):
                if point:
                    fig.add_trace(go.Scatter(x=[point[x]], y=[point["accuracy"]], mode="markers", name=label,
                                             legendgroup=f"{name}-{label}", showlegend=col == 1,
                                             marker={"symbol": symbol, "size": 18, "color": c,
                                                     "line": {"width": 2, "color": c}}), row=1, col=col)
            fig.add_vline(x=budget[x], line_dash="dash", line_color=color, row=1, col=col,
                          annotation_text=f"{tag}budget {budget[x]:g}",
                          annotation_position=("top right", "bottom right")[i % 2])
            fig.add_vrect(x0=budget[x], x1=max(budget[x], _largest(runs, x)) * 1.05, fillcolor="#d62728",
                          opacity=0.05, line_width=0, row=1, col=col)  # the over-budget region
            fig.add_hline(y=budget["accuracy_floor"], line_dash="dot", line_color=color, row=1, col=col,
                          annotation_text=f"{tag}floor {budget['accuracy_floor']:.4f}",
                          annotation_position=("top left", "bottom left")[i % 2])
    for col, x in ((1, "p99_latency_ms"), (2, "memory_mb")):
        fig.update_xaxes(title_text=x, row=1, col=col)
        fig.update_yaxes(title_text="validation accuracy", row=1, col=col)
    fig.update_layout(title=title, height=600, template="plotly_white")
    page = fig.to_html(include_plotlyjs=True, full_html=True, div_id="fronts")  # inlined: works offline
    return _write(path, page, runs)


def _largest(runs: list[tuple[str, dict]], key: str) -> float:
    values = [r["metrics"][key] for _, info in runs for g in info["groups"].values() for r in g]
    values += [info["teacher"][key] for _, info in runs if info["teacher"]]
    return max(values, default=0.0)


def _write(path: Path, page: str, runs: list[tuple[str, dict]]) -> Path:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{r['trial']}</td><td>{r['metrics']['accuracy']:.4f}</td>"
        f"<td>{r['metrics']['p99_latency_ms']:.2f}</td><td>{r['metrics']['memory_mb']:.2f}</td>"
        f"<td>{html.escape(r.get('label', ''))}</td></tr>"
        for name, info in runs for r in sorted(info["groups"]["front"], key=lambda r: -r["metrics"]["accuracy"]))
    table = ("<h3 style='font-family:sans-serif'>Pareto front (within budget)</h3><table id='front-table' border=1 "
             "cellpadding=4 style='font-family:sans-serif;border-collapse:collapse'><tr><th>run</th><th>trial</th>"
             f"<th>accuracy</th><th>p99 ms</th><th>memory MB</th><th>recipe</th></tr>{rows}</table>")
    path.write_text(page.replace("</body>", table + "</body>"))
    return path
