"""The rows of an evaluation table: a method with its IDGI flag and backward mode."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One table row: a method with its IDGI flag and backward mode."""

    method: str
    idgi: bool = False
    backward: str = "standard"

    @property
    def label(self) -> str:
        """Human-readable row title, e.g. 'ig + IDGI (guided bwd)'."""
        return self.method + (" + IDGI" if self.idgi else "") + (" (guided bwd)" if self.backward == "guided" else "")

    @property
    def key(self) -> str:
        """Stable machine key stored in shards and CSVs, e.g. 'ig|idgi|guided'."""
        return f"{self.method}|{'idgi' if self.idgi else 'plain'}|{self.backward}"


def variants(methods: list[str] | None = None) -> list[Variant]:
    """Rows for `methods` (None: all of fastattr.methods.METHODS now): path methods with and
    without IDGI; path methods also with the guided backward when 'guided' is registered."""
    from fastattr.backward import BACKWARDS
    from fastattr.methods import METHODS

    names = sorted(METHODS) if not methods else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; registered: {sorted(METHODS)}")
    # the guided non-linearity is defined for IG-style path methods (SPEC.md "GNL")
    backwards = ["standard"] + (["guided"] if "guided" in BACKWARDS else [])
    rows = []
    for b in backwards:
        for m in names:
            spec = METHODS[m]
            if b != "standard" and not spec.path:
                continue
            rows.append(Variant(m, False, b))
            if spec.path:
                rows.append(Variant(m, True, b))
    return rows
