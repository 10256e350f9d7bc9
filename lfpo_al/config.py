"""Compose the Hydra config tree (``lfpo_al/configs/``, after a user's own folder) and instantiate its groups.

The CLI has sub-commands, so it uses Hydra's compose API rather than ``@hydra.main``; the run folder is
fixed by ``run_name`` (not a timestamp) so that rerunning a command resumes it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, version
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lfpo_al.errors import UserError, first_line

GROUPS = ("system", "model", "explore", "selection", "label", "validate", "analysis", "distill", "machine", "tracking", "experiment")


PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"
USER_CONFIG_ENV = "LFPO_AL_CONFIG_DIR"


def user_config_dir() -> Path | None:
    """The user's own config folder (``--config-dir`` or ``$LFPO_AL_CONFIG_DIR``), searched before the
    package's: it holds group folders like the package's (``system/my_olivine.yaml``), and a file named
    as a shipped one replaces it."""
    given = os.environ.get(USER_CONFIG_ENV)
    if not given:
        return None
    path = Path(given).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"config folder {given} (--config-dir or {USER_CONFIG_ENV}) is not a directory; "
                        "give a folder holding group folders such as system/ or machine/")
    return path


def config_dirs() -> list[Path]:
    """Where configs are searched, first match wins: the user's folder, then the package's."""
    user = user_config_dir()
    return [user, PACKAGE_CONFIGS] if user else [PACKAGE_CONFIGS]


def group_options(group: str) -> list[str]:
    return sorted({p.stem for root in config_dirs() for p in (root / group).glob("*.yaml")})


def _check_group_choices(overrides: list[str]) -> None:
    """Name the unknown option and the valid ones in one line, before Hydra's longer message."""
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep and key in GROUPS and value not in ("null", "") and value not in group_options(key):
            where = " or ".join(f"{root / key}/" for root in config_dirs())
            raise UserError(f"unknown {key} '{value}'; choose one of: {', '.join(group_options(key))} ({where})")


@contextmanager
def _hydra_searching(dirs: list[Path]) -> Iterator[None]:
    """``initialize_config_dir`` for the package's folder with the user's folder put before it: Hydra's own
    ``hydra.searchpath`` appends after the primary folder, where a user's file could not replace a shipped one."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    *first, package = dirs
    search_path = create_config_search_path(search_path_dir=str(package))
    for path in first:
        search_path.prepend("lfpo_al-user", f"file://{path}", anchor=SearchPathQuery(provider="main"))
    backup = get_gh_backup()
    version.setbase("1.3")
    Hydra.create_main_hydra2(task_name="lfpo_al", config_search_path=search_path)
    try:
        yield
    finally:
        restore_gh_from_backup(backup)


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    overrides = list(overrides)
    _check_group_choices(overrides)
    try:
        with _hydra_searching(config_dirs()):
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
        settings = instantiate(node, _convert_="all", **kwargs)
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
    refuse_non_finite(settings, section or "config")
    return settings


def refuse_non_finite(value: Any, key: str) -> None:
    """One line naming the first NaN or infinite number anywhere in a settings object (dataclass fields,
    lists, dicts): a NaN passes every ``<`` and ``>`` check, so it would slip past each range check."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key}={value} must be a finite number")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            refuse_non_finite(getattr(value, f.name), f"{key}.{f.name}")
    elif isinstance(value, dict):
        for name, item in value.items():
            refuse_non_finite(item, f"{key}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            refuse_non_finite(item, f"{key}[{i}]")


def instantiate_group(cfg: DictConfig, group: str, **kwargs: Any) -> Any:
    if group not in cfg or cfg[group] is None:
        raise UserError(f"the config has no '{group}' section; pick one with {group}=<option>")
    return instantiate_node(cfg[group], group, **kwargs)


def to_plain(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


# keys whose values are secrets wherever they sit (machine.envs tokens, an SSH remote_profile's password,
# passphrase or TOTP secret, API keys), and environment variables named like them
SECRET_KEY = re.compile(r"(^|_)(password|passwd|passphrase|secret|token|api_?key|private_?key|credentials?|totp|auth)"
                        r"($|_)", re.I)
REDACTED = "<redacted>"
ENV_INTERPOLATION = re.compile(r"\$\{oc\.env:([^,}]+)")


def shareable(cfg: DictConfig) -> tuple[dict, list[str]]:
    """The resolved config with its secrets replaced by ``<redacted>``, for the frozen ``config.yaml`` and
    tracking; and the dotted keys redacted. A secret is a value under a key named like one
    (``SECRET_KEY``) or one read from an environment variable named like one (``${oc.env:MY_TOKEN}``)."""
    redacted: list[str] = []

    def walk(resolved, raw, prefix: str):
        if isinstance(resolved, dict):
            return {k: walk(v, raw.get(k) if isinstance(raw, dict) else None, f"{prefix}{k}.") for k, v in resolved.items()}
        if isinstance(resolved, list):
            raws = raw if isinstance(raw, list) else [None] * len(resolved)
            return [walk(v, r, f"{prefix}{i}.") for i, (v, r) in enumerate(zip(resolved, raws))]
        key = prefix.rstrip(".")
        env = ENV_INTERPOLATION.search(raw) if isinstance(raw, str) else None
        secret_key = SECRET_KEY.search(key.rsplit(".", 1)[-1]) is not None
        if resolved not in (None, "") and (secret_key or (env and SECRET_KEY.search(env.group(1)))):
            redacted.append(key)
            return REDACTED
        return resolved

    plain = walk(to_plain(cfg), OmegaConf.to_container(cfg, resolve=False), "")
    return plain, redacted


def make_settings(cls: type, values: dict, section: str) -> Any:
    """``cls(**values)`` for a dataclass, naming any unknown key of ``section`` in one line."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown key {section}.{unknown[0]}; known keys: {', '.join(sorted(known))}")
    settings = cls(**values)
    refuse_non_finite(settings, section)
    return settings
