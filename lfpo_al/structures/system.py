"""The chemistry of one olivine LiMPO4 system, as read from ``configs/system/*.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field

from lfpo_al.errors import UserError

AXES = ("a", "b", "c")


@dataclass
class ValenceRule:
    """How M valence maps onto geometry and spin for one transition metal."""

    reduced: int
    oxidised: int
    bond_length: dict[int, float]
    bond_threshold: float
    initial_magmom: dict[int, float]
    expected_magmom: dict[int, float]

    def __post_init__(self) -> None:
        self.bond_length = {int(k): float(v) for k, v in self.bond_length.items()}
        self.initial_magmom = {int(k): float(v) for k, v in self.initial_magmom.items()}
        self.expected_magmom = {int(k): float(v) for k, v in self.expected_magmom.items()}
        for name in ("bond_length", "initial_magmom", "expected_magmom"):
            missing = {self.reduced, self.oxidised} - set(getattr(self, name))
            if missing:
                raise UserError(f"system.valence.{name} lacks valence {sorted(missing)}; give a value for both {self.reduced} and {self.oxidised}")
        lo, hi = self.bond_length[self.oxidised], self.bond_length[self.reduced]
        if not lo < self.bond_threshold < hi:
            raise UserError(
                f"system.valence.bond_threshold={self.bond_threshold} must lie between the M{self.oxidised}+ and "
                f"M{self.reduced}+ bond lengths ({lo}, {hi})"
            )

    @property
    def oxidised_moment_larger(self) -> bool:
        """Whether the oxidised metal carries the larger |m| (Fe3+ d5 over Fe2+ d6; not so for Mn)."""
        return self.expected_magmom[self.oxidised] > self.expected_magmom[self.reduced]

    @property
    def bond_gap(self) -> float:
        """Mean M-O bond length of M(reduced) minus that of M(oxidised), A: the valence signal's size."""
        return self.bond_length[self.reduced] - self.bond_length[self.oxidised]


@dataclass
class OlivineSystem:
    """An olivine LiMPO4 (Pnma) with its delithiated MPO4 end member."""

    name: str
    metal: str
    type_map: list[str]
    lattice: dict[str, float]
    delithiated_lattice: dict[str, float]
    sites: list[dict]
    oxidation_states: dict[str, int]
    hubbard_u: dict[str, float]
    valence: ValenceRule | dict
    spacegroup: str = "Pnma"
    magnetic_order: str = "afm"
    mobile_ion: str = "Li"
    oxygen: str = "O"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.valence, dict):
            self.valence = ValenceRule(**self.valence)
        for name in ("lattice", "delithiated_lattice"):
            lat = getattr(self, name)
            if set(lat) != set(AXES) or any(float(v) <= 0 for v in lat.values()):
                raise UserError(f"system.{name} must give positive a, b, c in Angstrom, got {lat}")
        species = {site["species"] for site in self.sites}
        if species != set(self.type_map):
            raise UserError(f"system.type_map {self.type_map} must list exactly the species of system.sites {sorted(species)}")
        for required in (self.metal, self.mobile_ion, self.oxygen):
            if required not in self.type_map:
                raise UserError(f"system.type_map {self.type_map} lacks {required}")
        if self.magnetic_order not in ("afm", "fm"):
            raise UserError(f"system.magnetic_order={self.magnetic_order!r} is unknown; use afm or fm")

    def lattice_abc(self, delithiated: bool = False) -> tuple[float, float, float]:
        lat = self.delithiated_lattice if delithiated else self.lattice
        return tuple(float(lat[axis]) for axis in AXES)

    def formal_charge(self, symbol: str) -> int:
        return int(self.oxidation_states[symbol])
