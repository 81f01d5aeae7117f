"""Lead subsets (paper Tab. 1): the named sets and `I,II`-style lists that `--leads` takes in every command.

    12 = all; P-6 = I II III aVR aVL aVF; P-3 = I II V2; P-2 = I II; P-1 = I; or any comma list such as "I,II,V5"
    (names case-insensitive, with the readers' aliases: MLII, DI ...).

Leads outside the subset are zeroed **and** marked absent in `lead_mask`, so the model sees them as missing.
"""

from __future__ import annotations

import numpy as np
import torch

from modeling_cmelt.reading_cmelt import CANONICAL_LEADS, canonical_lead_index

LEAD_SETS: dict[str, tuple[str, ...]] = {
    "12": CANONICAL_LEADS,
    "P-6": ("I", "II", "III", "aVR", "aVL", "aVF"),
    "P-3": ("I", "II", "V2"),
    "P-2": ("I", "II"),
    "P-1": ("I",),
}
LEADS_HELP = f"lead set: {', '.join(LEAD_SETS)} or a comma list of lead names such as I,II,V2"


def lead_names(leads: str) -> tuple[str, ...]:
    """Canonical names, in canonical order, of a named set (`P-3`) or a comma list (`I,ii,V2`)."""
    if leads in LEAD_SETS:
        return LEAD_SETS[leads]
    names = [name.strip() for name in str(leads).split(",") if name.strip()]
    indices = [canonical_lead_index(name) for name in names]
    unknown = [name for name, index in zip(names, indices) if index is None]
    if not names or unknown:
        raise ValueError(
            f"unknown lead set {leads!r}; expected one of {list(LEAD_SETS)} or a comma list of lead names from "
            f"{list(CANONICAL_LEADS)}" + (f" (unknown: {unknown})" if unknown else "")
        )
    return tuple(CANONICAL_LEADS[index] for index in sorted(set(indices)))


def lead_keep_mask(leads: str) -> np.ndarray:
    """(12,) bool, True for the leads of `leads` (a named set or a comma list)."""
    kept = lead_names(leads)
    return np.array([lead in kept for lead in CANONICAL_LEADS])


def apply_lead_subset(input_values: torch.Tensor, lead_mask: torch.Tensor, keep: np.ndarray | torch.Tensor):
    """Zero the leads outside `keep` ((12,) bool) and mark them absent: returns (input_values, lead_mask)."""
    keep = torch.as_tensor(np.asarray(keep, dtype=bool), device=input_values.device)
    if keep.shape != (input_values.shape[-2],):
        raise ValueError(f"keep must be ({input_values.shape[-2]},) bool, got shape {tuple(keep.shape)}")
    return input_values * keep[:, None].to(input_values.dtype), lead_mask.bool() & keep


def add_leads_argument(parser, default: str = "12") -> None:
    parser.add_argument("--leads", default=default, help=LEADS_HELP)
