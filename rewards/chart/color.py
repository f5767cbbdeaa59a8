"""Colour difference for chart scoring: sRGB hex -> CIELAB (D65) -> CIEDE2000, vectorised on numpy."""

from __future__ import annotations

import numpy as np

_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB2XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)


def hex_to_rgb(colors: list[str]) -> np.ndarray:
    """``["#rrggbb", ...]`` -> float array [N, 3] in [0, 1]; malformed entries become black."""
    out = np.zeros((len(colors), 3))
    for i, c in enumerate(colors):
        s = c.lstrip("#") if isinstance(c, str) else ""
        if len(s) >= 6:
            try:
                out[i] = [int(s[k : k + 2], 16) / 255 for k in (0, 2, 4)]
            except ValueError:
                pass
    return out


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB [N, 3] in [0, 1] -> CIELAB [N, 3] under D65."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB2XYZ.T / _D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 difference between Lab colours [N, 3] and [M, 3] -> [N, M] (Sharma et al. 2005)."""
    L1, a1, b1 = (lab1[:, None, k] for k in range(3))  # [N, 1]
    L2, a2, b2 = (lab2[None, :, k] for k in range(3))  # [1, M]
    C1, C2 = np.hypot(a1, b1), np.hypot(a2, b2)
    Cbar7 = ((C1 + C2) / 2) ** 7
    G = 0.5 * (1 - np.sqrt(Cbar7 / (Cbar7 + 25.0**7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p, C2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dLp = L2 - L1
    dCp = C2p - C1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(C1p * C2p == 0, 0.0, dh)
    dHp = 2 * np.sqrt(C1p * C2p) * np.sin(np.radians(dh) / 2)
    Lbp = (L1 + L2) / 2
    Cbp = (C1p + C2p) / 2
    hsum = h1p + h2p
    hbp = np.where(
        np.abs(h1p - h2p) > 180, np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2), hsum / 2
    )
    hbp = np.where(C1p * C2p == 0, hsum, hbp)
    T = (
        1
        - 0.17 * np.cos(np.radians(hbp - 30))
        + 0.24 * np.cos(np.radians(2 * hbp))
        + 0.32 * np.cos(np.radians(3 * hbp + 6))
        - 0.20 * np.cos(np.radians(4 * hbp - 63))
    )
    dtheta = 30 * np.exp(-(((hbp - 275) / 25) ** 2))
    Cbp7 = Cbp**7
    Rc = 2 * np.sqrt(Cbp7 / (Cbp7 + 25.0**7))
    Sl = 1 + 0.015 * (Lbp - 50) ** 2 / np.sqrt(20 + (Lbp - 50) ** 2)
    Sc = 1 + 0.045 * Cbp
    Sh = 1 + 0.015 * Cbp * T
    Rt = -np.sin(np.radians(2 * dtheta)) * Rc
    return np.sqrt((dLp / Sl) ** 2 + (dCp / Sc) ** 2 + (dHp / Sh) ** 2 + Rt * (dCp / Sc) * (dHp / Sh))


def color_similarity(ref: list[str], pred: list[str], scale: float = 100.0) -> np.ndarray:
    """[len(ref), len(pred)] similarities ``max(0, 1 - dE2000 / scale)`` (ChartMimic uses scale 100)."""
    if not ref or not pred:
        return np.zeros((len(ref), len(pred)))
    de = ciede2000(rgb_to_lab(hex_to_rgb(ref)), rgb_to_lab(hex_to_rgb(pred)))
    return np.clip(1 - de / scale, 0.0, 1.0)
