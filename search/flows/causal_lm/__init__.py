"""A causal language model shipped as a GGUF for llama.cpp: flow.py (the Flow), pipeline.py (screen, cut, recover,
quantize, measure), recipe.py, space.py, student.py (the cuts and recovery), reprice.py (replan), target.py (the
workload and budget a target gives it)."""
