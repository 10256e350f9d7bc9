"""Find the pretrained DPA-2 checkpoint to fine-tune: the packaged starter, a file, or a cached name.

``resolve_pretrained`` never downloads: the machines this runs on are offline, where deepmd-kit's own
``dp pretrained download`` only fails after probing its mirrors. A name is resolved the way deepmd-kit
3.2 does it (``deepmd.pretrained.registry`` + ``deepmd.pretrained.download``): the registry entry's
file name inside ``~/.cache/deepmd/pretrained/models``.
"""

from __future__ import annotations

import json
from pathlib import Path

from lfpo_al.errors import UserError

STARTER = Path(__file__).resolve().parents[1] / "starter" / "starter_dpa2.pt"
REBUILD = "python scripts/build_starter_model.py --out /tmp/starter_work"
# ``--model-branch RANDOM``: not a branch but deepmd's request for a fresh fitting net; valid for any file.
RANDOM_HEAD = "RANDOM"
EXAMPLE_HEAD = "MP_traj_v024_alldata_mixu"


def deepmd_cache_dir() -> Path:
    """deepmd-kit's cache of downloaded pretrained models (``dp pretrained download``)."""
    try:
        from deepmd.pretrained.download import DEFAULT_CACHE_DIR
    except ImportError:  # older deepmd-kit: same location
        return Path.home() / ".cache" / "deepmd" / "pretrained" / "models"
    return Path(DEFAULT_CACHE_DIR)


def known_model_names() -> dict[str, str]:
    """Registry name -> cached file name, as ``dp pretrained download`` knows them."""
    try:
        from deepmd.pretrained.registry import MODEL_REGISTRY
    except ImportError:
        return {}
    return {name: str(info["filename"]) for name, info in MODEL_REGISTRY.items()}


def _model_params(path: Path) -> dict:
    """The model config stored in a deepmd PyTorch checkpoint (what ``dp --pt show`` reads)."""
    import torch

    if path.suffix == ".pth":  # frozen TorchScript model: the config is an exported method
        return _frozen_params(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a deepmd checkpoint"
        first_line = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UserError(f"model.pretrained={path} is not a readable deepmd-kit PyTorch checkpoint ({type(exc).__name__}: {first_line})") from exc
    state = state.get("model", state) if isinstance(state, dict) else {}
    try:
        return state["_extra_state"]["model_params"]
    except (KeyError, TypeError) as exc:
        raise UserError(f"model.pretrained={path} holds no deepmd-kit model config (_extra_state.model_params); pass a checkpoint written by dp --pt train") from exc


def _frozen_params(path: Path) -> dict:
    import deepmd.pt.cxx_op  # noqa: F401  registers deepmd's TorchScript ops (border_op, ...)
    import torch

    try:
        script = torch.jit.load(str(path), map_location="cpu")
        return json.loads(script.get_model_def_script())
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"model.pretrained={path} is not a readable frozen deepmd-kit model ({type(exc).__name__})") from exc


def model_heads(path: str | Path) -> list[str] | None:
    """Branches of a multi-task checkpoint (e.g. DPA-2.3.1's heads), or None for a single-task one."""
    params = _model_params(Path(path))
    return list(params["model_dict"]) if "model_dict" in params else None


def _head_names(params: dict) -> set[str]:
    """Every name ``--model-branch`` accepts: branches and their ``model_branch_alias`` entries."""
    names = set()
    for branch, branch_params in params["model_dict"].items():
        names.add(branch)
        names.update(branch_params.get("model_branch_alias") or [])
    return names


def _from_name(name: str) -> Path:
    cache = deepmd_cache_dir()
    known = known_model_names()
    candidates = [cache / known[name]] if name in known else []
    candidates += [cache / name, cache / f"{name}.pt"]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    what = "is a deepmd-kit pretrained model" if name in known else "is neither a file nor a deepmd-kit model name"
    raise UserError(
        f"model.pretrained={name} {what}; it is not cached in {cache} and cannot be downloaded offline: "
        f"pass model.pretrained=/path/to/file.pt (plus model.head=... for a multi-task file, e.g. "
        f"model.head={EXAMPLE_HEAD} for DPA-2.3.1) or model.pretrained=starter"
    )


def _check_buildable(path: Path, params: dict, branch: str | None) -> None:
    """Build the model the file describes, without its weights (milliseconds), with the installed deepmd-kit:
    a file from a newer release (e.g. a DPA-4 fitting) fails here, in one line, not inside every member's job."""
    import copy

    import deepmd
    from deepmd.pt.model.model import get_model

    try:
        get_model(copy.deepcopy(params["model_dict"][branch] if branch else params))
    except Exception as exc:  # noqa: BLE001 - deepmd raises RuntimeError, KeyError, ValueError for unknown parts
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        wanted = _stated_version(params)
        raise UserError(
            f"model.pretrained={path}{f' (head {branch})' if branch else ''} cannot be built by the installed "
            f"deepmd-kit {deepmd.__version__} ({detail}); "
            + (f"it was written by deepmd-kit {wanted}; " if wanted else "it was likely written by a newer release; ")
            + "pass a checkpoint of deepmd-kit 3.2 (e.g. DPA-2.3.1) or the starter") from None


def _stated_version(params: dict) -> str | None:
    """The deepmd-kit version a checkpoint names in its config, where it names one."""
    info = params.get("info") if isinstance(params.get("info"), dict) else {}
    for source in (info, params):
        for key in ("deepmd_version", "version", "dp_version"):
            if isinstance(source.get(key), str):
                return source[key]
    return None


def _check_head(path: Path, head: str | None) -> None:
    """Read the file's model config, check ``head`` against it and build the branch it picks (so a bad
    file fails here, early; only that branch: a multi-task file has dozens)."""
    params = _model_params(path)
    no_head = head in (None, "", RANDOM_HEAD)
    branch = None
    if "model_dict" in params:
        if no_head:  # deepmd takes the first branch's descriptor and a fresh fitting net
            branch = next(iter(params["model_dict"]))
        elif head not in _head_names(params):
            raise UserError(f"model.head={head} is not a branch of {path.name}; available heads: {', '.join(params['model_dict'])}")
        else:
            branch = next(name for name, branch_params in params["model_dict"].items()
                          if head == name or head in (branch_params.get("model_branch_alias") or []))
    elif not no_head and head != "Default":  # deepmd's name for the one branch of a single-task model
        raise UserError(f"model.head={head}: {path.name} is a single-task model with no heads; set model.head=null")
    _check_buildable(path, params, branch)


def resolve_pretrained(pretrained: str, head: str | None = None) -> Path:
    """Absolute path of the checkpoint named by ``model.pretrained``, with ``model.head`` checked.

    ``starter``: the small DPA-2 shipped in the package; an existing file: that file; otherwise a
    deepmd-kit pretrained model name that must already be in deepmd-kit's cache.
    """
    pretrained = str(pretrained).strip()
    if not pretrained:
        raise UserError("model.pretrained is empty; set model.pretrained=starter or model.pretrained=/path/to/file.pt")
    if pretrained == "starter":
        if not STARTER.is_file():
            raise UserError(f"the starter model {STARTER} is missing; rebuild it with `{REBUILD}` or pass model.pretrained=/path/to/file.pt")
        path = STARTER
    else:
        given = Path(pretrained).expanduser()
        if given.is_file():
            path = given.resolve()
        elif len(given.parts) > 1:  # a path with folders: clearly meant as a file
            raise UserError(f"model.pretrained={pretrained}: no such file; pass model.pretrained=/path/to/file.pt or model.pretrained=starter")
        else:  # a bare name: a registry name or a file name, looked up in deepmd-kit's cache
            path = _from_name(pretrained)
    _check_head(path, head)
    return path
