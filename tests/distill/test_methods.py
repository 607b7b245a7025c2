"""Every objective beyond KD against a hand computation (numpy, written independently)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.contract.architectures import CNNArch, MLPArch
from app.contract.methods import (
    AdversarialMethod,
    AttentionMethod,
    DKDMethod,
    FitNetMethod,
    PseudoLabelMethod,
)
from worker.distill.objectives import (
    DKD,
    Attention,
    FitNet,
    PseudoLabel,
    build_objective,
    schedule,
)

S = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, -0.4], [-1.5, 3.0, 0.5, 1.0]])
T_ = np.array([[3.0, 1.0, -2.0, 0.5], [0.0, 1.5, -0.5, 0.2], [-1.0, 2.0, 2.5, 0.0]])
Y = np.array([0, 2, 1])


def softmax(z, temperature=1.0):
    z = z / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ce(s, y):
    return np.mean(-np.log(softmax(s)[np.arange(len(y)), y]))


def kl(p, q):
    return np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))


def t(a):
    return torch.tensor(a)


# --- DKD ------------------------------------------------------------------------


def hand_dkd_terms(s, te, y, T):
    ps, pt = softmax(s, T), softmax(te, T)
    tckd = nckd = 0.0
    for i in range(len(y)):
        bs = np.array([ps[i, y[i]], 1 - ps[i, y[i]]])
        bt = np.array([pt[i, y[i]], 1 - pt[i, y[i]]])
        tckd += np.sum(bt * np.log(bt / bs))
        others = [c for c in range(s.shape[1]) if c != y[i]]
        qs, qt = ps[i, others] / ps[i, others].sum(), pt[i, others] / pt[i, others].sum()
        nckd += np.sum(qt * np.log(qt / qs))
    return T * T * tckd / len(y), T * T * nckd / len(y)


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("epoch, warm", [(1, 0.2), (3, 0.6), (5, 1.0), (9, 1.0)])
def test_dkd_matches_hand_computation_with_warmup(T, epoch, warm):
    obj = build_objective(DKDMethod(temperature=T, alpha=1.5, beta=8.0, ce_weight=0.7, warmup_epochs=5))
    assert isinstance(obj, DKD) and obj.needs_teacher and not obj.needs_features
    obj.set_epoch(epoch)
    tckd, nckd = hand_dkd_terms(S, T_, Y, T)
    expected = 0.7 * ce(S, Y) + warm * (1.5 * tckd + 8.0 * nckd)
    assert obj(t(S), t(T_), t(Y)).item() == pytest.approx(expected, rel=1e-6)


def test_dkd_decomposes_classical_kd():
    # Zhao et al. eq. (5): KD = TCKD + (1 - p_t^target) * NCKD, per example.
    ps, pt = softmax(S, 2.0), softmax(T_, 2.0)
    for i in range(len(Y)):
        tck, nck = hand_dkd_terms(S[i : i + 1], T_[i : i + 1], Y[i : i + 1], 2.0)
        kd = 4.0 * kl(pt[i : i + 1], ps[i : i + 1])
        assert kd == pytest.approx(tck + (1 - pt[i, Y[i]]) * nck, rel=1e-9)


def test_schedule_is_a_linear_warmup():
    assert [schedule(1.0, 4, e) for e in (1, 2, 3, 4, 5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert schedule(3.0, 0, 1) == 3.0
    assert schedule(10.0, 2, 1, start=2.0) == 6.0


# --- pseudo-label ---------------------------------------------------------------


def test_pseudo_label_is_ce_on_teacher_argmax():
    obj = build_objective(PseudoLabelMethod())
    assert isinstance(obj, PseudoLabel) and obj.needs_teacher
    assert obj(t(S), t(T_), t(Y)).item() == pytest.approx(ce(S, T_.argmax(1)), rel=1e-6)


# --- FitNets --------------------------------------------------------------------


def hand_kd(s, te, y, T, alpha):
    return alpha * T * T * kl(softmax(te, T), softmax(s, T)) + (1 - alpha) * ce(s, y)


def test_fitnet_linear_hint_matches_hand_computation():
    rng = np.random.default_rng(0)
    fs, ft = rng.normal(size=(3, 5)), rng.normal(size=(3, 2))
    obj = FitNet(4.0, 0.9, 2.5, "dense", "hidden0", (2,), (5,))
    W, b = obj.regressor.weight.detach().double().numpy(), obj.regressor.bias.detach().double().numpy()
    hint = np.mean((fs @ W.T + b - ft) ** 2)
    feats = ({"hidden0": t(fs).float()}, {"dense": t(ft).float()})
    got = obj(t(S), t(T_), t(Y), features=feats).item()
    assert got == pytest.approx(hand_kd(S, T_, Y, 4.0, 0.9) + 2.5 * hint, rel=1e-5)


def test_fitnet_conv_hint_pools_then_1x1_conv():
    rng = np.random.default_rng(1)
    fs = rng.normal(size=(3, 2, 8))  # student conv map: 2 channels, length 8
    ft = rng.normal(size=(3, 4, 4))  # teacher: 4 channels, length 4
    obj = FitNet(2.0, 0.5, 1.0, "conv1", "conv0", (4, 4), (2, 8))
    assert isinstance(obj.regressor, torch.nn.Conv1d) and obj.size == (4,)
    W = obj.regressor.weight.detach().double().numpy()[:, :, 0]
    b = obj.regressor.bias.detach().double().numpy()
    pooled = fs.reshape(3, 2, 4, 2).mean(-1)  # adaptive average pooling 8 -> 4
    reg = np.einsum("oc,ncl->nol", W, pooled) + b[None, :, None]
    hint = np.mean((reg - ft) ** 2)
    feats = ({"conv0": t(fs).float()}, {"conv1": t(ft).float()})
    got = obj(t(S), t(T_), t(Y), features=feats).item()
    assert got == pytest.approx(hand_kd(S, T_, Y, 2.0, 0.5) + hint, rel=1e-5)


def test_fitnet_flat_student_to_conv_teacher_flattens():
    obj = build_objective(
        FitNetMethod(teacher_stage="conv0", student_stage="hidden0"),
        input_shape=(40,),
        num_classes=10,
        teacher_arch=CNNArch(channels=[4, 8]),
        student_arch=MLPArch(hidden=[16]),
    )
    assert isinstance(obj.regressor, torch.nn.Linear)
    assert tuple(obj.regressor.weight.shape) == (4 * 20, 16)
    assert len(obj.student_parameters()) == 2  # trained with the student


# --- attention transfer ---------------------------------------------------------


def hand_at(a, size):
    q = np.mean(a**2, axis=1)  # (N, L)
    if q.shape[1] != size:
        q = q.reshape(len(q), size, -1).mean(-1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.mark.parametrize("alpha", [0.0, 0.9])
def test_attention_matches_hand_computation(alpha):
    rng = np.random.default_rng(2)
    s0, t0 = rng.normal(size=(3, 2, 8)), rng.normal(size=(3, 5, 4))
    s1, t1 = rng.normal(size=(3, 3, 4)), rng.normal(size=(3, 6, 4))
    obj = Attention(4.0, alpha, 1000.0, [("conv0", "conv0", (4,)), ("conv1", "conv1", (4,))])
    at = np.mean((hand_at(s0, 4) - hand_at(t0, 4)) ** 2) + np.mean((hand_at(s1, 4) - hand_at(t1, 4)) ** 2)
    feats = ({"conv0": t(s0), "conv1": t(s1)}, {"conv0": t(t0), "conv1": t(t1)})
    got = obj(t(S), t(T_), t(Y), features=feats).item()
    assert got == pytest.approx(hand_kd(S, T_, Y, 4.0, alpha) + 500.0 * at, rel=1e-6)


def test_attention_default_pairs_are_the_last_conv_stages():
    obj = build_objective(
        AttentionMethod(),
        input_shape=(8, 8),
        num_classes=10,
        teacher_arch=CNNArch(channels=[8, 16, 16]),
        student_arch=CNNArch(channels=[4, 4], hidden=0),
    )
    assert obj.pairs == [("conv1", "conv0", (2, 2)), ("conv2", "conv1", (1, 1))]


# --- adversarial ----------------------------------------------------------------


def hand_disc(obj, logits):
    W1 = obj.discriminator[0].weight.detach().double().numpy()
    b1 = obj.discriminator[0].bias.detach().double().numpy()
    W2 = obj.discriminator[2].weight.detach().double().numpy()
    b2 = obj.discriminator[2].bias.detach().double().numpy()
    return (np.maximum(softmax(logits) @ W1.T + b1, 0) @ W2.T + b2)[:, 0]


def bce(z, target):
    p = 1 / (1 + np.exp(-z))
    return np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p)))


def test_adversarial_losses_match_hand_computation():
    obj = build_objective(AdversarialMethod(adv_weight=0.3, temperature=4.0, alpha=0.9), num_classes=4, seed=3).double()
    fool = bce(hand_disc(obj, S), 1.0)
    assert obj(t(S), t(T_), t(Y)).item() == pytest.approx(hand_kd(S, T_, Y, 4.0, 0.9) + 0.3 * fool, rel=1e-6)
    disc = bce(hand_disc(obj, T_), 1.0) + bce(hand_disc(obj, S), 0.0)
    assert obj.disc_loss(t(S), t(T_)).item() == pytest.approx(disc, rel=1e-6)


def test_adversarial_step_trains_the_discriminator_only_and_checkpoints_its_optimizer():
    obj = build_objective(AdversarialMethod(disc_lr=0.05), num_classes=4, seed=0)
    assert obj.student_parameters() == []  # never in the student's optimizer
    s, te = t(S).float(), t(T_).float()
    before = obj.disc_loss(s, te).item()
    for _ in range(20):
        obj.auxiliary_step(s, te)
    assert obj.disc_loss(s, te).item() < before  # it learns to tell them apart
    state = obj.state_dict()
    assert state["_extra_state"]["disc_opt"]["state"]  # Adam moments travel in the checkpoint
    other = build_objective(AdversarialMethod(disc_lr=0.05), num_classes=4, seed=0)
    other.load_state_dict(state)
    obj.auxiliary_step(s, te)
    other.auxiliary_step(s, te)
    for a, b in zip(obj.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


def test_trainable_parts_are_seeded():
    a = build_objective(AdversarialMethod(), num_classes=10, seed=1)
    b = build_objective(AdversarialMethod(), num_classes=10, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_kd_temperature_and_alpha_follow_their_warmups():
    from app.contract.methods import KDMethod

    m = KDMethod.model_validate(
        {
            "name": "kd",
            "temperature": 8.0,
            "alpha": 0.8,
            "temperature_schedule": {"epochs": 4, "start": 2.0},
            "alpha_schedule": {"epochs": 2},
        }
    )
    obj = build_objective(m)
    seen = []
    for epoch in (1, 2, 3, 4, 5):
        obj.set_epoch(epoch)
        seen.append((obj.temperature, obj.alpha))
        expected = hand_kd(S, T_, Y, obj.temperature, obj.alpha)
        assert obj(t(S), t(T_), t(Y)).item() == pytest.approx(expected, rel=1e-6)
    assert seen == [(3.5, 0.4), (5.0, 0.8), (6.5, 0.8), (8.0, 0.8), (8.0, 0.8)]
    with pytest.raises(ValueError):
        KDMethod.model_validate({"name": "kd", "temperature_schedule": {"epochs": 3}})  # starts at T=0


def test_kd_on_transfer_rows_uses_the_teacher_alone():
    from worker.distill.objectives import kd_loss

    y = np.array([0, -1, 1])  # the middle row comes from the transfer set
    T, alpha = 3.0, 0.7
    ps, pt = softmax(S, T), softmax(T_, T)
    kl_rows = np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)
    p1 = softmax(S)
    ce_rows = np.array([-np.log(p1[0, 0]), 0.0, -np.log(p1[2, 1])])
    w = np.array([alpha, 1.0, alpha])
    expected = np.mean(w * T * T * kl_rows + (1 - alpha) * ce_rows)
    assert kd_loss(t(S), t(T_), t(y), T, alpha).item() == pytest.approx(expected, rel=1e-6)
    # all labeled: exactly the usual loss
    assert kd_loss(t(S), t(T_), t(Y), T, alpha).item() == pytest.approx(hand_kd(S, T_, Y, T, alpha), rel=1e-6)
