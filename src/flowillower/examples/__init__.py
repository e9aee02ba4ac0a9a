"""Example workloads shipped with flowillower: real training jobs that show every feature.

`flow_matching` is the showcase: `flowillower demo ...` (see docs/demo.md).
"""
