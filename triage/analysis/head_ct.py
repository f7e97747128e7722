"""The series rule of the shipped head-CT bundles: plain (non-contrast) head CT, soft tissue.

A haemorrhage model must see the soft-tissue (brain) reconstruction, not the bone or lung one
made from the same scan, nor a CT angiogram. The kernel names are those of the four main CT
vendors; docs/series_selection.md says where each was learned. The bundles' ``triage.json``
files hold this rule (``models/train_*.py`` write it there).
"""

from __future__ import annotations

from typing import Any

#: ConvolutionKernel values of soft-tissue reconstructions, the most fitting first
SOFT_TISSUE_KERNELS = (
    "STANDARD",  # GE
    "SOFT",  # GE
    "STD",  # GE (older scanners: "STD", "STD+")
    "re:^H[a-z]?[0-4][0-9]",  # Siemens head, smooth to medium: H30s, H40f, Hr38, Hv36
    "UA",  # Philips brain kernels
    "UB",
    "UC",
    "re:^FC2[0-9]",  # Canon (Toshiba) head kernels: FC21, FC26
    "re:^[BQ][a-z]?[0-4][0-9]",  # Siemens body/quantitative, smooth to medium: Br40, Qr40
)

#: ConvolutionKernel values of bone and lung reconstructions: never for this model
BONE_AND_LUNG_KERNELS = (
    "BONE",  # GE
    "BONEPLUS",  # GE
    "LUNG",  # GE
    "EDGE",  # GE
    "re:^[HBJQU][a-z]?[6-9][0-9]",  # Siemens sharp (resolution index 60 and up): H60s, Hr64
    "re:^[A-Z]l[0-9][0-9]",  # Siemens lung-optimised family: Bl57
    "re:^Y[A-F]$",  # Philips bone kernels: YA, YB, YC
)

HEAD_CT_WITHOUT_CONTRAST: dict[str, Any] = {
    "modality": ["CT"],
    "body_part": ["HEAD", "BRAIN"],
    "min_slices": 16,
    "exclude_image_type": ["LOCALIZER"],
    "exclude_description": [
        "scout",
        "localizer",
        "topogram",
        "surview",
        "dose report",
        "bone",
        "lung",
        "cta",
        "re:angio",
    ],
    "prefer_kernel": list(SOFT_TISSUE_KERNELS),
    "exclude_kernel": list(BONE_AND_LUNG_KERNELS),
    "slice_thickness_mm": [0.5, 6.5],
    "prefer_slice_thickness_mm": 5.0,
    "contrast": "without",
}


def head_ct_rule() -> dict[str, Any]:
    """A fresh copy of the rule (for an options file that a caller may change)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in HEAD_CT_WITHOUT_CONTRAST.items()}
