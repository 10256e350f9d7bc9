"""Where heavy jobs run: a dpdispatcher ``Machine`` and ``Resources`` pair (``configs/machine/``).

Training members, MD explorations and DFT tasks all go through dpdispatcher; this module only checks
the two dicts against dpdispatcher's own argument schema and builds its objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lfpo_al.errors import UserError


@dataclass
class MachineSettings:
    machine: dict
    resources: dict
    command_prefix: str = ""
    envs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from dpdispatcher import Machine, Resources

        for name, schema in (("machine", Machine.arginfo()), ("resources", Resources.arginfo())):
            try:
                schema.check_value(getattr(self, name), strict=False)
            except Exception as exc:  # dargs raises its own ArgumentKeyError/ArgumentTypeError
                raise UserError(f"machine.{name} is not a valid dpdispatcher {name}: {str(exc).splitlines()[0]}") from exc
