"""Git: code snapshots in the store's own repository, diffs, checkouts, push and pull.

The user's repository is only ever read (with `--no-optional-locks`, so not even the
index stat cache is refreshed); every object we write goes to `<store>/git`.
"""
