"""Dashboard: compute what to draw (pure, tested), then render one self-contained plotly page."""
from __future__ import annotations

import html
from pathlib import Path

from .pareto import feasible, front


def front_info(rows: list[dict], budget: dict, teacher: dict | None, selected_trial: int | None) -> dict:
    """Points split into front / other feasible / infeasible, plus the teacher and the selected trial."""
    feasible_rows = [r for r in rows if feasible(r["metrics"], budget)]
    front_ids = {r["trial"] for r in front([r["metrics"] | {"trial": r["trial"]} for r in feasible_rows])}
    groups = {"front": [], "feasible": [], "infeasible": []}
    for r in rows:
        key = "front" if r["trial"] in front_ids else "feasible" if r in feasible_rows else "infeasible"
        groups[key].append(r)
    selected = next((r for r in rows if r["trial"] == selected_trial), None)
    return {"groups": groups, "teacher": teacher, "selected": selected, "budget": budget}


def _hover(r: dict) -> str:
    m = r["metrics"]
    recipe = "<br>".join(f"{k} = {v}" for k, v in r["params"].items())
    return (f"trial {r['trial']}<br>accuracy {m['accuracy']:.4f}<br>p99 {m['p99_latency_ms']:.2f} ms "
            f"({m['latency_source']})<br>memory {m['memory_mb']:.2f} MB<br>{recipe}")


def render(info: dict, path: Path, title: str) -> Path:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    budget = info["budget"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy vs p99 latency", "accuracy vs memory"))
    styles = {"front": ("Pareto front (feasible)", "#1f77b4", 11), "feasible": ("feasible", "#9ecae1", 8),
              "infeasible": ("over budget", "#bbbbbb", 7)}
    for col, x in ((1, "p99_latency_ms"), (2, "memory_mb")):
        for key, (name, color, size) in styles.items():
            pts = info["groups"][key]
            fig.add_trace(go.Scatter(
                x=[r["metrics"][x] for r in pts], y=[r["metrics"]["accuracy"] for r in pts], mode="markers",
                name=name, legendgroup=key, showlegend=col == 1, marker={"color": color, "size": size},
                hovertext=[_hover(r) for r in pts], hoverinfo="text"), row=1, col=col)
        for label, point, symbol, color in (("teacher (fp32)", info["teacher"], "star", "#d62728"),
                                            ("selected", info["selected"] and info["selected"]["metrics"],
                                             "diamond-open", "#2ca02c")):
            if point:
                fig.add_trace(go.Scatter(x=[point[x]], y=[point["accuracy"]], mode="markers", name=label,
                                         legendgroup=label, showlegend=col == 1,
                                         marker={"symbol": symbol, "size": 18, "color": color,
                                                 "line": {"width": 2, "color": color}}), row=1, col=col)
        fig.add_vline(x=budget[x], line_dash="dash", line_color="#d62728", row=1, col=col,
                      annotation_text=f"budget {budget[x]:g}")
        fig.add_vrect(x0=budget[x], x1=budget[x] * 1e3, fillcolor="#d62728", opacity=0.06, line_width=0,
                      row=1, col=col)
        fig.add_hline(y=budget["accuracy_floor"], line_dash="dot", line_color="#ff7f0e", row=1, col=col,
                      annotation_text=f"floor {budget['accuracy_floor']:.4f}")
        fig.update_xaxes(title_text=x, type="log", row=1, col=col)
        fig.update_yaxes(title_text="validation accuracy", row=1, col=col)
    fig.update_layout(title=title, height=560, template="plotly_white")
    table = "".join(
        f"<tr><td>{r['trial']}</td><td>{r['metrics']['accuracy']:.4f}</td><td>{r['metrics']['p99_latency_ms']:.2f}"
        f"</td><td>{r['metrics']['memory_mb']:.2f}</td><td>{html.escape(r.get('label', ''))}</td></tr>"
        for r in sorted(info["groups"]["front"], key=lambda r: -r["metrics"]["accuracy"]))
    page = fig.to_html(include_plotlyjs=True, full_html=True)  # inlined plotly.js: works offline
    page = page.replace("</body>", "<h3 style='font-family:sans-serif'>Pareto front</h3><table border=1 "
                        "cellpadding=4 style='font-family:sans-serif;border-collapse:collapse'><tr><th>trial</th>"
                        "<th>accuracy</th><th>p99 ms</th><th>memory MB</th><th>recipe</th></tr>"
                        f"{table}</table></body>")
    path.write_text(page)
    return path
