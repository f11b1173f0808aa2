"""PSNR/SSIM (Y channel, MATLAB convention) against scikit-image and the published Rain100L figure;
NIQE against an independently written slow reference; BRISQUE wiring against OpenCV itself.

NIQE was also cross-checked once (not in CI: pyiqa pulls in its own torch) against pyiqa 0.1.16's
``niqe`` core run in float64 on the same MATLAB-gray images of the RealRain test photos: 8 of 21
images agree to < 1e-6, 11 to < 1e-2 (AGGD shape grid ties in near-flat blocks), and two differ by
0.45 / 1.7 — 134.jpg has only two 96×96 blocks (degenerate covariance) and 50.jpg has saturated flat
blocks whose MSCN values are float rounding noise in either implementation.
"""
import math
import os

import numpy as np
import pytest
from PIL import Image

from ddsa_model.pipeline import iqa
from ddsa_model.pipeline.metrics import psnr, psnr_y, rgb_to_y, ssim, ssim_y, to_uint8

skm = pytest.importorskip("skimage.metrics")
skc = pytest.importorskip("skimage.color")


def _pair(root, name):
    a = np.asarray(Image.open(os.path.join(root, "input", name)).convert("RGB"))
    b = np.asarray(Image.open(os.path.join(root, "target", name)).convert("RGB"))
    return a, b


def test_y_channel_matches_skimage_rgb2ycbcr():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    ref = skc.rgb2ycbcr(img)[..., 0]  # MATLAB formula on double input, Y in [16, 235]
    np.testing.assert_allclose(rgb_to_y(img, round_y=False), ref, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(rgb_to_y(img), np.floor(ref + 0.5))


def test_psnr_ssim_equal_skimage_on_real_pairs(shared_data):
    root = os.path.join(shared_data, "Rain100L")
    for name in sorted(os.listdir(os.path.join(root, "input")))[:6]:
        a, b = _pair(root, name)
        ya, yb = rgb_to_y(a), rgb_to_y(b)
        ref_psnr = skm.peak_signal_noise_ratio(yb, ya, data_range=255)
        ref_ssim = skm.structural_similarity(ya, yb, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False, data_range=255)
        assert abs(psnr_y(a, b) - ref_psnr) <= 1e-6
        assert abs(ssim_y(a, b) - ref_ssim) <= 1e-6
        # crop_border trims both images before the metric
        ref_c = skm.structural_similarity(ya[4:-4, 4:-4], yb[4:-4, 4:-4], gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False, data_range=255)
        assert abs(ssim_y(a, b, crop_border=4) - ref_c) <= 1e-6


def test_rain100l_input_vs_target_published_figure(shared_data):
    root = os.path.join(shared_data, "Rain100L")
    names = sorted(os.listdir(os.path.join(root, "input")))
    assert len(names) == 100
    scores = np.array([(psnr_y(a, b), ssim_y(a, b)) for a, b in (_pair(root, n) for n in names)])
    p, s = scores.mean(axis=0)
    assert round(p, 2) == 26.90, p
    assert round(s, 3) == 0.838, s


def test_float_and_tensor_inputs_are_quantised_like_a_saved_png(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    out = rng.random((20, 24, 3)).astype(np.float32) * 1.2 - 0.1  # network output, slightly out of range
    tgt = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    # What a user gets after saving the output as PNG with Pillow and reading it back.
    Image.fromarray(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)).save(tmp_path / "o.png")
    saved = np.asarray(Image.open(tmp_path / "o.png"))
    assert psnr_y(out, tgt) == psnr_y(saved, tgt)
    assert ssim_y(torch.from_numpy(out).permute(2, 0, 1)[None], tgt) == ssim_y(saved, tgt)


def test_edge_cases_and_errors():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert psnr_y(a, a) == math.inf
    assert ssim_y(a, a) == pytest.approx(1.0, abs=1e-12)
    gray = a[..., 0]
    assert psnr_y(gray, gray[::-1]) == pytest.approx(psnr(gray.astype(float), gray[::-1].astype(float)))
    with pytest.raises(ValueError, match="shape"):
        psnr_y(a, a[:8])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 30)), np.zeros((8, 30)))
    with pytest.raises(ValueError, match="crop_border"):
        psnr_y(a, a, crop_border=8)
    with pytest.raises(ValueError, match="dtype"):
        to_uint8(np.zeros((4, 4), np.int32))


# ---------------------------------------------------------------- NIQE: independent slow reference

def _ref_imresize_half(img):
    """MATLAB imresize(img, 0.5, 'bicubic') written out per output sample, columns then rows."""
    def cubic(x):
        x = abs(x)
        if x <= 1:
            return 1.5 * x**3 - 2.5 * x**2 + 1
        if x <= 2:
            return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
        return 0.0

    def along(a):  # resample axis 0
        n = a.shape[0]
        rows = []
        for i in range(1, math.ceil(n / 2) + 1):
            centre = 2 * i - 0.5  # i / 0.5 + 0.5 * (1 - 2)
            ks = range(math.floor(centre - 4), math.floor(centre - 4) + 10)
            wts = np.array([0.5 * cubic(0.5 * (centre - k)) for k in ks])
            wts /= wts.sum()
            acc = np.zeros(a.shape[1:])
            for k, wk in zip(ks, wts):
                j = k - 1
                while j < 0 or j >= n:  # mirror: ... 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...
                    j = -j - 1 if j < 0 else 2 * n - 1 - j
                acc += wk * a[j]
            rows.append(acc)
        return np.stack(rows)

    return along(along(img).T).T


def _ref_aggd(v):
    from scipy.special import gamma
    v = v.ravel()
    grid = np.array([0.2 + 0.001 * i for i in range(9801)])
    rg = gamma(2 / grid) ** 2 / (gamma(1 / grid) * gamma(3 / grid))
    ls = np.sqrt(np.mean(v[v < 0] ** 2))
    rs = np.sqrt(np.mean(v[v > 0] ** 2))
    gh = ls / rs
    r = np.mean(np.abs(v)) ** 2 / np.mean(v**2)
    rn = r * (gh**3 + 1) * (gh + 1) / (gh**2 + 1) ** 2
    a = grid[np.argmin((rg - rn) ** 2)]
    k = np.sqrt(gamma(1 / a) / gamma(3 / a))
    return a, ls * k, rs * k


def _ref_niqe_features(rgb_u8):
    """(n_blocks, 36) features, blocks in MATLAB (column-major) order."""
    from scipy.ndimage import correlate
    from scipy.special import gamma
    im = np.round(rgb_u8.astype(float) @ [0.298936021293775, 0.587043074451121, 0.114020904255103])
    h, w = (im.shape[0] // 96) * 96, (im.shape[1] // 96) * 96
    im = im[:h, :w]
    x = np.arange(7) - 3.0
    win = np.exp(-(x[:, None] ** 2 + x[None] ** 2) / (2 * (7 / 6) ** 2))
    win /= win.sum()
    feats = []
    for scale in (1, 2):
        mu = correlate(im, win, mode="nearest")
        sd = np.sqrt(np.abs(correlate(im * im, win, mode="nearest") - mu * mu))
        s = (im - mu) / (sd + 1)
        b = 96 // scale
        per = []
        for j in range(w // 96):  # MATLAB blkproc walks columns first
            for i in range(h // 96):
                blk = s[i * b:(i + 1) * b, j * b:(j + 1) * b]
                a, bl, br = _ref_aggd(blk)
                f = [a, (bl + br) / 2]
                for sh in ((0, 1), (1, 0), (1, 1), (1, -1)):
                    a, bl, br = _ref_aggd(blk * np.roll(np.roll(blk, sh[0], 0), sh[1], 1))
                    f += [a, (br - bl) * gamma(2 / a) / gamma(1 / a), bl, br]
                per.append(f)
        feats.append(np.array(per))
        im = _ref_imresize_half(im)
    return np.hstack(feats)


def _ref_niqe(f, mu_p, cov_p):
    mu_d = np.nanmean(f, 0)
    c = f[~np.isnan(f).any(1)]
    c = c - c.mean(0)
    cov_d = c.T @ c / (len(c) - 1)
    d = mu_p - mu_d
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov_d) / 2) @ d))


def test_imresize_half_matches_reference():
    rng = np.random.default_rng(3)
    img = rng.random((13, 10)) * 255
    np.testing.assert_allclose(iqa.matlab_imresize_half(img), _ref_imresize_half(img), rtol=0, atol=1e-10)


def test_niqe_matches_independent_reference_on_real_photos(shared_data):
    """Same features and score as the slow reference. Not bit-identical by design of NIQE: a pixel
    of a locally flat patch has MSCN exactly 0 or ±1e-13 depending on the filter's rounding, which
    moves it between the AGGD's left/right halves and shifts the scale estimates by ~1e-4."""
    pytest.importorskip("scipy")
    params = os.path.join(shared_data, "iqa", "niqe_pris_params.npz")
    p = np.load(params)
    scorer = iqa.NIQE(params)
    for name in ("1.jpg", "71.jpg"):
        rgb = np.asarray(Image.open(os.path.join(shared_data, "RealRain", name)).convert("RGB"))
        ref_f = _ref_niqe_features(rgb)
        gray = iqa._to_gray(rgb)
        bh, bw = gray.shape[0] // 96, gray.shape[1] // 96
        mine = iqa.niqe_features(gray).reshape(bh, bw, 36).transpose(1, 0, 2).reshape(-1, 36)
        np.testing.assert_allclose(mine, ref_f, rtol=0, atol=1e-3, err_msg=name)
        assert np.mean(np.abs(mine - ref_f) <= 1e-9) > 0.95, name
        ref = _ref_niqe(ref_f, p["mu_pris_param"].ravel(), p["cov_pris_param"])
        assert scorer(rgb) == pytest.approx(ref, rel=1e-3), name
    # Lower is better: the clean target of a Rain100L pair scores below its rainy input.
    a, b = _pair(os.path.join(shared_data, "Rain100L"), "1.png")
    assert scorer(b) < scorer(a)


def test_niqe_rejects_small_images_and_bad_params(tmp_path, shared_data):
    params = os.path.join(shared_data, "iqa", "niqe_pris_params.npz")
    with pytest.raises(ValueError, match="at least 96x96"):
        iqa.niqe(np.zeros((95, 300, 3), np.uint8), params)
    with pytest.raises(FileNotFoundError, match="NIQE parameter file"):
        iqa.NIQE(str(tmp_path / "missing.npz"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu=np.zeros(36))
    with pytest.raises(ValueError, match="mu_pris_param"):
        iqa.NIQE(str(bad))


def test_brisque_is_opencv_brisque_and_tracks_distortion(shared_data):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "quality"):
        pytest.skip("OpenCV without the contrib quality module")
    model = os.path.join(shared_data, "iqa", "brisque_model_live.yml")
    rng_file = os.path.join(shared_data, "iqa", "brisque_range_live.yml")
    path = os.path.join(shared_data, "RealRain", "1.jpg")
    bgr = cv2.imread(path)
    direct = cv2.quality.QualityBRISQUE_compute(bgr, model, rng_file)[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    assert iqa.brisque(rgb, model, rng_file) == pytest.approx(direct, abs=1e-4)
    assert iqa.brisque(rgb.astype(np.float32) / 255, model, rng_file) == pytest.approx(direct, abs=1e-4)
    # BRISQUE (lower = better) rises as white noise is added to a clean image.
    clean = np.asarray(Image.open(os.path.join(shared_data, "Rain100L", "target", "1.png")).convert("RGB"))
    noise = np.random.default_rng(4).normal(size=clean.shape)
    scores = [iqa.brisque(np.clip(clean + s * noise, 0, 255).astype(np.uint8), model, rng_file)
              for s in (0, 10, 30)]
    assert scores[0] < scores[1] < scores[2], scores
