"""Evaluations of the paper (arXiv 2504.20456) on the public ``assd`` API: ``python evals/run_all.py``."""
