"""Tests for spectral_edit.core.features (Φ-SEA feature maps)."""

from __future__ import annotations

import math

import pytest
import torch

from spectral_edit.core.features import (
    FeatureMap,
    clamp_margin,
    get_feature_map,
    rms_scale,
)
from spectral_edit.core.options import Feature

FEATURE_NAMES = Feature.values()

NONLINEAR = ("tanh", "elu", "squared-exponential")


def _activations(dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Residual-stream-like activations: N(0, 30²) with a few ±300 outliers, shape (32, 128)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 128, generator=gen, dtype=torch.float64) * 30.0
    x[::7, 5] = 300.0
    x[3::7, 17] = -300.0
    return x.to(dtype)


def _inverse(fmap: FeatureMap, y: torch.Tensor, s: float, ref: torch.Tensor) -> torch.Tensor:
    return fmap.inverse(y, s, reference=ref if fmap.needs_reference else None)


# --------------------------------------------------------------------------- names


def test_feature_names_and_lookup() -> None:
    assert FEATURE_NAMES == ("linear", "tanh", "elu", "squared-exponential")
    for name in FEATURE_NAMES:
        assert get_feature_map(name).name == name
    assert get_feature_map("Squared_Exponential").name == "squared-exponential"


def test_bad_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        get_feature_map("sigmoid")
    message = str(info.value)
    assert "sigmoid" in message
    for name in FEATURE_NAMES:
        assert name in message
    with pytest.raises(ValueError, match="valid names"):
        FeatureMap("relu")


# --------------------------------------------------------------------------- linear


def test_linear_is_exact_identity_and_ignores_scale() -> None:
    x = _activations()
    fmap = get_feature_map("linear")
    assert torch.equal(fmap.forward(x, 123.0), x)
    assert torch.equal(fmap.inverse(x, 0.5), x)
    assert torch.equal(fmap.inverse(fmap.forward(x, 7.0), 7.0), x)


# --------------------------------------------------------------------------- forward


def test_forward_matches_definition_with_scale() -> None:
    x = _activations(torch.float64)
    s = 25.0
    u = x / s
    torch.testing.assert_close(get_feature_map("tanh").forward(x, s), torch.tanh(u))
    elu_ref = torch.where(u >= 0, u, torch.exp(u) - 1)
    torch.testing.assert_close(get_feature_map("elu").forward(x, s), elu_ref)
    torch.testing.assert_close(
        get_feature_map("squared-exponential").forward(x, s), torch.exp(-(u**2) / 2)
    )


def test_forward_ranges() -> None:
    x = _activations()
    s = rms_scale(x)
    t = get_feature_map("tanh").forward(x, s)
    e = get_feature_map("elu").forward(x, s)
    g = get_feature_map("squared-exponential").forward(x, s)
    assert t.abs().max() <= 1.0
    assert e.min() >= -1.0
    assert g.min() >= 0.0 and g.max() <= 1.0


def test_per_feature_scale_broadcasts() -> None:
    x = _activations()
    scale = torch.linspace(5.0, 50.0, x.shape[-1])
    fmap = get_feature_map("tanh")
    out = fmap.forward(x, scale)
    for j in (0, 40, 127):
        torch.testing.assert_close(out[:, j], fmap.forward(x[:, j], float(scale[j])))
    back = fmap.inverse(out, scale)
    inside = (x / scale).abs() <= 5.0
    assert (back - x).abs()[inside].max() <= 1e-3 * scale.expand_as(x)[inside].max()
    assert not torch.allclose(back, fmap.inverse(out, 20.0))  # the scale really is per feature


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_scale_rejected(bad: float) -> None:
    x = _activations()
    for name in NONLINEAR:
        with pytest.raises(ValueError, match="scale"):
            get_feature_map(name).forward(x, bad)
    with pytest.raises(ValueError, match="scale"):
        get_feature_map("tanh").forward(x, torch.tensor([1.0, bad]).reshape(2, 1).expand(2, 128))


# --------------------------------------------------------------------------- round trips


def test_tanh_round_trip_inside_non_saturated_range() -> None:
    """float32: |x/s| ≤ 5 comes back to within 1e-3·s (error ≈ ulp(y)/(1 − y²))."""
    x = _activations()
    s = rms_scale(x)
    fmap = get_feature_map("tanh")
    back = fmap.inverse(fmap.forward(x, s), s)
    inside = (x / s).abs() <= 5.0
    assert inside.float().mean() > 0.99
    err = (back - x).abs()[inside]
    assert err.max() <= 1e-3 * s
    # well inside the range the round trip is near float32 precision
    core = (x / s).abs() <= 1.0
    torch.testing.assert_close(back[core], x[core], rtol=1e-5, atol=1e-4)


def test_tanh_saturated_values_are_clamped_finite_and_keep_sign() -> None:
    x = _activations()
    s = rms_scale(x)
    fmap = get_feature_map("tanh")
    back = fmap.inverse(fmap.forward(x, s), s)
    assert torch.isfinite(back).all()
    bound = s * math.atanh(1.0 - clamp_margin(torch.float32))
    outliers = x.abs() >= 299.0
    # beyond |x/s| ≈ atanh(1 - ε) ≈ 8.66 float32 tanh is indistinguishable from ±1
    assert (x[outliers] / s).abs().min() > 8.7
    assert torch.equal(torch.sign(back[outliers]), torch.sign(x[outliers]))
    torch.testing.assert_close(back[outliers].abs(), torch.full_like(back[outliers], bound))
    # values outside (-1, 1) (an edited z can leave the range) stay finite and bounded
    z = torch.tensor([-5.0, -1.0, 1.0, 1.5, float("inf"), float("-inf")])
    out = fmap.inverse(z, s)
    assert torch.isfinite(out).all()
    assert out.abs().max() <= bound * (1 + 1e-6)


def test_elu_round_trip() -> None:
    x = _activations()
    s = rms_scale(x)
    fmap = get_feature_map("elu")
    back = fmap.inverse(fmap.forward(x, s), s)
    assert torch.isfinite(back).all()
    # positive side: identity up to the rounding of x/s*s
    pos = x >= 0
    torch.testing.assert_close(back[pos], x[pos], rtol=1e-6, atol=1e-5)
    # negative side: error ≈ ulp(y)/(1 + y) grows like exp(|x|/s); |x/s| ≤ 5 is tight
    neg = (x < 0) & ((x / s) >= -5.0)
    torch.testing.assert_close(back[neg], x[neg], rtol=1e-5, atol=1e-4 * s)
    # the -300 outliers (x/s ≈ -10) are still recovered to a few hundredths
    far = x <= -299.0
    assert (back[far] - x[far]).abs().max() < 5e-3 * s


def test_elu_inverse_clamps_below_minus_one() -> None:
    s = 30.0
    fmap = get_feature_map("elu")
    z = torch.tensor([-1.0, -2.0, float("-inf"), -0.5, 0.0, 2.0])
    out = fmap.inverse(z, s)
    assert torch.isfinite(out).all()
    floor = s * math.log(clamp_margin(torch.float32))
    torch.testing.assert_close(out[:3], torch.full((3,), floor))
    torch.testing.assert_close(out[3:], torch.tensor([s * math.log(0.5), 0.0, 2.0 * s]))


def test_squared_exponential_round_trip_with_reference() -> None:
    x = _activations()
    s = rms_scale(x)
    fmap = get_feature_map("squared-exponential")
    y = fmap.forward(x, s)
    back = fmap.inverse(y, s, reference=x)
    assert torch.isfinite(back).all()
    # near 0, y rounds to 1 within one ulp: absolute error ≤ sqrt(2·ulp)·s ≈ 3.5e-4·s
    torch.testing.assert_close(back, x, rtol=1e-4, atol=5e-4 * s)
    # outliers (x/s ≈ ±10) keep both magnitude and sign
    out = x.abs() >= 299.0
    torch.testing.assert_close(back[out], x[out], rtol=1e-4, atol=1e-3)


def test_squared_exponential_sign_comes_from_reference() -> None:
    x = _activations()
    s = rms_scale(x)
    fmap = get_feature_map("squared-exponential")
    y = fmap.forward(x, s)
    flipped = fmap.inverse(y, s, reference=-x)
    torch.testing.assert_close(flipped, -fmap.inverse(y, s, reference=x))
    # magnitude does not depend on the reference, only the sign does
    other = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    mixed = fmap.inverse(y, s, reference=other)
    torch.testing.assert_close(mixed.abs(), x.abs(), rtol=1e-4, atol=5e-4 * s)
    nonzero = mixed != 0
    assert torch.equal(torch.sign(mixed[nonzero]), torch.sign(other[nonzero]))
    # sign(0) (and -0.0) is +1
    zeros = torch.tensor([0.0, -0.0, 0.0])
    res = fmap.inverse(torch.tensor([0.5, 0.5, 0.5]), 2.0, reference=zeros)
    assert (res > 0).all()
    torch.testing.assert_close(res, torch.full((3,), 2.0 * math.sqrt(-2 * math.log(0.5))))


def test_squared_exponential_needs_reference_and_clamps() -> None:
    fmap = get_feature_map("squared-exponential")
    y = torch.tensor([0.5, 0.1])
    with pytest.raises(ValueError, match="reference"):
        fmap.inverse(y, 1.0)
    with pytest.raises(ValueError, match="shape"):
        fmap.inverse(y, 1.0, reference=torch.ones(3))
    z = torch.tensor([-0.3, 0.0, 1.0, 1.7])
    out = fmap.inverse(z, 10.0, reference=torch.ones(4))
    assert torch.isfinite(out).all()
    assert out[2] == 0 and out[3] == 0  # y ≥ 1 → 0
    bound = 10.0 * math.sqrt(-2 * math.log(torch.finfo(torch.float32).tiny))
    torch.testing.assert_close(out[:2], torch.full((2,), bound))


def test_reference_ignored_for_injective_maps() -> None:
    x = _activations()
    s = rms_scale(x)
    for name in ("tanh", "elu"):
        fmap = get_feature_map(name)
        y = fmap.forward(x, s)
        assert torch.equal(fmap.inverse(y, s), fmap.inverse(y, s, reference=-x))


def test_float64_round_trip_is_tighter() -> None:
    x = _activations(torch.float64)
    s = rms_scale(x)
    for name in ("tanh", "elu"):
        fmap = get_feature_map(name)
        y = fmap.forward(x, s)
        assert y.dtype == torch.float64
        inside = (x / s).abs() <= 5.0
        torch.testing.assert_close(fmap.inverse(y, s)[inside], x[inside], rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NONLINEAR)
def test_half_precision_stays_finite_and_keeps_dtype(dtype: torch.dtype, name: str) -> None:
    x = _activations(dtype)
    s = rms_scale(x)
    fmap = get_feature_map(name)
    y = fmap.forward(x, s)
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.isfinite(y).all()
    back = _inverse(fmap, y, s, x)
    assert back.dtype == dtype
    assert torch.isfinite(back).all()
    # loose round trip where φ is far from saturation (tolerance scales with the dtype;
    # the Gaussian is flat at 0, so there one ulp of y costs sqrt(2·ulp)·s)
    core = (x.float() / s).abs() <= 1.0
    eps = torch.finfo(dtype).eps
    tol = (2 * math.sqrt(eps) if fmap.needs_reference else 20 * eps) * s
    assert (back.float() - x.float()).abs()[core].max() <= tol
    # signs survive even where the map saturates (outliers)
    out = x.abs() >= 299.0
    assert torch.equal(torch.sign(back[out]), torch.sign(x[out]))


def test_integer_input_rejected() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        get_feature_map("tanh").forward(torch.arange(4), 1.0)


# --------------------------------------------------------------------------- rms


def test_rms_scale() -> None:
    assert rms_scale(torch.tensor([[3.0, -4.0]])) == pytest.approx(math.sqrt(12.5))
    x = _activations()
    assert rms_scale(x) == pytest.approx(float(x.double().pow(2).mean().sqrt()))
    assert 30.0 < rms_scale(x) < 40.0  # N(0, 30²) plus a few ±300 outliers
    with pytest.raises(ValueError, match="empty"):
        rms_scale(torch.empty(0, 4))
    with pytest.raises(ValueError, match="scale"):
        rms_scale(torch.zeros(3, 4))


# --------------------------------------------------------------------------- clipping


def test_clipped_marks_where_the_float32_round_trip_is_lossy() -> None:
    u = torch.tensor([0.0, 0.5, -3.0, 8.0, -8.0, 9.5, -9.5, 20.0, -20.0], dtype=torch.float64)
    expected = {
        "linear": [False] * 9,
        # 1 − tanh(u) falls to a few float32 spacings beyond |u| ≈ 6.9, then to 0 (≈ 8.6)
        "tanh": [False, False, False, True, True, True, True, True, True],
        # exp(u) − 1 keeps too few digits of exp(u) below u ≈ −13.0
        "elu": [False] * 8 + [True],
        # exp(−u²/2) underflows below the smallest normal float32 beyond |u| ≈ 13.2
        "squared-exponential": [False] * 7 + [True, True],
    }
    for name, mask in expected.items():
        assert get_feature_map(name).clipped(u).tolist() == mask, name
        assert get_feature_map(name).clipped(u.reshape(3, 3)).shape == (3, 3)
