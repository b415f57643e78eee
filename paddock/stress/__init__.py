"""Stress tests for a deployed model: load profiles, vLLM-comparable metrics, an SLO gate.

Import from the submodules (`paddock.stress.runner.run_stress` is the one-call entry).
"""
