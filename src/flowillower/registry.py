"""The model registry: named models whose versions are runs, and aliases pointing at them.

Entries are files in the store, one new file per registration or alias change:
`<store>/registry/<model>/<stamp>-<hex>.json`. Nothing is ever rewritten, so two processes
registering at once never lose each other's entry. Versions and aliases are derived when
the folder is read:

* versions are the distinct runs in the order they were first registered (`v1`, `v2`, ...);
* an alias points at the run of the newest entry that set it.

The registry is this store's own: `push` sends run folders only, so registrations stay on
the machine that made them (a teammate registers the pulled run in their own store).
Model and alias names are plain names (letters, digits, `_ . -`), never paths; the registry
folder and its entries are never followed through symbolic links; a run an entry names is
reached only through the store boundary (`Store.run_dir`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FlowillowerError
from .store.catalog import Store
from .store.resolve import check_ref

__all__ = ["RegistryError", "ModelEntry", "register", "set_alias", "models", "model",
           "resolve", "run_id_of", "REGISTRY_DIRNAME", "PREFIX"]

REGISTRY_DIRNAME = "registry"
PREFIX = "registry:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VERSION = re.compile(r"^v([1-9][0-9]{0,8})$")
_ENTRY = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}-[0-9a-f]{6}\.json$")
_MAX_ENTRY = 4096  # bytes: an entry is a few fields; anything larger is not ours


class RegistryError(FlowillowerError):
    """A registry name, alias or version that is not valid or does not exist."""


@dataclass
class ModelEntry:
    """One registered model: its versions (run ids, oldest first) and aliases."""

    name: str
    versions: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> run id
    registered: dict[str, float] = field(default_factory=dict)  # run id -> first time

    def version_of(self, run_id: str) -> int | None:
        """`N` of `vN` for `run_id`, None when that run is not a version."""
        return self.versions.index(run_id) + 1 if run_id in self.versions else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: versions with their numbers, times and aliases."""
        by_run: dict[str, list[str]] = {}
        for alias, run_id in sorted(self.aliases.items()):
            by_run.setdefault(run_id, []).append(alias)
        return {"name": self.name, "aliases": dict(sorted(self.aliases.items())),
                "versions": [{"version": f"v{i}", "run": run_id,
                              "registered": self.registered.get(run_id),
                              "aliases": by_run.get(run_id, [])}
                             for i, run_id in enumerate(self.versions, 1)]}


def check_name(name: object, what: str = "model name") -> str:
    """`name` when it is a plain registry name, else RegistryError saying why."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise RegistryError(f"{str(name)[:60]!r} is not a valid {what}: use letters, digits, "
                            "'_', '.' and '-' (starting with a letter or digit, no '..')")
    return name


def _registry_root(store: Store) -> Path:
    return store.root / REGISTRY_DIRNAME


def _is_dir_not_link(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _model_dir(store: Store, name: str, create: bool = False) -> Path | None:
    """`<store>/registry/<name>`, never through a link; None when absent."""
    root = _registry_root(store)
    folder = root / check_name(name)
    if create:
        for path in (root, folder):
            if os.path.islink(path):
                raise RegistryError(f"{path} is a symbolic link; the registry never follows "
                                    "links (remove it yourself)")
            path.mkdir(exist_ok=True)
    if not (_is_dir_not_link(root) and _is_dir_not_link(folder)):
        return None
    return folder


def run_id_of(run: Any) -> str:
    """The run reference in `run`: an id / name string, a row dict, a Run or a RunRow."""
    if isinstance(run, str):
        return run
    if isinstance(run, dict) and isinstance(run.get("id"), str):
        return run["id"]
    ident = getattr(run, "id", None)
    if isinstance(ident, str):
        return ident
    raise RegistryError(f"cannot tell which run {type(run).__name__} is: pass a run id, a "
                        "row of fw.runs()/fw.best() or a Run")


def _write_entry(folder: Path, entry: dict[str, Any]) -> None:
    micros = time.time_ns() // 1000
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(micros // 1_000_000))
    path = folder / f"{stamp}.{micros % 1_000_000:06d}-{secrets.token_hex(3)}.json"
    tmp = folder / f".{path.name}.tmp"
    try:  # whole file or nothing: a full disk leaves the registry as it was
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(entry, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_entries(folder: Path) -> list[dict[str, Any]]:
    """The folder's valid entries in name (time) order; anything else is skipped."""
    entries = []
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if not _ENTRY.match(name):
            continue
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_ENTRY:
                continue
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # half written or damaged: that entry alone is ignored
        if not isinstance(doc, dict) or not isinstance(doc.get("run"), str):
            continue
        try:
            check_ref(doc["run"])
            if doc.get("alias") is not None:
                check_name(doc["alias"], "alias")
        except (FlowillowerError, ValueError):
            continue
        entries.append(doc)
    return entries


def _build(name: str, entries: list[dict[str, Any]]) -> ModelEntry:
    entry = ModelEntry(name)
    for doc in entries:
        run_id = doc["run"]
        if doc.get("version", True) and run_id not in entry.versions:
            entry.versions.append(run_id)
            when = doc.get("time")
            entry.registered[run_id] = when if isinstance(when, (int, float)) else None
        if doc.get("alias"):
            entry.aliases[doc["alias"]] = run_id
    return entry


def model(name: str, dir: str | os.PathLike[str] | None = None) -> ModelEntry:
    """The registered model `name` (RegistryError when nothing is registered under it)."""
    store = Store(dir)
    folder = _model_dir(store, name)
    found = _build(name, _read_entries(folder)) if folder is not None else None
    if found is None or not found.versions:
        raise RegistryError(f"no model registered as {name!r}; `flowillower registry list` "
                            "lists them")
    return found


def models(dir: str | os.PathLike[str] | None = None) -> list[ModelEntry]:
    """Every registered model of the store, by name."""
    store = Store(dir)
    root = _registry_root(store)
    if not _is_dir_not_link(root):
        return []
    found = []
    for name in sorted(os.listdir(root)):
        if not _NAME.match(name) or ".." in name:
            continue
        folder = _model_dir(store, name)
        entry = _build(name, _read_entries(folder)) if folder is not None else None
        if entry is not None and entry.versions:
            found.append(entry)
    return found


def register(run: Any, name: str, alias: str | None = None,
             dir: str | os.PathLike[str] | None = None) -> str:
    """Register `run` as a version of model `name` (optionally pointing `alias` at it);
    returns its version, e.g. `"v3"`. Registering a run again keeps its version number and
    only moves the alias."""
    check_name(name)
    if alias is not None:
        _check_alias(alias)
    store = Store(dir, must_exist=True)
    run_id = store.resolve(run_id_of(run))  # the store boundary: a real run, never a path
    folder = _model_dir(store, name, create=True)
    assert folder is not None
    _write_entry(folder, {"run": run_id, "alias": alias, "time": time.time()})
    return f"v{_build(name, _read_entries(folder)).version_of(run_id)}"


def _check_alias(alias: str) -> str:
    check_name(alias, "alias")
    if _VERSION.match(alias) or alias == "latest":
        raise RegistryError(f"{alias!r} is reserved (versions are vN, 'latest' is the newest "
                            "version); choose another alias")
    return alias


def set_alias(name: str, alias: str, version: str,
              dir: str | os.PathLike[str] | None = None) -> str:
    """Point `alias` of model `name` at `version` (`vN`, an alias or a registered run's
    id); returns the run id it now points at."""
    _check_alias(alias)
    run_id = resolve(name, version, dir=dir)
    store = Store(dir, must_exist=True)
    folder = _model_dir(store, name, create=True)
    assert folder is not None
    _write_entry(folder, {"run": run_id, "alias": alias, "version": False,
                          "time": time.time()})
    return run_id


def resolve(name: str, version: str | None = None,
            dir: str | os.PathLike[str] | None = None) -> str:
    """Run id of model `name` at `version`: `vN`, an alias, `latest` / None (the newest
    version) or the id of a run registered under it."""
    entry = model(name, dir)
    if version in (None, "", "latest"):
        return entry.versions[-1]
    assert version is not None
    match = _VERSION.match(version)
    if match:
        number = int(match.group(1))
        if number > len(entry.versions):
            raise RegistryError(f"{name} has {len(entry.versions)} version(s); no {version}")
        return entry.versions[number - 1]
    if version in entry.aliases:
        return entry.aliases[version]
    if version in entry.versions:
        return version
    raise RegistryError(f"{name} has no alias or version {version!r}; aliases: "
                        f"{', '.join(sorted(entry.aliases)) or 'none'}")


def parse_reference(text: str) -> tuple[str, str | None]:
    """(model, version or alias) of `registry:NAME[@ALIAS|@vN]`."""
    body = text[len(PREFIX):] if text.startswith(PREFIX) else text
    name, _, version = body.partition("@")
    check_name(name)
    return name, version or None
