"""Command line: `python -m search run --target jetson_orin.yaml` (and `--help` on every subcommand)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Before torch and the runtimes load: OpenMP threads that spin-wait made shared-machine runs 7x slower (BACKENDS.md)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# onnxruntime >= 1.29 keeps a telemetry store (~/.cache/Microsoft/DeveloperTools/.onnxruntime/) and uploads from
# it; this is its full opt-out (nothing is written outside results/), inherited by the probe processes
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

DEFAULT_TRIALS, DEFAULT_THREADS = 14, 2
RESULTS_DIR = Path(os.environ.get("SEARCH_RESULTS_DIR", Path(__file__).resolve().parent.parent / "results"))
# `datasets` caches what it reads; keep that inside results/ (nothing is written outside it)
os.environ.setdefault("HF_DATASETS_CACHE", str(RESULTS_DIR / "cache" / "datasets"))


def _quiet_libraries() -> None:
    """Library chatter (per-tensor INFO lines, load bars, experimental-API notes) would bury our progress."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _cmd_run(args) -> int:
    from .target import load_target
    from .tasks import TASKS_DIR

    from . import flows
    from . import storage as storages
    from .run_dir import read_json
    from .schema import check_run_id, resolve, slug

    join = getattr(args, "join", None)
    existing = args.resume or join
    flag = "--resume" if args.resume else "RUN"
    run_dir = RESULTS_DIR / check_run_id(existing, flag) if existing else None
    if run_dir is not None:
        saved = run_dir / "run.json"
        if not saved.is_file():
            print(f"error: {saved}: {flag}: no such run; give a directory name under {RESULTS_DIR}",
                  file=sys.stderr)
            return 2
        prev = read_json(saved, ("target", "space", "task", "seed"))
        for written in ("budget.json", "teacher.json"):  # read back later: damage is said now, not after the teacher
            read_json(run_dir / written, default=None)
        args.target, args.space, args.task = prev["target"], prev["space"], prev["task"]
        args.seed = prev["seed"]
        args.storage = prev.get("storage")
        args.strategy = prev.get("strategy", "search")
        args.device = args.device or prev.get("device")  # given again: this machine's choice
        # the same run goes on: its trial count and threads unless given again
        args.trials = args.trials if args.trials is not None else prev.get("trials", DEFAULT_TRIALS)
        args.threads = args.threads if args.threads is not None else prev.get("threads", DEFAULT_THREADS)
    args.trials = DEFAULT_TRIALS if args.trials is None else args.trials
    args.threads = DEFAULT_THREADS if args.threads is None else args.threads
    args.device = args.device or "auto"
    named_in = str(run_dir / "run.json") if existing else None  # where the URL came from, for the one line
    storages.check_url(args.storage, named_in)
    storages.check_reachable(args.storage, named_in)  # before any file is loaded and a run folder made
    # validate all three inputs before any heavy work (the space against the teacher's config, too)
    # the task's kind (no --task: the one that ships on the target's runtime), then the target read as that kind's
    target = load_target(args.target, kind=flows.of_task(args.task, TASKS_DIR), asked_by=f"--task {args.task}")
    kind = target.kind
    spec = flows.inputs(kind)
    args.task = args.task or (spec.BUILTIN_TASKS[0] if spec.BUILTIN_TASKS else None)  # run.json names it
    args.space = args.space or spec.DEFAULT_SPACE
    space = spec.load_space(args.space)
    task = spec.load_task(args.task)
    checked = spec.check(task, space, target)  # the data read and checked before a run folder is made

    import torch

    from . import accel

    torch.set_num_threads(args.threads)
    accel.configure(args.device)
    _quiet_libraries()
    from .study import RunSettings, run

    if run_dir is None:
        run_id = check_run_id(args.run_id) if args.run_id else f"{slug(target.name)}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = RESULTS_DIR / run_id
        if run_dir.exists():
            print(f"error: {run_dir}: --run-id: already exists; pick another or use --resume", file=sys.stderr)
            return 2
    from .run_dir import RunDir, atomic_write_json, claim_worker_id, removed_if_refused

    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not join:  # a joining worker leaves the run's inputs as its first process wrote them
        atomic_write_json(RunDir(run_dir).run_json, {
            "target": str(target.path.resolve()), "space": str(space.path.resolve()),
            "task": (args.task if args.task in spec.BUILTIN_TASKS else str(resolve(args.task, TASKS_DIR).resolve()))
                    if args.task else None, "seed": args.seed,
            "threads": args.threads, "device": args.device, "trials": args.trials,
            "storage": storages.redacted(args.storage),  # no password in a shared folder: PGPASSWORD
            "strategy": args.strategy,
            **({"replan_of": prev["replan_of"]} if existing and prev.get("replan_of") else {})})
    # each process on a run seeds its sampler apart (two `--resume`s at once must not propose in lockstep)
    worker_id = claim_worker_id(RunDir(run_dir))
    print(f"run {run_dir.name}: target {target.path}, space {space.path}, task {task.source}, "
          f"{args.trials} completed trials wanted, training on {accel.describe()} "
          f"(--device {args.device}; CPU work on {args.threads} thread(s), "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})", flush=True)
    say = lambda s: print(s, flush=True)  # noqa: E731
    with removed_if_refused(run_dir, created):  # a run refused before its first trial leaves no folder
        flow = flows.get(kind)
        prepared = flow.prepare(task, RESULTS_DIR / "cache", say, checked)
        settings = RunSettings(trials=args.trials, timeout_s=args.timeout_min * 60 if args.timeout_min else None,
                               seed=args.seed, threads=args.threads, storage=args.storage, worker_id=worker_id,
                               join=bool(join), strategy=args.strategy)
        if join:
            print(f"worker {worker_id} joins run {run_dir.name} ({storages.study_name(RunDir(run_dir), args.storage)} "
                  f"in {(args.storage or 'the run folder').split('@')[-1]})", flush=True)
        selected = run(flow, target, space, prepared, run_dir, settings, resume=args.resume is not None,
                       log=lambda s: print(s, flush=True))
    return 0 if selected["meets_budget"] else 3


def _cmd_worker(args) -> int:
    """Join a run as one more worker: same inputs (run.json), the run's shared study storage."""
    args.join, args.resume, args.run_id, args.timeout_min, args.trials = args.run, None, None, None, None
    return _cmd_run(args)


def _run_dir(name: str) -> Path:
    from .errors import ConfigError

    from .run_dir import RunDir

    for candidate in (Path(name), RESULTS_DIR / name):
        if RunDir(candidate).study_db.is_file() or RunDir(candidate).run_json.is_file():
            return candidate
    raise ConfigError(name, "RUN", f"no run here (no study.db); give a directory under {RESULTS_DIR} or a path")


def _cmd_select(args) -> int:
    from .outputs import finish, load_study
    from .run_dir import RunDir

    _quiet_libraries()
    run_dir = _run_dir(args.run)
    selected = finish(load_study(run_dir), RunDir(run_dir), policy=args.policy, log=lambda s: print(s, flush=True))
    return 0 if selected["meets_budget"] else 3


def _cmd_report(args) -> int:
    from .outputs import completed_rows, importances, load_study
    from .report import check_out, front_info, render
    from .run_dir import RunDir, read_json

    out = check_out(Path(args.out), args.force) if args.out else None  # before any run is read
    _quiet_libraries()
    runs = []
    for name in args.runs:
        run_dir = _run_dir(name)
        rd = RunDir(run_dir)
        saved = rd.saved()
        teacher = read_json(rd.teacher_json)
        trial = read_json(rd.selected_json, ("trial",), default={"trial": None})["trial"]
        study = load_study(run_dir)
        info = front_info(completed_rows(study, saved["budget"]), saved["budget"], teacher, trial,
                           importances(study, saved["budget"]))
        runs.append((f"{run_dir.name} ({saved['target']})", info))
    from .errors import ConfigError
    from .objectives import for_budget

    kinds = {tuple(o.budget_key for o in for_budget(info["budget"])) for _, info in runs}
    if len(kinds) > 1:  # one page plots one quality axis and one latency axis
        raise ConfigError(args.runs[1], "RUN", "these runs optimise different objectives ("
                          + " vs ".join(", ".join(k) for k in kinds) + "); overlay only runs of the same kind")
    default = _run_dir(args.runs[0]) / "dashboard.html" if len(args.runs) == 1 else RESULTS_DIR / "compare.html"
    out = out or default
    try:
        render(runs, out, " vs ".join(name for name, _ in runs))
    except OSError as exc:  # said of what the user gave, not of the temporary file beside it
        raise ConfigError(args.out or out, "--out", f"cannot write there ({exc.strerror or exc}); free space, fix "
                                                   "the folder's permissions or give another path") from None
    print(f"wrote {out}")
    return 0


def _cmd_replan(args) -> int:
    from types import SimpleNamespace

    from . import replan
    from .outputs import completed_rows, load_study
    from .schema import check_run_id
    from .target import load_target

    from . import flows
    from .run_dir import RunDir

    source = _run_dir(args.run)
    saved = RunDir(source).saved()  # the target is read as the run's kind reads it
    kind = flows.of_budget(saved.get("budget", {}), RunDir(source).budget_json).NAME
    target = load_target(args.target, kind=kind, asked_by=f"run {source.name}")
    out = (RESULTS_DIR / check_run_id(args.run_id, "--run-id") if args.run_id
           else replan.replan_dir(source, target, RESULTS_DIR))
    _quiet_libraries()
    say = lambda s: print(s, flush=True)  # noqa: E731
    selected, rd, seconds = replan.replan(source, target, out, args.policy, log=say)
    say(f"replanned in {seconds:.1f} s, nothing trained; {source.name} is unchanged")
    is_thin, why = replan.thin(completed_rows(load_study(rd.root), selected["budget"]), selected["budget"])
    say(why)
    if is_thin and args.trials:
        say(f"adding {args.trials} trial(s) to {rd.name}: the study's sampler knows every re-priced trial and the "
            "new budget as constraints, so it proposes near the new budget")
        done = len(completed_rows(load_study(rd.root), selected["budget"]))
        return _cmd_run(SimpleNamespace(resume=rd.name, join=None, trials=done + args.trials, threads=args.threads,
                                        device=args.device, run_id=None, timeout_min=None, target=None, space=None,
                                        task=None, seed=0, storage=None, strategy="search"))
    if is_thin:
        say(f"to add trials there: python -m search run --resume {rd.name} --trials N (or replan with --trials N)")
    return 0 if selected["meets_budget"] else 3


def _cmd_export(args) -> int:
    from .export import export

    out = export(_run_dir(args.run), Path(args.out), force=args.force)
    print(f"exported to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


def _cmd_bench(args) -> int:
    from .target import load_target

    if args.targets and args.what != "search":
        print(f"error: --targets: only `bench search` takes a target per task; `bench {args.what}` takes --target",
              file=sys.stderr)
        return 2
    if args.what == "search":  # one target for every task, or one per task; each checked before any run starts
        if args.target and args.targets:
            print("error: --target and --targets: give one of them (--targets: one per task)", file=sys.stderr)
            return 2
        targets = args.targets or [args.target or "jetson_orin"]
        n_tasks = len(args.tasks or ["default"])
        if len(targets) not in (1, n_tasks):
            print(f"error: --targets: got {len(targets)} for {n_tasks} task(s); give one for every task or one per "
                  "task, in the order of --tasks", file=sys.stderr)
            return 2
        targets = [str(load_target(t).path) for t in (targets * n_tasks if len(targets) == 1 else targets)]
    target = load_target(args.target or "local_cpu", calibrated=False)  # the assumed factors are the baseline
    _quiet_libraries()
    import torch

    torch.set_num_threads(1)
    out = RESULTS_DIR / "bench"
    if args.what == "latency":
        from .bench.latency import run

        run(target, args.candidates, out, seed=args.seed, log=lambda s: print(s, flush=True), refit=args.refit)
    elif args.what == "techniques":
        from .bench import techniques
        from .flows.text_classification.pipeline import make_context
        from .tasks import load_task
        from .tasks.teacher import prepare

        log = lambda s: print(s, flush=True)  # noqa: E731
        torch.set_num_threads(args.threads)  # training threads; latency is measured at the target's own
        prepared = prepare(load_task(args.task), RESULTS_DIR / "cache", log=log)
        if args.section == "training":  # the second rung's early stopping needs held-out training rows
            prepared = prepared.with_holdout()
        ctx = make_context(prepared, load_target(args.target or "local_cpu"), RESULTS_DIR / "cache", args.threads,
                           args.seed)
        contexts = None
        if args.section == "training":  # one context per distillation text, built once: sizes here, runs below
            contexts = {d: techniques.variant(ctx, d, log) for d in techniques.DATA}
            sizes = {d: len(c.prepared.kd_train) for d, c in contexts.items()}
            student = techniques.training_student(prepared.family.shape_of(prepared.teacher))
            settings, comparisons = techniques.training_settings(sizes, student=student)
        else:
            settings, comparisons = techniques.default_settings()
        task_name = None if prepared.task.path is None else prepared.task.name
        if args.rerender:
            techniques.rerender(out, settings, comparisons, prepared.val, args.threads, args.seed, log=log,
                                section=args.section, task=task_name)
            return 0
        if args.only:
            settings = [s for s in settings if any(o.lower() in s.name.lower() for o in args.only)
                        or s.candidate is None and s.quant.bits == 32]  # the teacher row anchors the ratios
        techniques.run(ctx, out, settings, comparisons, log=log, section=args.section, contexts=contexts)
    elif args.what == "published":
        from .bench import published

        published.run(out, log=lambda s: print(s, flush=True))
    elif args.what == "search":
        from .bench import search as bench_search

        tasks = [None if t == "default" else t for t in (args.tasks or ["default"])]
        bench_search.run(tasks, targets, args.seeds, args.minutes, args.threads, out, RESULTS_DIR, space=args.space,
                         strategies=tuple(args.strategies), log=lambda s: print(s, flush=True))
    elif args.what == "llm":
        from .flows.causal_lm import bench as llm

        torch.set_num_threads(args.threads)
        from .flows.causal_lm.inputs import load_task as load_lm_task

        llm.run(out, RESULTS_DIR / "cache", threads=args.threads, log=lambda s: print(s, flush=True),
                task=load_lm_task(args.task) if args.task else None)
    else:
        from .bench.stability import run

        run(target, out, log=lambda s: print(s, flush=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search", description=(
        "Budget-driven compression search: distill, prune and quantize a teacher until it fits a device. "
        "See README.md and docs/."))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a compression search against a target's budget", description=(
        "Sample recipes (distill -> prune -> quantize) with Optuna, measure each exported artifact on the runtime, "
        "and write results/<run>/ (study.db, trials.csv, pareto.csv, selected.json, dashboard.html, model/). "
        "Exit 0 when the selected model meets every budget, 3 when none did, 2 on bad input. See docs/tasks.md, "
        "docs/targets.md, docs/spaces.md and docs/search.md."))
    run.add_argument("--target", default="jetson_orin", help="target YAML path, or a name in targets/ "
                                                             "(default: jetson_orin)")
    run.add_argument("--space", default=None, help="search-space YAML path, or a name in spaces/ (default: "
                                                   "`default`; `llm` for a llama.cpp target)")
    run.add_argument("--task", default=None, help="task YAML (teacher dir + data file), or `smollm2` (the built-in "
                                                  "language-model task); default: built-in MiniLM-L6 on SMS spam, or "
                                                  "smollm2 for a llama.cpp target")
    run.add_argument("--trials", type=int, default=None, help=f"completed trials to reach (default {DEFAULT_TRIALS}; "
                                                              "--resume: the run's own)")
    run.add_argument("--timeout-min", type=float, default=None, help="stop starting trials after this long")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=int, default=None, help="torch/runtime threads for training and "
                                                            "evaluation (default 2)")
    run.add_argument("--storage", default=None, metavar="URL",
                     help="the study's storage, for several workers: postgresql://user@host:port/db (or "
                          "journal:/shared/file.log); default: SQLite in the run folder")
    run.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                     help="where training runs (teacher fine-tune, distillation, recovery, QAT): auto = cuda when "
                          "torch sees a GPU, else cpu (default auto); measurement is always the target's")
    run.add_argument("--run-id", default=None, help="name of the results directory (default: target-time)")
    run.add_argument("--resume", default=None, metavar="RUN", help="continue results/RUN with its saved inputs")
    from .strategies import STRATEGIES

    run.add_argument("--strategy", default="search", choices=STRATEGIES, help=argparse.SUPPRESS)  # bench search
    run.set_defaults(func=_cmd_run)

    wrk = sub.add_parser("worker", help="join a run as one more worker (shared storage and results folder)",
                         description="Work on RUN's study alongside its other workers: the same target, space and "
                                     "task (from RUN/run.json), its own sampler seed, exact trial count; the "
                                     "worker that ends last selects and exports. See docs/workers.md.")
    wrk.add_argument("run", metavar="RUN", help="run id under the shared results folder (SEARCH_RESULTS_DIR)")
    wrk.add_argument("--threads", type=int, default=None, help="training threads on this machine (default: the run's)")
    wrk.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="training device here")
    wrk.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    wrk.set_defaults(func=_cmd_worker, storage=None, strategy="search")

    from .pareto import POLICIES, THIN_FRONT

    sel = sub.add_parser("select", help="choose the deploy candidate of a finished run", description=(
        "Re-select from a run's completed trials and rewrite selected.json, dashboard.html and model/. "
        "Exit 0 when a candidate meets every budget, 3 when none does (the closest is named). See docs/outputs.md."))
    sel.add_argument("run", help="run directory name under results/, or a path")
    sel.add_argument("--policy", choices=POLICIES, default="accuracy",
                     help="accuracy: most accurate within every budget (default); latency: fastest; memory: "
                          "smallest; knee: the knee of the front")
    sel.set_defaults(func=_cmd_select)

    rep = sub.add_parser("report", help="write the dashboard of one or several runs (fronts overlaid)",
                         description="Self-contained HTML (plotly.js inlined): fronts, budgets, teacher, selection. "
                                     "See docs/outputs.md.")
    rep.add_argument("runs", nargs="+", metavar="RUN", help="run directory names under results/, or paths")
    rep.add_argument("--out", default=None, help="output HTML: a new file in an existing folder (default: "
                                                 "RUN/dashboard.html, or results/compare.html for several runs)")
    rep.add_argument("--force", action="store_true", help="replace the --out file if it exists")
    rep.set_defaults(func=_cmd_report)

    rpl = sub.add_parser("replan", help="answer another target or budget from a finished run, without training",
                         description="Re-price every completed trial of RUN for TARGET (estimated: from each "
                                     "trial's shape and recipe; measured: each stored artifact measured there), "
                                     "select with the same policy, bounds and reasons, and write it all to "
                                     "results/RUN.replan-<target>/ (a run folder: select, report, export and "
                                     "run --resume work on it). RUN is never modified. Exit 0 when a candidate meets "
                                     "every budget, 3 when none does. See docs/outputs.md.")
    rpl.add_argument("run", metavar="RUN", help="a finished run: directory name under results/, or a path")
    rpl.add_argument("--target", required=True, help="target YAML path, or a name in targets/")
    rpl.add_argument("--policy", choices=POLICIES, default="accuracy", help="as for select (default accuracy)")
    rpl.add_argument("--trials", type=int, default=None, help="when the front within the new budget is thin (fewer "
                                                          f"than {THIN_FRONT} candidates), run this many new trials there "
                                                          "(default: none)")
    rpl.add_argument("--run-id", default=None, help="name of the replan's folder (default: RUN.replan-<target>)")
    rpl.add_argument("--threads", type=int, default=None, help="training threads for --trials (default: the run's)")
    rpl.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"), help="training device for --trials")
    rpl.set_defaults(func=_cmd_replan)

    exp = sub.add_parser("export", help="copy the selected model, its tokenizer and a deploy card to a folder",
                         description="Writes the exact artifact measured, tokenizer files, "
                                     "recipe.json and DEPLOY.md (budget, margins, recipe, checksums, usage). "
                                     "See docs/outputs.md.")
    exp.add_argument("run", help="run directory name under results/, or a path")
    exp.add_argument("--out", required=True, help="destination folder: new or empty")
    exp.add_argument("--force", action="store_true", help="write into a non-empty folder, replacing only the "
                                                          "files export writes (the user's other files stay)")
    exp.set_defaults(func=_cmd_export)

    ben = sub.add_parser("bench", help="benchmarks that write results/bench/", description=(
        "latency: measure N varied artifacts on the target (here or through its runner), report the roofline's "
        "error out-of-sample by 8-fold cross-validation (results/bench/latency.csv/.md; factors saved as "
        "targets/<target>.calibration.json). stability: re-measure one artifact while another process "
        "loads the machine (results/bench/stability.csv/.md). techniques: every compression technique on the "
        "default task beside its alternative, measured (results/bench/techniques.csv/.md). llm: the built-in LM "
        "teacher, every stock llama.cpp preset of it (with and without importance matrix) and the search's "
        "per-tensor-class mixes, measured in llama.cpp (results/bench/llm.csv/.md/.html). published: the spec-only LM "
        "decode estimate against published llama.cpp tokens/s figures (results/bench/published.csv/.md). search: this "
        "project's search strategy against random sampling and NSGA-II at equal wall-clock per run, on --tasks with "
        "--seeds, against --target (default jetson_orin) (results/bench/search.csv/.md/.html). See "
        "docs/benchmarks.md."))
    ben.add_argument("what", choices=("latency", "stability", "techniques", "llm", "published", "search"))
    ben.add_argument("--target", default=None, help="a measured target with a spec (default local_cpu); search: the "
                                                    "runs' target for every task (default jetson_orin)")
    ben.add_argument("--candidates", type=int, default=48, help="artifacts to measure (latency; default 48)")
    ben.add_argument("--seed", type=int, default=0, help="latency: artifact shapes; techniques: training seed "
                                                             "(seed N != 0 writes techniques-seedN.csv/.md beside)")
    ben.add_argument("--refit", action="store_true", help="latency: re-fit from results/bench/latency.csv's "
                                                          "measurements instead of measuring again")
    ben.add_argument("--task", default=None, help="techniques: a task name or YAML (default: the built-in task); "
                                                  "llm: an LM task (default smollm2; smollm2_languages adds a table "
                                                  "per language and a calibration-mix comparison)")
    ben.add_argument("--section", choices=("compression", "training"), default="compression",
                     help="techniques: compression (each technique beside its alternative) or training (ways to "
                          "train one student better at equal steps; for a harder task, e.g. --task "
                          "rotten_tomatoes); writes techniques[-training][-TASK][-seedN].csv/.md")
    ben.add_argument("--threads", type=int, default=2, help="techniques: training threads; llm: llama.cpp threads "
                                                            "(default 2)")
    ben.add_argument("--rerender", action="store_true", help="techniques: judge and write techniques.md again "
                                                             "from techniques.csv, without measuring")
    ben.add_argument("--only", nargs="+", default=None, metavar="TEXT",
                     help="techniques: run only the settings whose name contains one of these")
    ben.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                     help="search: `default` (the built-in task) and/or task YAML paths (default: default)")
    ben.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="search: seeds per strategy (0 1 2)")
    ben.add_argument("--space", default=None, help="search: the runs' space (default: default)")
    ben.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES, metavar="STRATEGY",
                     help=f"search: the strategies compared ({' '.join(STRATEGIES)}; the criterion needs "
                          f"{STRATEGIES[0]} and random)")
    ben.add_argument("--minutes", type=float, default=20.0, help="search: wall-clock budget of every run (20)")
    ben.add_argument("--targets", nargs="+", default=None, metavar="TARGET",
                     help="search: the runs' target, one for every task or one per task (default: jetson_orin)")
    ben.set_defaults(func=_cmd_bench)
    return parser


def main(argv=None) -> int:
    from .errors import CandidateError, ConfigError, RunStopped

    args = build_parser().parse_args(argv)
    for flag in ("trials", "threads", "candidates"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            print(f"error: --{flag}: got {value}; must be >= 1", file=sys.stderr)
            return 2
    timeout = getattr(args, "timeout_min", None)
    if timeout is not None and not (timeout > 0 and timeout != float("inf")):
        print(f"error: --timeout-min: got {timeout}; must be a finite number of minutes > 0", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunStopped as exc:
        print(f"error: the run stopped: {exc}", file=sys.stderr)
        return 4
    except CandidateError as exc:  # outside a trial (the teacher's artifact, a re-measurement): nothing to ship
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 4
    except OSError as exc:  # a write outside any trial (tables, selection, dashboard) failed: say which
        print(f"error: {getattr(exc, 'filename', '') or '-'}: {exc.strerror or exc}; free space or fix "
              "permissions, then run again (completed trials are kept in the study storage)", file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print("interrupted: completed trials are in study.db; continue with --resume RUN", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
