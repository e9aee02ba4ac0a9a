"""Integrations with training frameworks, one module per framework.

Each module imports its framework only when it is imported itself, so this package costs
nothing: `from flowillower.integrations.lightning import FlowillowerLogger`,
`from flowillower.integrations.transformers import FlowillowerCallback`, ...
See docs/integrations/.
"""
