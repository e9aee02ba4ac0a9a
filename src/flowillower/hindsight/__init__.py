"""Hindsight logging: checkpoints while training, replays of past runs afterwards.

`checkpoint` records state around the outer loop, `transplant` carries new log
statements into old code, `planner` decides what to re-execute, `executor` runs worker
processes, `session` is the worker side, and `replay` ties them together.
"""
