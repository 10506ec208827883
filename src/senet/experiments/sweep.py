"""Sweeps: a base training config, a list of variants ("cells") and seeds, run resumably.

A sweep file (YAML) reproduces the structure of one of the paper's ablation tables (10-16) on any
dataset; ``senet compare`` builds the same structure from model names. Each (cell, seed) run
lives in ``OUT/<cell>/seed<k>/`` and is finished when its ``result.json`` exists, so rerunning a
half-finished sweep only runs what is missing.

Sweep file::

    name: Table 11 - squeeze operator
    table: Table 11
    recipe: bundled                 # base recipe: a shipped name or a YAML path
    config: {model: {name: se_resnet20}, epochs: 15}   # merged over the recipe
    seeds: [0, 1, 2]
    paper_setting: ImageNet, SE-ResNet-50, §6 ablation schedule
    description: "{model} on {dataset}: average vs max pooling"   # filled from the runs
    cells:
      - label: Max
        config: {model: {overrides: {se_squeeze: max}}}
        paper: {top1: 22.57, top5: 6.09}
      - label: Avg
        config: {model: {overrides: {se_squeeze: avg}}}
        paper: {top1: 22.28, top5: 6.03}
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..cost.counting import complexity
from ..errors import MissingPathError, UserInputError
from ..train.config import TrainConfig, config_from_dict, config_to_dict
from ..train.fit import fit
from ..train.overrides import apply_overrides
from ..train.recipes import load_recipe
from ..weights.checkpoint import atomic_write_bytes, checkpoint_paths

__all__ = ["Cell", "Sweep", "RunRecord", "load_sweep", "sweep_from_dict", "cell_config", "run_sweep", "slug",
           "train_run"]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One variant: a label, the config mapping merged over the sweep's base, the paper's figures."""

    label: str
    config: Mapping[str, Any]
    paper: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    base: Mapping[str, Any]  # recipe mapping with the sweep's config merged in
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...] = (0,)
    table: str = ""
    paper_setting: str = ""
    description: str = ""


@dataclasses.dataclass
class RunRecord:
    """What a sweep keeps of one finished run (``result.json``)."""

    cell: str
    seed: int
    final: dict[str, float]  # metrics of the last epoch (val_top1_err, val_top5_err, val_loss, ...)
    best: dict[str, float]  # best val_top1_err / val_top5_err over epochs
    history: list[dict[str, Any]]
    train_seconds: float
    images_per_s: float
    run_dir: str
    params: int = 0  # exact costs of the network that was trained
    macs: int = 0
    paper_flops: int = 0
    dataset: str = ""
    model: str = ""  # the registered model name that was trained


RunFn = Callable[[TrainConfig, Path], RunRecord]


def slug(text: str) -> str:
    """A file-system-safe, readable name for a cell label (``"r = 2"`` -> ``"r_2"``)."""
    s = re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")
    return s or "cell"


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of nested mappings (``over`` wins); lists and scalars are replaced."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _require(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise UserInputError(f"{where}: missing required key {key!r}")
    if not isinstance(data[key], kind):
        raise UserInputError(f"{where}: {key!r} must be a {kind.__name__}, got {data[key]!r}")
    return data[key]


def sweep_from_dict(data: Mapping[str, Any], where: str = "sweep") -> Sweep:
    """Validate a parsed sweep mapping; every cell's config is checked by building it now."""
    allowed = {"name", "table", "recipe", "config", "seeds", "paper_setting", "description", "cells"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserInputError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    name = _require(data, "name", str, where)
    raw_cells = _require(data, "cells", list, where)
    if not raw_cells:
        raise UserInputError(f"{where}: 'cells' is empty")
    base = merge(load_recipe(data.get("recipe", "bundled")), data.get("config") or {})
    seeds = data.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise UserInputError(f"{where}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    cells = []
    for i, c in enumerate(raw_cells):
        cw = f"{where}: cells[{i}]"
        if not isinstance(c, Mapping):
            raise UserInputError(f"{cw} must be a mapping with 'label' and 'config'")
        extra = sorted(set(c) - {"label", "config", "paper"})
        if extra:
            raise UserInputError(f"{cw}: unknown key(s) {extra}; allowed: ['config', 'label', 'paper']")
        cell = Cell(_require(c, "label", str, cw), dict(c.get("config") or {}), dict(c.get("paper") or {}))
        config_from_dict(merge(base, cell.config))  # fails now, naming the key, if the cell is wrong
        cells.append(cell)
    labels = [slug(c.label) for c in cells]
    dupes = sorted({s for s in labels if labels.count(s) > 1})
    if dupes:
        raise UserInputError(f"{where}: cell labels must be distinct, {dupes} repeat")
    return Sweep(name, base, tuple(cells), tuple(seeds), data.get("table", ""), data.get("paper_setting", ""),
                 data.get("description", ""))


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep YAML file (a path, or the name of a sweep shipped in ``senet/sweeps``)."""
    import yaml
    from importlib import resources

    p = Path(path)
    if not p.is_file():
        shipped = resources.files("senet") / "sweeps" / f"{path}.yaml"
        if not shipped.is_file():
            raise MissingPathError(f"no sweep file {str(path)!r} (and no shipped sweep of that name)")
        text = shipped.read_text()
    else:
        text = p.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserInputError(f"sweep {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, Mapping):
        raise UserInputError(f"sweep {str(path)!r} must be a mapping")
    return sweep_from_dict(data, where=f"sweep {str(path)!r}")


def cell_config(sweep: Sweep, cell: Cell, seed: int, overrides: Sequence[str] = ()) -> TrainConfig:
    """The full training config of one run; ``overrides`` (``key=value``, as ``senet train --set``)
    apply to every cell, after the cell's own config."""
    cfg = config_from_dict(merge(merge(sweep.base, cell.config), {"seed": seed}))
    return apply_overrides(cfg, overrides)


def run_dir(out: Path, cell: Cell, seed: int) -> Path:
    return out / slug(cell.label) / f"seed{seed}"


def read_record(path: Path) -> RunRecord | None:
    """The finished run's record, or None if the run has not finished."""
    f = path / "result.json"
    if not f.is_file():
        return None
    return RunRecord(**json.loads(f.read_text()))


def write_record(path: Path, record: RunRecord) -> None:
    atomic_write_bytes(path / "result.json", json.dumps(dataclasses.asdict(record), indent=1).encode())


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_same_config(path: Path, cfg: TrainConfig) -> None:
    """Refuse to keep or resume a run that was started with another config: its results would be
    silently mixed into a table about this one."""
    import yaml

    saved_file = path / "config.yaml"
    if not saved_file.is_file():
        return
    saved, now = _flatten(yaml.safe_load(saved_file.read_text()) or {}), _flatten(config_to_dict(cfg))
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        raise UserInputError(f"{path} holds a run made with another config (differs in {', '.join(diff)}); "
                             f"use another output directory or delete that run")


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    run_fn: RunFn,
    log: Callable[[str], None] = lambda s: None,
    cells: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, list[RunRecord]]:
    """Run every (cell, seed) that has no ``result.json`` yet; return all records by cell label.

    Seeds run in the outer loop, so a sweep stopped half-way has complete early seeds of every
    cell rather than all seeds of the first cells.
    """
    out = Path(out)
    unknown = [c for c in cells or () if c not in {x.label for x in sweep.cells}]
    if unknown:
        raise UserInputError(f"no cell labelled {unknown}; cells are {[c.label for c in sweep.cells]}")
    configs = {(c.label, s): cell_config(sweep, c, s, overrides) for c in sweep.cells for s in sweep.seeds}
    chosen = [c for c in sweep.cells if cells is None or c.label in cells]
    records: dict[str, list[RunRecord]] = {c.label: [] for c in chosen}
    total = len(chosen) * len(sweep.seeds)
    done = 0
    for seed in sweep.seeds:
        for cell in chosen:
            path = run_dir(out, cell, seed)
            _check_same_config(path, configs[cell.label, seed])
            record = read_record(path)
            done += 1
            if record is None:
                log(f"[{done}/{total}] {cell.label}, seed {seed}: training in {path}")
                path.mkdir(parents=True, exist_ok=True)
                record = run_fn(configs[cell.label, seed], path)
                record.cell, record.seed = cell.label, seed
                write_record(path, record)
            else:
                log(f"[{done}/{total}] {cell.label}, seed {seed}: finished earlier, kept")
            records[cell.label].append(record)
    return records


def train_run(cfg: TrainConfig, path: Path, device: str | None = None, reporter: Any = None) -> RunRecord:
    """The default ``run_fn``: :func:`senet.train.fit` into ``path``, resuming a run that was cut
    off (its ``last`` checkpoint exists), then the exact costs of the trained network."""
    resume = checkpoint_paths(path, "last")[1].is_file()  # the state file alone suffices to resume
    result = fit(cfg, path, device=device, resume=resume, reporter=reporter)
    cost = complexity(result.model, result.card.input_size)
    hist = result.history
    return RunRecord(
        cell="", seed=cfg.seed, final=dict(result.final), best=dict(result.best), history=[dict(h) for h in hist],
        train_seconds=sum(h["time_s"] for h in hist),
        images_per_s=sum(h["images_per_s"] for h in hist) / max(len(hist), 1),
        run_dir=str(path), params=cost.params, macs=cost.macs, paper_flops=cost.paper_flops,
        dataset=str(result.card.dataset_name or ""), model=cfg.model.name,
    )
