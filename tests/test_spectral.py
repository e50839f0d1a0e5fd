"""The maths: ranks from energy, projections, planted subspaces, streaming, the edit."""

import numpy as np
import pytest
import torch

from spectral_edit import fit_from_arrays
from spectral_edit.core.features import get_feature_map
from spectral_edit.core.options import SvdRoute
from spectral_edit.core.spectral import EditFactors, apply_edit, rank_for_energy, spectral_edit
from spectral_edit.editors.sea_fit import SpectralFitter


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


def test_joined_factors_give_the_dense_projections():
    """``c + (c read) writeᵀ`` is ``P+ c + P- c`` with the projections formed densely, in
    any batch shape, with and without the centring mean, for float64 and bfloat16 input."""
    gen = torch.Generator().manual_seed(7)
    d = 20
    pos = torch.linalg.qr(torch.randn(d, 4, generator=gen, dtype=torch.float64))[0]
    neg = torch.linalg.qr(torch.randn(d, 6, generator=gen, dtype=torch.float64))[0]
    mean = torch.randn(d, generator=gen, dtype=torch.float64)
    h = torch.randn(3, 2, 5, d, generator=gen, dtype=torch.float64) * 4
    p_sum = pos @ pos.T + torch.eye(d, dtype=torch.float64) - neg @ neg.T
    factors = EditFactors.join(pos, neg, mean)
    assert factors.read.shape == factors.write.shape == (d, 10)
    c = h - mean
    z = c @ p_sum  # P+ and P- are symmetric
    expected = mean + z * (c.norm(dim=-1, keepdim=True) / z.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(apply_edit(h, factors), expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(spectral_edit(h, pos, neg, mean=mean), expected)
    torch.testing.assert_close(apply_edit(h, factors, merge="mean"), mean + z / 2)
    # alpha: exactly h at 0 and exactly the edit at 1; halfway is the midpoint
    assert torch.equal(apply_edit(h, factors, alpha=0.0), h)
    torch.testing.assert_close(apply_edit(h, factors, alpha=0.5), (h + expected) / 2)
    # half precision is computed in float32 from factors joined in float32
    low = h.to(torch.bfloat16)
    f32 = EditFactors.join(pos, neg, mean, dtype=torch.float32)
    out = apply_edit(low, f32)
    assert out.dtype == torch.bfloat16
    reference = spectral_edit(low.double(), pos, neg, mean=mean)
    torch.testing.assert_close(out.double(), reference, atol=0.1, rtol=1e-2)
    with pytest.raises(ValueError, match="factors must be"):
        EditFactors.join(pos, neg[:-1])


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


# ---------------------------------------------------------------- thin SVD route (N < d)


def _few_samples(n=20, d=48, layers=2, seed=5):
    """Fewer demonstrations than dimensions, with a common offset (as residual streams
    have) and a shared low-rank structure so that the spectra have clear gaps."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(layers, 6, d, generator=gen, dtype=torch.float64)
    latent = torch.randn(n, layers, 6, generator=gen, dtype=torch.float64)
    base = torch.einsum("nlk,lkd->nld", latent, mix) + 3.0

    def noisy(scale):
        return base + scale * torch.randn(n, layers, d, generator=gen, dtype=torch.float64)

    return noisy(0.3), noisy(0.5), noisy(0.5)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("feature", ["linear", "tanh"])
def test_thin_route_gives_the_dense_spectra_and_editor(centered, feature):
    h, hp, hn = _few_samples()
    scales = [4.0, 5.0] if feature != "linear" else None
    fitters = {}
    for route in ("dense", "thin"):
        fitter = SpectralFitter(
            [3, 4], 48, 6, centered=centered, feature=feature, feature_scales=scales, svd=route
        )
        for start in range(0, 20, 7):  # streamed: the thin route keeps every batch
            fitter.update(h[start : start + 7], hp[start : start + 7], hn[start : start + 7])
        assert fitter.svd_route == route
        fitters[route] = fitter
    for dense, thin in zip(fitters["dense"].spectra(), fitters["thin"].spectra(), strict=True):
        u_pos, s_pos, u_neg, s_neg = thin
        assert u_pos.shape == (48, 20) and s_pos.shape == (20,)
        torch.testing.assert_close(s_pos, dense[1][:20], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(s_neg, dense[3][:20], rtol=1e-9, atol=1e-12)
        assert float(dense[1][20:].abs().max()) < 1e-10 * float(dense[1][0])  # rank ≤ N
        torch.testing.assert_close(u_pos.T @ u_pos, torch.eye(20, dtype=torch.float64))
    x = h[:5, 0].float()
    for ratio in (0.5, 0.9, 0.99):
        editors = {r: f.fit(pos_ratio=ratio, neg_ratio=ratio) for r, f in fitters.items()}
        assert editors["thin"].ranks == editors["dense"].ranks
        assert editors["thin"].metadata["svd"] == "thin"
        for layer in (3, 4):
            for a, b in zip(
                editors["thin"].projections(layer), editors["dense"].projections(layer), strict=True
            ):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
            torch.testing.assert_close(
                editors["thin"].edit(x, layer), editors["dense"].edit(x, layer), atol=1e-4, rtol=0
            )


def test_auto_route_switches_to_dense_once_n_reaches_d():
    h, hp, hn = _few_samples(n=60, d=48)
    fitter = SpectralFitter([0, 1], 48, 2)
    fitter.update(h[:30], hp[:30], hn[:30])
    assert fitter.svd_route == "thin"
    thin_editor = fitter.fit(pos_ratio=0.9, neg_ratio=0.9)
    fitter.update(h[30:], hp[30:], hn[30:])
    assert fitter.svd_route == "dense"  # the kept activations are dropped
    assert fitter.fit(pos_ratio=0.9, neg_ratio=0.9).metadata["svd"] == "dense"
    with pytest.raises(ValueError, match="not kept"):
        fitter.spectra("thin")
    assert thin_editor.metadata["n_demonstrations"] == 30
    never = SpectralFitter([0, 1], 48, 2, svd="dense")
    never.update(h[:10], hp[:10], hn[:10])
    assert never.svd_route == "dense"
    with pytest.raises(ValueError, match="svd must be one of"):
        SpectralFitter([0], 48, 1, svd="fast")


def test_thin_route_falls_back_to_dense_for_ranks_beyond_n():
    h, hp, hn = _few_samples(n=10, d=48, layers=1)
    fitter = SpectralFitter([0], 48, 1, centered=True)
    fitter.update(h, hp, hn)
    editor = fitter.fit(pos_rank=30, neg_rank=4)
    assert editor.ranks[0] == (30, 4)
    assert editor.metadata["svd"] == "dense"
    small = fitter.fit(pos_rank=5, neg_rank=4)
    assert small.metadata["svd"] == "thin"
    # the top-5 subspace is the same whichever route found it
    dense_top5 = fitter.fit(pos_rank=5, neg_rank=4)
    fitter_dense = SpectralFitter([0], 48, 1, centered=True, svd="dense")
    fitter_dense.update(h, hp, hn)
    for a, b in zip(
        dense_top5.projections(0),
        fitter_dense.fit(pos_rank=5, neg_rank=4).projections(0),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_fitter_reports_coordinates_the_feature_map_clips() -> None:
    """One massive coordinate (as in real residual streams: 26 × the RMS on Gemma 3 270M)
    lies beyond tanh's float32 round trip at the RMS scale: the fit warns and records the
    share per layer; a scale large enough to keep it invertible silences both."""
    gen = torch.Generator().manual_seed(0)
    h, hp, hn = (torch.randn(40, 1, 64, generator=gen, dtype=torch.float64) for _ in range(3))
    h[:, 0, 3] = 400.0
    with pytest.warns(UserWarning, match="layer 0 .*feature_scales"):
        editor = fit_from_arrays(h, hp, hn, feature="tanh")
    assert editor.metadata["layer_stats"][0]["clipped_share"] == pytest.approx(1 / 64)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = fit_from_arrays(h, hp, hn, feature="tanh", feature_scales=[100.0])
        fit_from_arrays(h, hp, hn)  # linear: nothing to clip
    assert wide.metadata["layer_stats"][0]["clipped_share"] == 0.0


def test_thin_route_holds_no_d_by_d_sums_and_auto_switches_to_the_same_sums():
    g = torch.Generator().manual_seed(11)
    h, hp, hn = (torch.randn(20, 2, 16, generator=g) for _ in range(3))
    thin = SpectralFitter(range(2), 16, 2, centered=True, svd="thin")
    thin.update(h[:10], hp[:10], hn[:10])
    thin.fit(pos_ratio=0.9, neg_ratio=0.9)
    assert thin._cross is None  # O(N L d): the (L, d, d) sums were never allocated
    assert not thin._spectra  # nor every layer's full singular vectors at once
    auto = SpectralFitter(range(2), 16, 2, centered=True, svd="auto")
    dense = SpectralFitter(range(2), 16, 2, centered=True, svd="dense")
    auto.update(h[:10], hp[:10], hn[:10])
    assert auto._cross is None and auto.svd_route is SvdRoute.THIN
    auto.update(h[10:], hp[10:], hn[10:])  # N = 20 reaches d = 16: dense from here
    dense.update(h, hp, hn)
    assert auto.svd_route is SvdRoute.DENSE
    torch.testing.assert_close(auto.cross_pos, dense.cross_pos, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(auto.cross_neg, dense.cross_neg, rtol=1e-12, atol=1e-12)
