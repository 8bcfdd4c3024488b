"""A causal language model shipped as a GGUF for llama.cpp: inputs.py (its targets, task and space files, checked
before anything loads), flow.py (the Flow), task.py (the task, prepared and cached), pipeline.py (screen, cut,
recover, quantize, measure), recipe.py, space.py, student.py (the cuts and recovery), reprice.py (replan),
bench.py (`bench llm`)."""
