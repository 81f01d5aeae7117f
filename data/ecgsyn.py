"""An independent ECG simulator for out-of-generator checks: McSharry et al.'s dynamical model (ECGSYN, IEEE TBME
2003), extended to three orthogonal (Frank-like) components as in Sameni et al. 2007 and projected on the 12 leads
with Dower's inverse transform.

It shares no code or parameters with `data.synthetic` (the training corpus' generator) on purpose: a model that
learned findings, not that generator's quirks, should rate these ECGs correctly too.

Model. A point moves round the unit circle at angular speed 2 pi / RR(t); each of the three components z_d obeys
    dz_d/dt = - sum_i a_{d,i} * dtheta_i * exp(-dtheta_i^2 / (2 b_i^2)) - (z_d - baseline(t)),
with one Gaussian "event" per wave (P, Q, R, S, T) at phase theta_i. The equation is linear in z_d given the phase,
so it is integrated exactly per sample (a first-order recursion) instead of with an ODE solver. RR(t) is the
ECGSYN tachogram: a bimodal spectrum (Mayer waves near 0.1 Hz, respiratory sinus arrhythmia near 0.25 Hz) with
random phases, scaled to the requested mean rate and standard deviation. Wave phases and widths scale with rate as in
ECGSYN (hrfact = sqrt(rate / 60)).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

# ECGSYN's single-lead defaults (P, Q, R, S, T): phase (rad), width (rad).
_THETA = np.radians([-70.0, -15.0, 0.0, 15.0, 100.0])
_WIDTH = np.array([0.25, 0.1, 0.1, 0.1, 0.4])
# Event amplitudes per orthogonal component (X left, Y inferior, Z posterior as in Frank leads).
_AMPLITUDES = np.array([
    [1.2, -5.0, 30.0, -7.5, 0.5],     # X (left): ECGSYN's lead-II-like shape, T a little smaller
    [0.8, -2.0, 22.0, -4.0, 0.4],     # Y (inferior)
    [0.2, -3.0, 15.0, 4.0, -0.25],    # Z (posterior): septal forces anterior, main QRS posterior: rS in V1
])
# Dower's inverse transform (XYZ -> I, II, V1..V6), Edenbrandt & Pahlm 1988 coefficients.
_DOWER = np.array([
    [0.632, -0.235, 0.059],
    [0.235, 1.066, -0.132],
    [-0.515, 0.157, -0.917],
    [0.044, 0.164, -1.387],
    [0.882, 0.098, -1.277],
    [1.213, 0.127, -0.601],
    [1.125, 0.127, -0.086],
    [0.831, 0.076, 0.230],
])


def rr_tachogram(rng: np.random.Generator, num_beats: int, mean_rate: float, rate_std: float) -> np.ndarray:
    """(num_beats,) RR intervals in s with a Mayer-wave + RSA spectrum (ECGSYN's rrprocess, in the beat domain)."""
    beat_time = np.arange(num_beats) * 60.0 / mean_rate
    components = np.zeros(num_beats)
    for centre, width, power in ((0.1, 0.01, 0.5), (0.25, 0.01, 1.0)):  # LF/HF = 0.5
        for frequency in rng.normal(centre, width, size=8):
            components += np.sqrt(power) * np.sin(2 * np.pi * frequency * beat_time + rng.uniform(0, 2 * np.pi))
    components /= max(components.std(), 1e-9)
    rates = np.clip(mean_rate + rate_std * components, 25.0, 220.0)
    return 60.0 / rates


def simulate(
    rng: np.random.Generator,
    mean_rate: float,
    duration: float = 10.0,
    sampling_rate: int = 500,
    rate_std: float = 1.0,
    noise_mv: float = 0.02,
) -> np.ndarray:
    """(12, duration * sampling_rate) float32 mV ECG in leads I, II, III, aVR, aVL, aVF, V1-V6."""
    samples = int(round(duration * sampling_rate))
    warmup = sampling_rate  # one second to forget the initial state
    rr = rr_tachogram(rng, int((duration + 3.0) * mean_rate / 60.0) + 8, mean_rate, rate_std)
    step = 1.0 / sampling_rate
    time = np.arange(samples + warmup) * step
    beat_edges = np.concatenate([[0.0], np.cumsum(rr)]) - rng.uniform(0.0, rr[0])  # start anywhere in a beat
    beat = np.clip(np.searchsorted(beat_edges, time, side="right") - 1, 0, len(rr) - 1)
    phase = -np.pi + 2 * np.pi * (time - beat_edges[beat]) / rr[beat]
    rate_factor = np.sqrt(mean_rate / 60.0)
    theta = _THETA * np.array([np.sqrt(rate_factor), rate_factor, 1.0, rate_factor, np.sqrt(rate_factor)])
    width = _WIDTH * rate_factor * rng.uniform(0.85, 1.15, size=5)
    amplitudes = _AMPLITUDES * rng.uniform(0.7, 1.3, size=(3, 5))
    delta = np.angle(np.exp(1j * (phase[None, :] - theta[:, None])))  # wrapped to (-pi, pi]
    events = delta * np.exp(-0.5 * (delta / width[:, None]) ** 2)  # (5, T)
    omega = 2 * np.pi / rr[beat]
    forcing = -(amplitudes @ (events * omega[None, :]))  # (3, T): McSharry's theta-dot factor folded in
    decay = np.exp(-step)
    components = lfilter([step], [1.0, -decay], forcing, axis=1)[:, warmup:]
    components *= 1.0 / max(np.abs(components).max(), 1e-9) * rng.uniform(1.0, 1.8)  # peak spatial amplitude, mV
    leads8 = _DOWER @ components
    leads8 += rng.normal(0.0, noise_mv, leads8.shape)
    t = np.arange(samples) * step
    leads8 += rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * rng.uniform(0.15, 0.35) * t + rng.uniform(0, 6.3))
    lead_i, lead_ii = leads8[0], leads8[1]
    limb = np.stack([lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2,
                     lead_ii - lead_i / 2])
    return np.concatenate([limb, leads8[2:]]).astype(np.float32)
