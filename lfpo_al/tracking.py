"""Settings of experiment tracking (``configs/tracking/``)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from lfpo_al import atomic
from lfpo_al.errors import UserError

log = logging.getLogger(__name__)
MODES = ("online", "offline", "disabled")


@dataclass
class TrackingSettings:
    """Weights & Biases: one run per ``train``; ``online`` falls back to ``offline`` without an API key."""

    mode: str = "offline"
    project: str = "lfpo_al"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"tracking.mode={self.mode!r} is unknown; choose one of {', '.join(MODES)}")

    def effective_mode(self) -> str:
        if self.mode == "online" and not os.environ.get("WANDB_API_KEY"):
            return "offline"
        return self.mode


def folder_identity(run_dir: Path) -> str:
    """Where the run folder is: host and absolute path. A copy elsewhere is another run for W&B."""
    return f"{socket.gethostname()}:{Path(run_dir).resolve()}"


def own_run_id(id_file: Path) -> str:
    """The W&B run id of this run folder; a fresh one when the folder was copied or moved from where the id
    was made (a copied run would otherwise write into its colleague's W&B run)."""
    if id_file.is_file():
        run_id, _, made_in = id_file.read_text().strip().partition(" ")
        if run_id and made_in in ("", folder_identity(id_file.parent)):
            return run_id
        log.info("run folder %s was copied from %s: logging to a new W&B run", id_file.parent, made_in)
    return secrets.token_hex(4)


class Tracker:
    """One W&B run per ``train`` (resumed with the same id when the run folder is resumed)."""

    def __init__(self, settings: TrackingSettings, run_dir: Path, run_name: str, config: dict):
        self.mode = settings.effective_mode()
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        id_file = Path(run_dir) / "wandb_id.txt"
        run_id = own_run_id(id_file)

        def start(run_id: str):
            atomic.write_text(id_file, f"{run_id} {folder_identity(run_dir)}\n")
            return wandb.init(
                project=settings.project, entity=settings.entity, name=run_name, id=run_id, resume="allow",
                dir=str(run_dir), mode=self.mode, config=config, tags=list(settings.tags),
                settings=wandb.Settings(silent=True, console="off"),
            )

        try:
            self.run = start(run_id)
        except Exception as exc:  # noqa: BLE001 - W&B raises its own types
            # a killed run's W&B service can still hold the id ("run ID is in use"): continue the run
            # under a fresh id rather than fail the training
            log.warning("W&B could not resume run %s (%s); logging to a new run", run_id, str(exc).splitlines()[0])
            self.run = start(secrets.token_hex(4))

    def log(self, metrics: dict, step: int | None = None, images: dict[str, Path] | None = None) -> None:
        if self.run is None:
            return
        import wandb

        payload = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        for key, path in (images or {}).items():
            if Path(path).is_file():
                payload[key] = wandb.Image(str(path))
        self.run.log(payload, step=step)

    def summary(self, values: dict) -> None:
        """Run-level values (setup timings, final metrics) that belong to no iteration."""
        if self.run is not None:
            self.run.summary.update(values)

    def table(self, key: str, columns: list[str], rows: list[list], step: int | None = None) -> None:
        if self.run is None or not rows:
            return
        import wandb

        self.run.log({key: wandb.Table(columns=columns, data=rows)}, step=step)

    def artifact(self, name: str, kind: str, paths: list[Path], root: Path) -> None:
        """Log files and folders as one artifact, each under its path relative to ``root``."""
        if self.run is None:
            return
        import wandb

        art = wandb.Artifact(name, type=kind)
        for path in map(Path, paths):
            rel = str(path.resolve().relative_to(Path(root).resolve()))
            if path.is_dir():
                art.add_dir(str(path), name=rel)
            elif path.is_file():
                art.add_file(str(path), name=rel)
        self.run.log_artifact(art)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
