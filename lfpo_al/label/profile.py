"""How one machine runs a DFT code: its launcher and its data folder (ASE's template / profile split).

The labeler (``configs/label/``) holds the physics of a code and writes its inputs; the profile
(``machine.programs.<code>`` in ``configs/machine/``) holds what differs between sites running the
same physics: the MPI launcher or executable, and where the pseudopotentials live. The MPI environment
itself (run-as-root flags, threads) is the machine's ``envs``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lfpo_al.errors import UserError


def check_cores_template(key: str, command: str) -> None:
    """A launcher template may use the placeholder ``{cores}`` and no other."""
    try:
        command.format(cores=1)
    except (KeyError, IndexError, ValueError):
        raise UserError(f"{key}={command!r} may use only the placeholder {{cores}}; double other braces") from None


@dataclass
class ProgramProfile:
    """command: launcher template; ``{cores}`` becomes the labeler's ``cores_per_task``.
    data_dir: the code's data folder on this machine (GPAW: PAW setups; VASP: the POTCAR folder);
        None: the code's environment variable or default.
    key: the config key this profile came from, for messages."""

    command: str
    data_dir: str | None = None
    key: str = "machine.programs"

    def __post_init__(self) -> None:
        if not isinstance(self.command, str):
            raise UserError(f"{self.key}.command={self.command!r} must be a shell command (a string)")
        check_cores_template(f"{self.key}.command", self.command)

    def launcher(self, cores: int) -> str:
        return self.command.format(cores=cores)


def profiles_from(programs: dict | None) -> dict[str, ProgramProfile]:
    """``machine.programs`` (code -> {command, data_dir}) as profiles, each checked."""
    profiles = {}
    for name, entry in (programs or {}).items():
        if not isinstance(entry, dict) or "command" not in entry:
            raise UserError(f"machine.programs.{name} must give at least a command, e.g. {{command: 'mpirun -np {{cores}}'}}")
        unknown = sorted(set(entry) - {"command", "data_dir"})
        if unknown:
            raise UserError(f"machine.programs.{name} has unknown key(s) {', '.join(unknown)}; use command and data_dir")
        profiles[name] = ProgramProfile(entry["command"], entry.get("data_dir"), key=f"machine.programs.{name}")
    return profiles
