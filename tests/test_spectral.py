"""The maths: ranks from energy, projections, planted subspaces, streaming, the edit."""

import numpy as np
import pytest
import torch

from spectral_edit import fit_from_arrays
from spectral_edit.features import get_feature_map
from spectral_edit.fit import SpectralFitter
from spectral_edit.spectral import rank_for_energy, spectral_edit


def test_rank_for_energy_hand_computed():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert rank_for_energy(s, 0.5) == 1
    assert rank_for_energy(s, 9 / 14) == 1
    assert rank_for_energy(s, 0.9) == 2
    assert rank_for_energy(s, 0.99) == 3
    assert rank_for_energy(s, 1.0) == 3
    with pytest.raises(ValueError):
        rank_for_energy(s, 0.0)
    with pytest.raises(ValueError):
        rank_for_energy(torch.zeros(3), 0.9)


@pytest.mark.parametrize("seed", range(5))
def test_rank_is_smallest_reaching_ratio(seed):
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(50, generator=gen, dtype=torch.float64).sort(descending=True).values
    fractions = (s**2).cumsum(0) / (s**2).sum()
    for ratio in (0.3, 0.8, 0.95, 0.999):
        k = rank_for_energy(s, ratio)
        assert fractions[k - 1] >= ratio
        assert k == 1 or fractions[k - 2] < ratio


def _planted(n=400, d=24, k_pos=3, k_neg=2, seed=0):
    """Neutral activations mix a positive-linked and a negative-linked latent subspace."""
    gen = np.random.default_rng(seed)
    basis = np.linalg.qr(gen.normal(size=(d, d)))[0]
    p, q = basis[:, :k_pos], basis[:, k_pos : k_pos + k_neg]
    # latents with exactly uncorrelated sample columns, so only noise blurs the subspaces
    latents = np.linalg.qr(gen.normal(size=(n, k_pos + k_neg)))[0] * np.sqrt(n)
    z = latents[:, :k_pos] * np.array([5.0, 4.0, 3.0])[:k_pos]
    w = latents[:, k_pos:] * np.array([4.0, 3.0])[:k_neg]
    noise = lambda: 0.05 * gen.normal(size=(n, d))  # noqa: E731
    mix_p = np.linalg.qr(gen.normal(size=(d, d)))[0][:, :k_pos]
    mix_n = np.linalg.qr(gen.normal(size=(d, d)))[0][:, :k_neg]
    neutral = z @ p.T + w @ q.T + noise()
    positive = z @ mix_p.T + noise()
    negative = w @ mix_n.T + noise()
    return [x[:, None, :] for x in (neutral, positive, negative)], p, q


def test_planted_subspaces_are_recovered():
    (h, hp, hn), p, q = _planted()
    editor = fit_from_arrays(h, hp, hn, pos_ratio=0.99, neg_ratio=0.99)
    (k_pos, k_neg) = editor.ranks[0]
    assert (k_pos, k_neg) == (3, 2)
    p_hat, m_hat = editor.projections(0)
    p_true = torch.as_tensor(p @ p.T, dtype=torch.float32)
    q_true = torch.as_tensor(q @ q.T, dtype=torch.float32)
    assert torch.linalg.matrix_norm(p_hat - p_true) < 0.05
    assert torch.linalg.matrix_norm(m_hat - (torch.eye(24) - q_true)) < 0.05


def test_projection_properties():
    (h, hp, hn), _, _ = _planted(d=16)
    editor = fit_from_arrays(h, hp, hn, pos_rank=4, neg_rank=5)
    p_pos, p_neg = (p.double() for p in editor.projections(0))
    eye = torch.eye(16, dtype=torch.float64)
    for proj, rank in ((p_pos, 4), (eye - p_neg, 5)):
        torch.testing.assert_close(proj @ proj, proj, atol=1e-6, rtol=0)
        torch.testing.assert_close(proj, proj.T, atol=1e-7, rtol=0)
        assert torch.linalg.matrix_rank(proj, atol=1e-4) == rank
        assert abs(torch.trace(proj).item() - rank) < 1e-5


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("feature", ["linear", "tanh"])
def test_streaming_equals_one_batch(centered, feature):
    gen = torch.Generator().manual_seed(1)
    h, hp, hn = (torch.randn(57, 3, 12, generator=gen) * 3 + 1 for _ in range(3))
    one = fit_from_arrays(
        h,
        hp,
        hn,
        pos_ratio=0.9,
        neg_ratio=0.95,
        centered=centered,
        feature=feature,
        layers=[2, 5, 7],
        num_layers=8,
    )
    streamed = fit_from_arrays(
        h,
        hp,
        hn,
        pos_ratio=0.9,
        neg_ratio=0.95,
        centered=centered,
        feature=feature,
        layers=[2, 5, 7],
        num_layers=8,
        batch_size=5,
    )
    assert one.ranks == streamed.ranks
    for layer in one.layers:
        for a, b in zip(one.projections(layer), streamed.projections(layer), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the float64 sums themselves agree to round-off
    f1 = SpectralFitter([0], 12, 1, centered=centered)
    f2 = SpectralFitter([0], 12, 1, centered=centered)
    f1.update(h[:, :1], hp[:, :1], hn[:, :1])
    for start in range(0, 57, 10):
        sl = slice(start, start + 10)
        f2.update(h[sl, :1], hp[sl, :1], hn[sl, :1])
    for a, b in zip(f1.covariances(), f2.covariances(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_centering_uses_sample_means():
    gen = torch.Generator().manual_seed(2)
    h, hp, hn = (torch.randn(40, 1, 6, generator=gen, dtype=torch.float64) + 4 for _ in range(3))
    fitter = SpectralFitter([0], 6, 1, centered=True)
    fitter.update(h, hp, hn)
    omega_pos, _ = fitter.covariances()
    hc, hpc = h[:, 0] - h[:, 0].mean(0), hp[:, 0] - hp[:, 0].mean(0)
    torch.testing.assert_close(omega_pos[0], hc.T @ hpc / 40)


def test_signature_is_nuclear_norm():
    gen = torch.Generator().manual_seed(3)
    h, hp, hn = (torch.randn(30, 2, 5, generator=gen, dtype=torch.float64) for _ in range(3))
    fitter = SpectralFitter([0, 1], 5, 2)
    fitter.update(h, hp, hn)
    for layer in range(2):
        x = torch.cat([hp[:, layer], hn[:, layer]]).T  # (d, 2N)
        z = torch.zeros(2, 60, dtype=torch.float64)
        z[0, :30] = 1
        z[1, 30:] = 1
        expected = torch.linalg.svdvals(x @ z.T / 60).sum()
        assert abs(fitter.signatures()[layer].item() - expected.item()) < 1e-10


def test_edit_keeps_token_norm_and_is_per_token():
    gen = torch.Generator().manual_seed(4)
    pos = torch.linalg.qr(torch.randn(16, 3, generator=gen))[0]
    neg = torch.linalg.qr(torch.randn(16, 2, generator=gen))[0]
    h = torch.randn(2, 5, 16, generator=gen) * torch.arange(1, 6)[None, :, None]
    out = spectral_edit(h, pos, neg, merge="norm")
    torch.testing.assert_close(out.norm(dim=-1), h.norm(dim=-1))
    assert not torch.allclose(out, h)
    alone = spectral_edit(h[1:, 2:3], pos, neg, merge="norm")
    torch.testing.assert_close(alone[0, 0], out[1, 2])
    # merge=mean is (P+ h + P- h) / 2
    p_pos = pos @ pos.T
    p_neg = torch.eye(16) - neg @ neg.T
    torch.testing.assert_close(
        spectral_edit(h, pos, neg, merge="mean"), (h @ p_pos + h @ p_neg) / 2
    )
    # alpha interpolates between h and the full edit
    half = spectral_edit(h, pos, neg, alpha=0.5)
    torch.testing.assert_close(half, (h + out) / 2)
    assert torch.equal(spectral_edit(h, pos, neg, alpha=0.0), h)


def test_phi_edit_with_full_ranks_is_identity():
    gen = torch.Generator().manual_seed(5)
    d = 12
    full = torch.eye(d)
    # P+ = I, and P- removes one axis on which every activation is 0 (k- >= 1 is required)
    h = torch.randn(4, d, generator=gen) * 20
    h[:, -1] = 0
    orth = torch.zeros(d, 1)
    orth[-1, 0] = 1
    for name in ("linear", "tanh", "elu"):
        feature = get_feature_map(name)
        scale = float(h.pow(2).mean().sqrt())
        # φ maps h[:, -1] = 0 to 0 for tanh/elu, so removing that axis removes nothing:
        # z = 2u, the norm merge gives u, the inverse gives h back
        out = spectral_edit(h, full, orth, feature=feature, scale=scale)
        torch.testing.assert_close(out, h, atol=1e-3, rtol=1e-4)
