"""Queries over the store: DataFrames, the filter engine and raw SQL over the index."""
