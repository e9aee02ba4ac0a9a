"""`python -m flowillower` runs the CLI."""

from flowillower.cli import main

main()
