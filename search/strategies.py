"""The search strategies a run can use, named once (the study builds them; `bench search` compares them).

- search: this project's: a warm start screened within the budget, TPE with the budget as constraints (screened-out
  recipes carry their predicted misses), the shape screen before training, and reuse of identical recipes;
- random / nsga2: the baselines, Optuna's random or NSGA-II sampler with no warm start, no screen and no reuse:
  every recipe asked for is trained and measured."""
STRATEGIES = ("search", "random", "nsga2")
OURS = STRATEGIES[0]
STARTUP_TRIALS = 8  # TPE's random start-up (a flow's warm start may fill it with screened recipes)
