"""The search learns the budget: start-up recipes are screened before they are asked for, screened-out recipes
tell the sampler by how much they missed, and recipes that build the same model are one recipe."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna

from conftest import TINY_DISTILL, write_tiny_task
from search.flows.text_classification import pipeline
from search.candidate import Candidate, DistillParams, PruneParams, QuantParams

ROOT = Path(__file__).resolve().parent.parent
SPACE = TINY_DISTILL + """  alpha: 0.5
  epochs: 1
prune:
  type: [none]
  ratio: 0.0
  recovery_steps: 0
quant:
  bits: [32, 8]
  group_size: [32]
  activations: [dynamic_int8]
"""
# students of this teacher are predicted at about 0.05-0.3 MB: a 0.06 MB budget screens out most of the space
TARGET = """name: tiny_tight
device:
  latency: estimated
  memory_mb: 4096
  memory_bandwidth_gbps: 8
  peak_tops: {fp32: 0.2, int8: 0.8}
workload: {batch_size: 1, sequence_length: 16}
budget:
  memory_mb: 0.06
  p99_latency_ms: 50
  accuracy_floor: {max_drop: 0.5}
"""


def _cand(layers: int, fraction: float) -> Candidate:
    return Candidate(DistillParams(layers=layers, hidden=64, heads=2, ffn=128), PruneParams(),
                     QuantParams(bits=4, group_size=32, high_precision_fraction=fraction))


def test_recipes_that_build_the_same_model_resolve_to_one():
    ctx = SimpleNamespace()
    # 0.25 of 2 layers keeps round(0.5) = 0 layers at 8 bits: the same model as no high-precision layers
    assert pipeline.resolve(ctx, _cand(2, 0.25)) == pipeline.resolve(ctx, _cand(2, 0.0))
    assert pipeline.resolve(ctx, _cand(2, 0.5)).quant.high_precision_fraction == 0.5
    assert pipeline.resolve(ctx, _cand(3, 0.25)) == pipeline.resolve(ctx, _cand(3, 1 / 3))  # 1 of 3 layers
    assert pipeline.resolve(ctx, _cand(4, 0.25)) != pipeline.resolve(ctx, _cand(4, 0.5))


def test_predicted_violations_name_the_budgets_a_screened_recipe_misses():
    from search.screening import predicted_violations

    budget = {"memory_mb": 16, "p99_latency_ms": 1.0, "quality": "accuracy", "accuracy_floor": 0.9}
    got = predicted_violations({"predicted_memory_mb": 18.1, "predicted_p99_latency_ms": 2.9,
                                "predicted_p99_latency_ms_upper": 4.35}, budget)
    assert got == {"memory_mb": 18.1 - 16, "p99_latency_ms": 4.35 - 1.0}  # at its bound: what shipping needs
    assert list(got) == ["memory_mb", "p99_latency_ms"]
    assert predicted_violations({"predicted_memory_mb": 10}, budget) == {"memory_mb": -6}  # measured latency
    lm = {"memory_mb": 16, "tpot_p99_ms": 50, "latency": "tpot_p99_ms", "quality": "kld_mean", "kld_ceiling": 0.1}
    got = predicted_violations({"predicted_memory_mb": 20, "predicted_tpot_p99_ms": 40, "predicted_ttft_ms": 900}, lm)
    assert got == {"memory_mb": 4, "tpot_p99_ms": -10}  # no time-to-first-token budget: not a constraint
    got = predicted_violations({"predicted_memory_mb": 20, "predicted_tpot_p99_ms": 40, "predicted_ttft_ms": 900},
                               {**lm, "ttft_ms": 1000})
    assert got == {"memory_mb": 4, "tpot_p99_ms": -10, "ttft_ms": -100}


def test_start_up_trials_are_drawn_from_the_feasible_region_only(tmp_path):
    task = write_tiny_task(tmp_path / "task")
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "target.yaml").write_text(TARGET)
    env = {**os.environ, "SEARCH_RESULTS_DIR": str(tmp_path / "results")}
    proc = subprocess.run([sys.executable, "-m", "search", "run", "--target", str(tmp_path / "target.yaml"),
                           "--space", str(tmp_path / "space.yaml"), "--task", str(task), "--trials", "3",
                           "--threads", "1", "--run-id", "r"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)
    assert proc.returncode in (0, 3), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "warm start: 3 recipe(s) first, each screened within the budget" in proc.stdout
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 'results' / 'r' / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    # one ask per completed trial: nothing was proposed that the screen had to throw away
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert all(t.user_attrs["warm_start"] for t in trials)
    assert all(t.user_attrs["predicted_memory_mb"] <= 0.06 for t in trials)
    assert len({str(t.user_attrs["recipe"]) for t in trials}) == 3  # three different models

    # the study's own random start-up (same sampler, same seed) would have asked for other recipes first: the
    # warm start skipped those the screen rejects
    from search import families
    from search.space import load_space

    space, limits = load_space(str(tmp_path / "space.yaml")), families.get("bert_cls").limits_from_config(
        task.parent / "teacher")
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), directions=["maximize"])
    draws = []
    for _ in range(3):
        t = scratch.ask()
        space.suggest(t, limits)
        scratch.tell(t, 0.0)
        draws.append(t.params)
    assert draws != [t.params for t in trials]


def test_warm_start_puts_the_largest_admitted_student_first(tmp_path):
    from search.space import load_space
    from search.target import load_target
    from search.tasks import load_task
    from search.tasks.teacher import prepare

    task = write_tiny_task(tmp_path / "task")
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "target.yaml").write_text(TARGET)
    prepared = prepare(load_task(str(task)), tmp_path / "cache", log=lambda *_: None)
    space = load_space(str(tmp_path / "space.yaml"))
    ctx = pipeline.prepare_run(prepared, load_target(str(tmp_path / "target.yaml")), space, tmp_path / "cache", 1, 0,
                               log=lambda *_: None)
    marks = pipeline.warm_start(ctx, 3)
    starts = [s.params for s in marks]
    # every distinct admitted recipe of the same draws, by hand
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), directions=["maximize"])
    admitted = {}
    for _ in range(pipeline.STARTUP_DRAWS):
        t = scratch.ask()
        cand = pipeline.resolve(ctx, space.suggest(t, ctx.limits))
        scratch.tell(t, 0.0)
        if not pipeline.screen(ctx, cand)[1]:
            admitted.setdefault(cand, dict(t.params))
    sizes = {c: pipeline.student_size(ctx, c) for c in admitted}
    largest = max(sizes.values())
    first = next(c for c, params in admitted.items() if params == starts[0])
    assert sizes[first] == largest and len(starts) == 3 and len(admitted) > 3
    in_draw_order = [p for p in admitted.values() if p != starts[0]]
    assert starts[1:] == in_draw_order[:2]  # then the first admitted random draws, in order
    # marked for the study: rungs.py promotes the largest admitted student
    assert [s.attrs["largest_admitted"] for s in marks] == [True, False, False]


def test_a_recipe_stored_before_a_knob_existed_is_the_same_recipe_today():
    """`run --resume` after an upgrade: a stored recipe lacks the knobs added since (they meant "off"), and today's
    recipe carries them at their defaults; both build one model, so the earlier trial's measurements stand."""
    import json
    from dataclasses import asdict

    from search.flows.text_classification.pipeline import as_built as _as_built

    today = json.loads(json.dumps(asdict(Candidate(DistillParams(2, 64, 2, 128), PruneParams(), QuantParams(4, 32)))))
    stored = json.loads(json.dumps(today))
    for key in ("precision", "layer_options", "qat_steps"):
        del stored["quant"][key]
    assert _as_built(stored) == _as_built(today)
    solver = json.loads(json.dumps(today))
    solver["quant"]["precision"] = "solver"
    assert _as_built(solver) != _as_built(stored)


def test_a_solver_allocation_carried_over_by_a_replan_is_not_reused_for_the_new_budget():
    """A replanned run resumed: its carried-over trials were allocated for the source's target and budget, so the
    solver recipe is built again (allocated for the new one); a uniform recipe builds the same model anywhere."""
    import json
    from dataclasses import asdict

    from search import flows
    from search.study import _completed_with_recipe

    FLOW = flows.get("classification")

    def recipe(precision):
        q = QuantParams(4, 32, precision=precision)
        return json.loads(json.dumps(asdict(Candidate(DistillParams(2, 64, 2, 128), PruneParams(), q))))

    study = optuna.create_study(directions=["maximize"])
    for precision, attrs in (("solver", {"replan_of_trial": 3}), ("uniform", {"replan_of_trial": 4})):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.9],
                                                  user_attrs={"recipe": recipe(precision), **attrs}))
    assert _completed_with_recipe(study, recipe("solver"), number=5, flow=FLOW) is None
    assert _completed_with_recipe(study, recipe("uniform"), number=5, flow=FLOW).number == 1
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.9],
                                              user_attrs={"recipe": recipe("solver")}))  # solved in this run
    assert _completed_with_recipe(study, recipe("solver"), number=5, flow=FLOW).number == 2
