"""KD loss against a hand computation, and the T^2 convention pinned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.contract.methods import CEMethod, KDMethod
from worker.distill.objectives import CE, KD, OBJECTIVES, build_objective, kd_loss

S = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, -0.4], [-1.5, 3.0, 0.5, 1.0]])
T_ = np.array([[3.0, 1.0, -2.0, 0.5], [0.0, 1.5, -0.5, 0.2], [-1.0, 2.0, 2.5, 0.0]])
Y = np.array([0, 2, 1])


def _softmax(z: np.ndarray, temperature: float) -> np.ndarray:
    z = z / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _hand_kl(s, t, temperature):
    """KL(p_t || p_s) per example summed over classes, averaged over the batch."""
    p_s, p_t = _softmax(s, temperature), _softmax(t, temperature)
    return np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))


def _hand_ce(s, y):
    p = _softmax(s, 1.0)
    return np.mean(-np.log(p[np.arange(len(y)), y]))


def _kd(temperature, alpha):
    return kd_loss(torch.tensor(S), torch.tensor(T_), torch.tensor(Y), temperature, alpha).item()


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_kd_loss_matches_hand_computation(temperature, alpha):
    expected = alpha * temperature**2 * _hand_kl(S, T_, temperature) + (1 - alpha) * _hand_ce(S, Y)
    assert _kd(temperature, alpha) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_alpha_one_is_t_squared_times_kl(temperature):
    assert _kd(temperature, 1.0) == pytest.approx(temperature**2 * _hand_kl(S, T_, temperature), rel=1e-6)


def test_alpha_zero_is_cross_entropy():
    assert _kd(4.0, 0.0) == pytest.approx(_hand_ce(S, Y), rel=1e-6)


def _soft_grad_norm(temperature: float) -> float:
    s = torch.tensor(S - S.mean(1, keepdims=True), requires_grad=True)
    t = torch.tensor(T_ - T_.mean(1, keepdims=True))
    kd_loss(s, t, torch.tensor(Y), temperature, alpha=1.0).backward()
    return s.grad.norm().item()


def test_t_squared_keeps_soft_gradient_scale_independent_of_t():
    # The soft term's gradient w.r.t. the logits is T * (p_s - p_t) / N, which tends to
    # (s - t) / (C * N) as T grows: a constant. Without T^2 it would shrink 4x from T=10 to 20.
    g10, g20, g40 = _soft_grad_norm(10.0), _soft_grad_norm(20.0), _soft_grad_norm(40.0)
    assert g20 / g10 == pytest.approx(1.0, abs=0.03)
    assert g40 / g20 == pytest.approx(1.0, abs=0.01)


def test_identical_logits_give_zero_soft_loss():
    z = torch.tensor(S)
    assert kd_loss(z, z, torch.tensor(Y), 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-12)


def test_registry_and_objectives():
    assert {"ce", "kd"} <= set(OBJECTIVES)
    ce, kd = build_objective(CEMethod()), build_objective(KDMethod(temperature=3.0, alpha=0.7))
    assert isinstance(ce, CE) and not ce.needs_teacher and list(ce.parameters()) == []
    assert isinstance(kd, KD) and kd.needs_teacher and list(kd.parameters()) == []
    s, t, y = torch.tensor(S), torch.tensor(T_), torch.tensor(Y)
    assert kd(s, t, y).item() == pytest.approx(kd_loss(s, t, y, 3.0, 0.7).item())
    assert ce(s, None, y).item() == pytest.approx(_hand_ce(S, Y), rel=1e-6)
    with pytest.raises(ValueError):
        kd(s, None, y)
