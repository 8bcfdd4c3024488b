"""Dashboard: compute what to draw (pure, tested), then render one self-contained plotly page."""
from __future__ import annotations

import html
import math
from pathlib import Path

from . import budget_cost
from .errors import ConfigError
from .objectives import Objective, constraints, for_budget, slice_limits
from .pareto import feasible, front, hypervolume
from .run_dir import atomic_write_text

RUN_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f")


def check_out(out: Path, force: bool) -> Path:
    """`report --out`, by export's rules: a new file in an existing folder that can be written, or (`--force`) an
    existing file replaced; never a folder."""
    if out.is_dir():
        raise ConfigError(out, "--out", "is a folder; give a file path, e.g. compare.html")
    if out.exists() and not force:
        raise ConfigError(out, "--out", "exists; give a new file, or --force to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(out, "--out", f"folder {parent} does not exist; create it or give another path")
    import os

    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(out, "--out", f"folder {parent} is not writable; fix its permissions or give another path")
    return out


def history(rows: list[dict], budget: dict) -> list[dict]:
    """After each completed trial (in trial order): hypervolume within the budget, best feasible quality
    (accuracy, or a language model's KLD / agreement / perplexity ratio; key `best_feasible_quality`)."""
    q = for_budget(budget)[0]
    out, seen = [], []
    for r in sorted(rows, key=lambda r: r["trial"]):
        seen.append(r["metrics"])
        ok = [m[q.name] for m in seen if feasible(m, budget)]
        out.append({"trial": r["trial"], "hypervolume": hypervolume(seen, budget),
                    "best_feasible_quality": (max(ok) if q.sign > 0 else min(ok)) if ok else None})
    return out


def front_info(rows: list[dict], budget: dict, teacher: dict | None, selected_trial: int | None,
               importances: dict | None = None) -> dict:
    """Points split into front / other feasible / infeasible, plus the teacher, the selected trial,
    the search's progress over time, what each resource budget buys (per resource, the best quality within the
    other budgets as this one moves: budget_cost.curve) and (when given) parameter importances for accuracy."""
    ok = {r["trial"] for r in rows if feasible(r["metrics"], budget)}
    front_ids = {r["trial"] for r in front([r["metrics"] | {"trial": r["trial"]} for r in rows if r["trial"] in ok],
                                           for_budget(budget))}
    groups = {"front": [], "feasible": [], "infeasible": []}
    for r in rows:
        key = "front" if r["trial"] in front_ids else "feasible" if r["trial"] in ok else "infeasible"
        groups[key].append(r)
    selected = next((r for r in rows if r["trial"] == selected_trial), None)
    return {"groups": groups, "teacher": teacher, "selected": selected, "budget": budget, "rows": rows,
            "history": history(rows, budget), "importances": importances or {},
            "budget_cost": {o.name: budget_cost.curve(rows, budget, o) for o in constraints(budget)[1:]}}


def _log_axis(values: list[float]) -> bool:
    """Log x when the plotted values span more than a decade: on a linear axis everything under a tenth of the
    largest (typically every candidate, next to a far fp32 teacher) shares the leftmost tenth of the width. A log
    axis cannot show zero or less, so then linear."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def _vline(fig, x: float, log_x: bool, **kwargs) -> None:
    """add_vline with its label where the line is: on a log axis plotly.js reads a shape's x as data but an
    annotation's as log10 of it (a label for 16 MB would sit at 1e16 MB and stretch the autorange there)."""
    fig.add_vline(x=x, **kwargs)
    if log_x and kwargs.get("annotation_text"):
        fig.layout.annotations[-1].x = math.log10(x)


def _axis(label: str, values: list) -> dict:
    """A parallel-coordinates axis: numbers as they are; a categorical knob (strings, or numbers mixed with
    strings such as group_size 32/64/channel) as one tick per option. Not sampled in a trial -> blank."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return {"label": label, "values": [float("nan") if v is None else v for v in values]}
    options = sorted({str(v) for v in present})
    return {"label": label, "values": [float("nan") if v is None else options.index(str(v)) for v in values],
            "tickvals": list(range(len(options))), "ticktext": options}


def _hover(run: str, r: dict, budget: dict) -> str:
    m = r["metrics"]
    q, lat, _ = for_budget(budget)
    recipe = "<br>".join(f"{k} = {v}" for k, v in r["params"].items())
    per_slice = "".join(f"<br>&nbsp;&nbsp;{html.escape(x.slice)} {m[x.key]:.4f}" for x in slice_limits(budget)
                        if x.key in m)
    return (f"{html.escape(run)} trial {r['trial']}<br>{q.name} {m[q.name]:.4f}{per_slice}<br>{lat.name} "
            f"{m[lat.name]:.2f} ms ({m['latency_source']})<br>memory {m['memory_mb']:.2f} MB<br>{recipe}")


def render(runs: list[tuple[str, dict]], path: Path, title: str) -> Path:
    """One page for one or several runs (fronts overlaid, one colour per run); plotly.js inlined."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    q, lat, _ = for_budget(runs[0][1]["budget"])  # runs overlaid on one page share their objectives
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"{q.name} vs {lat.name}", f"{q.name} vs memory"))
    log_x = {x: _log_axis(_plotted(runs, x) + [info["budget"][x] for _, info in runs])  # budget lines are plotted
             for x in (lat.name, "memory_mb")}
    for i, (name, info) in enumerate(runs):
        color, budget = RUN_COLORS[i % len(RUN_COLORS)], info["budget"]
        tag = f"{name}: " if len(runs) > 1 else ""
        for col, x in ((1, lat.name), (2, "memory_mb")):
            styles = {"front": (f"{tag}Pareto front (within budget)", color, 11, 1.0),
                      "feasible": (f"{tag}within budget", color, 7, 0.45),
                      "infeasible": (f"{tag}over budget", "#aaaaaa", 7, 0.6)}
            for key, (label, c, size, alpha) in styles.items():
                pts = sorted(info["groups"][key], key=lambda r: r["metrics"][x])
                fig.add_trace(go.Scatter(
                    x=[r["metrics"][x] for r in pts], y=[r["metrics"][q.name] for r in pts],
                    mode="markers", name=label, legendgroup=f"{name}-{key}", showlegend=col == 1,
                    marker={"color": c, "size": size, "opacity": alpha},
                    hovertext=[_hover(name, r, budget) for r in pts], hoverinfo="text"), row=1, col=col)
            for label, point, symbol, c in ((f"{tag}teacher (fp32)", info["teacher"], "star", "#d62728"),
                                            (f"{tag}selected", info["selected"] and info["selected"]["metrics"],
                                             "diamond-open", "#2ca02c")):
                if point:
                    fig.add_trace(go.Scatter(x=[point[x]], y=[point[q.name]], mode="markers", name=label,
                                             legendgroup=f"{name}-{label}", showlegend=col == 1,
                                             marker={"symbol": symbol, "size": 18, "color": c,
                                                     "line": {"width": 2, "color": c}}), row=1, col=col)
            _vline(fig, budget[x], log_x[x], line_dash="dash", line_color=color, row=1, col=col,
                   annotation_text=f"{tag}budget {budget[x]:g}",
                   annotation_position=("top right", "bottom right")[i % 2])
            fig.add_vrect(x0=budget[x], x1=max(budget[x], _largest(runs, x)) * 1.05, fillcolor="#d62728",
                          opacity=0.05, line_width=0, row=1, col=col)  # the over-budget region
            fig.add_hline(y=budget[q.budget_key], line_dash="dot", line_color=color, row=1, col=col,
                          annotation_text=f"{tag}{'floor' if q.sign > 0 else 'ceiling'} {budget[q.budget_key]:.4f}",
                          annotation_position=("top left", "bottom left")[i % 2])
    for col, x in ((1, lat.name), (2, "memory_mb")):
        fig.update_xaxes(title_text=x, type="log" if log_x[x] else "linear", row=1, col=col)
        fig.update_yaxes(title_text="validation accuracy" if q.name == "accuracy" else f"{q.name} ({q.unit})",
                         row=1, col=col)
    fig.update_layout(title=title, height=600, template="plotly_white")
    divs = [fig.to_html(include_plotlyjs=True, full_html=False, div_id="fronts")]  # inlined: works offline
    divs += [f.to_html(include_plotlyjs=False, full_html=False, div_id=name) for name, f in _extra_figures(runs)]
    return _write(path, title, divs, runs)


def _extra_figures(runs: list[tuple[str, dict]]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    q, lat, _ = for_budget(runs[0][1]["budget"])
    cube = go.Figure()
    for i, (name, info) in enumerate(runs):
        rows = info["rows"]
        cube.add_trace(go.Scatter3d(
            x=[r["metrics"][lat.name] for r in rows], y=[r["metrics"]["memory_mb"] for r in rows],
            z=[r["metrics"][q.name] for r in rows], mode="markers", name=name,
            marker={"size": 5, "color": RUN_COLORS[i % len(RUN_COLORS)]},
            hovertext=[_hover(name, r, info["budget"]) for r in rows], hoverinfo="text"))
    cube.update_layout(title="all three objectives", height=600, template="plotly_white",
                       scene={"xaxis_title": lat.name, "yaxis_title": "memory_mb", "zaxis_title": q.name})
    yield "objectives-3d", cube

    name, info = runs[0]
    rows = info["rows"]
    if rows:
        dims = [_axis(k, [r["params"].get(k) for r in rows]) for k in sorted({k for r in rows for k in r["params"]})]
        dims += [{"label": m, "values": [r["metrics"][m] for r in rows]}
                 for m in (lat.name, "memory_mb", q.name)]
        par = go.Figure(go.Parcoords(dimensions=dims, line={"color": [r["metrics"][q.name] for r in rows],
                                                            "colorscale": "Viridis", "showscale": True}))
        par.update_layout(title=f"knobs vs metrics ({name})", height=500)
        yield "parallel", par

    prog = make_subplots(rows=1, cols=3, subplot_titles=("hypervolume within the budget",
                                                         f"best {q.name} within every budget",
                                                         f"knob importance for {q.name} (PED-ANOVA)"))
    for i, (name, info) in enumerate(runs):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        hist = info["history"]
        prog.add_trace(go.Scatter(x=[h["trial"] for h in hist], y=[h["hypervolume"] for h in hist],
                                  mode="lines+markers", name=f"{name} hypervolume", line={"color": color}), 1, 1)
        prog.add_trace(go.Scatter(x=[h["trial"] for h in hist], y=[h["best_feasible_quality"] for h in hist],
                                  mode="lines+markers", name=f"{name} best feasible {q.name}",
                                  line={"color": color, "dash": "dot"}), 1, 2)
        imp = info["importances"]
        prog.add_trace(go.Bar(x=list(imp.values()), y=list(imp.keys()), orientation="h", name=f"{name} importance",
                              marker={"color": color}), 1, 3)
    prog.update_xaxes(title_text="trial", row=1, col=1)
    prog.update_xaxes(title_text="trial", row=1, col=2)
    prog.update_layout(height=450, template="plotly_white", title="the search over time")
    yield "progress", prog
    yield "budget-cost", _budget_cost_figure(runs)
    if slice_limits(runs[0][1]["budget"]):
        yield "slices", _slices_figure(runs[0])


def _slices_figure(run: tuple[str, dict]):
    """The quality of each front point (and the teacher, and the selected trial) on every slice, beside each slice's
    limit: the slice a candidate breaks on is visible, not only its average."""
    import plotly.graph_objects as go

    name, info = run
    budget, limits = info["budget"], slice_limits(info["budget"])
    q = limits[0].objective
    points = [("teacher (fp32)", info["teacher"])] if info["teacher"] else []
    points += [(f"trial {r['trial']}" + (" (selected)" if info["selected"] and r["trial"] == info["selected"]["trial"]
                                         else ""), r["metrics"])
               for r in sorted(info["groups"]["front"], key=lambda r: -q.sign * r["metrics"][q.name])]
    fig = go.Figure()
    for label, m in points:
        fig.add_trace(go.Bar(x=[x.slice for x in limits], y=[m.get(x.key) for x in limits], name=label))
    fig.add_trace(go.Scatter(x=[x.slice for x in limits], y=[x.limit for x in limits], mode="markers",
                             name=f"{'floor' if q.sign > 0 else 'ceiling'} per slice",
                             marker={"symbol": "line-ew-open", "size": 40, "color": "#d62728",
                                     "line": {"width": 3}}))
    fig.update_layout(title=f"{q.name} per slice: the Pareto front within budget ({name})", barmode="group",
                      height=450, template="plotly_white", yaxis_title=q.name)
    return fig


def _budget_cost_figure(runs: list[tuple[str, dict]]):
    """What each budget buys: per resource, the best quality within the other budgets as this one moves (a step
    line per run, from front_info's budget_cost), with the run's budget and quality limit."""
    from plotly.subplots import make_subplots

    q, resources = for_budget(runs[0][1]["budget"])[0], constraints(runs[0][1]["budget"])[1:]
    fig = make_subplots(rows=1, cols=len(resources),
                        subplot_titles=[f"best {q.name} by {o.name} budget" for o in resources])
    for col, o in enumerate(resources, start=1):
        drawn = [(i, name, info["budget_cost"][o.name], info["budget"]) for i, (name, info) in enumerate(runs)
                 if o.name in info["budget_cost"]]  # overlaid runs may not all budget an extra constraint
        # the last level runs on past the run's budget and the last step, so that it shows as a line
        ends = {i: max([budget[o.budget_key]] + [s["limit"] for s in steps]) * 1.2 for i, _, steps, budget in drawn}
        log_x = _log_axis([s["limit"] for _, _, steps, _ in drawn for s in steps]
                          + [budget[o.budget_key] for *_, budget in drawn] + list(ends.values()))
        for i, name, steps, budget in drawn:
            tag = f"{name}: " if len(runs) > 1 else ""
            _budget_cost_run(fig, col, o, q, i, tag, steps, budget, ends[i], log_x)
        fig.update_xaxes(title_text=f"{o.name} budget ({o.unit})", type="log" if log_x else "linear", row=1, col=col)
    fig.update_yaxes(title_text=f"best {q.name} within the other budgets", row=1, col=1)
    fig.update_layout(title=f"what each budget buys: the best {q.name} as one budget moves and the others stay",
                      height=450, template="plotly_white")
    return fig


def _budget_cost_run(fig, col: int, resource: Objective, quality: Objective, i: int, tag: str, steps: list[dict],
                     budget: dict, end_x: float, log_x: bool) -> None:
    """One run's step line (the best holds from each step's limit until the next, then on to end_x), its budget
    and its quality limit."""
    import plotly.graph_objects as go

    color, limit, q_limit = RUN_COLORS[i % len(RUN_COLORS)], budget[resource.budget_key], budget[quality.budget_key]
    if steps:
        hover = [f"{html.escape(tag)}trial {s['trial']}: {quality.name} {s['quality']:.4f}, needs "
                 f"{s['limit']:.2f} {resource.unit} of {resource.name}" for s in steps]
        fig.add_trace(go.Scatter(
            x=[s["limit"] for s in steps] + [end_x], y=[s["quality"] for s in steps] + [steps[-1]["quality"]],
            mode="lines+markers", line_shape="hv", name=f"{tag}best {quality.name}", legendgroup=f"{i}-cost",
            showlegend=col == 1, line={"color": color}, marker={"size": [8] * len(steps) + [0], "color": color},
            hovertext=hover + hover[-1:], hoverinfo="text"), row=1, col=col)
    else:
        fig.add_annotation(text=f"{html.escape(tag)}no candidate meets the other budgets", showarrow=False,
                           x=0.5, y=0.5 - 0.1 * i, xref=f"{_axis_id('x', col)} domain",
                           yref=f"{_axis_id('y', col)} domain")
    _vline(fig, limit, log_x, line_dash="dash", line_color=color, row=1, col=col,
           annotation_text=f"{tag}budget {limit:g}", annotation_position=("top right", "bottom right")[i % 2])
    fig.add_hline(y=q_limit, line_dash="dot", line_color=color, row=1, col=col,
                  annotation_text=f"{tag}{'floor' if quality.sign > 0 else 'ceiling'} {q_limit:.4f}",
                  annotation_position=("top left", "bottom left")[i % 2])


def _axis_id(letter: str, col: int) -> str:
    """A 1-row subplot grid's axis names: x, x2, x3..."""
    return letter if col == 1 else f"{letter}{col}"


def _plotted(runs: list[tuple[str, dict]], key: str) -> list[float]:
    """Every candidate's and teacher's value of one metric, over all runs."""
    values = [r["metrics"][key] for _, info in runs for g in info["groups"].values() for r in g]
    return values + [info["teacher"][key] for _, info in runs if info["teacher"]]


def _largest(runs: list[tuple[str, dict]], key: str) -> float:
    return max(_plotted(runs, key), default=0.0)


SORT_JS = """<script>
// click a header to sort the front table (numbers numerically)
document.querySelectorAll('#front-table th').forEach((th, col) => th.addEventListener('click', () => {
  const table = th.closest('table'), rows = Array.from(table.querySelectorAll('tr')).slice(1);
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = r => { const t = r.children[col].textContent; const n = parseFloat(t); return isNaN(n) ? t : n; };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (asc ? 1 : -1));
  rows.forEach(r => table.appendChild(r));
}));
</script>"""


def _write(path: Path, title: str, divs: list[str], runs: list[tuple[str, dict]]) -> Path:
    q, lat, _ = for_budget(runs[0][1]["budget"])
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{r['trial']}</td><td>{r['metrics'][q.name]:.4f}</td>"
        f"<td>{r['metrics'][lat.name]:.2f}</td><td>{r['metrics']['memory_mb']:.2f}</td>"
        f"<td>{html.escape(r.get('label', ''))}</td></tr>"
        for name, info in runs for r in sorted(info["groups"]["front"], key=lambda r: -q.sign * r["metrics"][q.name]))
    head = "p99 ms" if lat.name == "p99_latency_ms" else f"{lat.name}"
    table = ("<h3>Pareto front (within budget)</h3><table id='front-table' border=1 cellpadding=4 "
             f"style='border-collapse:collapse'><tr><th>run</th><th>trial</th><th>{q.name}</th><th>{head}</th>"
             f"<th>memory MB</th><th>recipe</th></tr>{rows}</table>")
    atomic_write_text(path, f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                            f"</head><body style='font-family:sans-serif'>{''.join(divs)}{table}{SORT_JS}</body></html>")
    return path
