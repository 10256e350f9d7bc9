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

        checks = (
            ("machine", Machine.arginfo()),
            ("resources", Resources.arginfo(detail_kwargs="batch_type" in self.resources)),
        )
        for name, schema in checks:
            try:
                value = schema.normalize_value(dict(getattr(self, name)), trim_pattern="_*")
                schema.check_value(value, strict=False)
            except Exception as exc:  # dargs raises its own ArgumentKeyError/ArgumentTypeError
                raise UserError(f"machine.{name} is not a valid dpdispatcher {name}: {str(exc).splitlines()[0]}") from exc
