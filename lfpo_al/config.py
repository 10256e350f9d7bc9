"""Compose the Hydra config tree in ``configs/`` and instantiate its groups.

The CLI has sub-commands, so it uses Hydra's compose API rather than ``@hydra.main``; the run folder is
fixed by ``run_name`` (not a timestamp) so that rerunning a command resumes it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lfpo_al.errors import UserError, first_line

GROUPS = ("system", "model", "explore", "selection", "label", "validate", "analysis", "distill", "machine", "tracking", "experiment")


def config_dir() -> Path:
    """``$LFPO_AL_CONFIG_DIR`` or the ``configs/`` folder beside the package."""
    path = Path(os.environ.get("LFPO_AL_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))
    if not (path / "config.yaml").is_file():
        raise UserError(f"no config.yaml in {path}; set LFPO_AL_CONFIG_DIR to the project's configs/ folder")
    return path


def group_options(group: str, root: Path | None = None) -> list[str]:
    root = root or config_dir()
    return sorted(p.stem for p in (root / group).glob("*.yaml"))


def _check_group_choices(overrides: list[str], root: Path) -> None:
    """Name the unknown option and the valid ones in one line, before Hydra's longer message."""
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep and key in GROUPS and value not in ("null", "") and value not in group_options(key, root):
            raise UserError(f"unknown {key} '{value}'; choose one of: {', '.join(group_options(key, root))} (configs/{key}/)")


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    root = config_dir()
    overrides = list(overrides)
    _check_group_choices(overrides, root)
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        missing = re.search(r"Could not override '([^']+)'", str(exc))
        if missing:
            raise UserError(f"unknown key {missing.group(1)}; check its spelling (--cfg prints every key)") from exc
        detail = "; ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip()) or type(exc).__name__
        raise UserError(f"bad override in '{' '.join(overrides)}': {detail}") from exc


def instantiate_node(node: DictConfig, section: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with plain containers, re-raising our own errors unwrapped and any
    other failure of the settings' own checks as one line naming ``section`` (``HYDRA_FULL_ERROR=1``
    keeps the traceback)."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if section is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        first = exc.__cause__ or exc
        detail = first_line(first) or type(first).__name__
        raise UserError(f"bad value in {section}: {type(first).__name__}: {detail}; check the {section}.* keys "
                        f"(--cfg prints them)") from exc


def instantiate_group(cfg: DictConfig, group: str, **kwargs: Any) -> Any:
    if group not in cfg or cfg[group] is None:
        raise UserError(f"the config has no '{group}' section; pick one with {group}=<option>")
    return instantiate_node(cfg[group], group, **kwargs)


def to_plain(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def make_settings(cls: type, values: dict, section: str) -> Any:
    """``cls(**values)`` for a dataclass, naming any unknown key of ``section`` in one line."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown key {section}.{unknown[0]}; known keys: {', '.join(sorted(known))}")
    return cls(**values)
