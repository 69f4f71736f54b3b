"""Tests for multisym.data.views and the geometric and photometric steps it runs
(CPU; the CUDA comparison is skipped without a GPU)."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torch.utils._python_dispatch import TorchDispatchMode

from multisym.data.geometric import crop_resize, sample_crop_boxes
from multisym.data.photometric import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    gaussian_blur,
    hsv_to_rgb,
    rgb_to_hsv,
)
from multisym.data.views import ViewSpec, make_view_batch, make_views, resize_center

IDENTITY = dict(
    crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
    grayscale_p=0.0, blur_p=0.0, solarize_p=0.0,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_images(b, c, h, w, seed=0):
    return torch.rand(b, c, h, w, generator=gen(seed))


def full_spec(size, **overrides):
    return ViewSpec(size=size, **{**IDENTITY, **overrides})


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [1, 7, 16, 32])
def test_shape_dtype_range(channels, size):
    images = rand_images(5, channels, 24, 20)
    spec = ViewSpec(size=size, blur_p=0.5, solarize_p=0.3)
    out = make_views(images, spec, gen(1))
    assert out.shape == (5, channels, size, size)
    assert out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.isfinite(out).all()


def test_double_input_is_cast_to_float32():
    out = make_views(rand_images(2, 3, 8, 8).double(), ViewSpec(size=4), gen(0))
    assert out.dtype == torch.float32


def test_seed_determinism():
    images = rand_images(8, 3, 32, 32)
    spec = ViewSpec(size=16, blur_p=0.5, solarize_p=0.2)
    a = make_views(images, spec, gen(123))
    b = make_views(images, spec, gen(123))
    c = make_views(images, spec, gen(124))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_global_rng_untouched():
    state = torch.random.get_rng_state()
    make_views(rand_images(4, 3, 16, 16), ViewSpec(size=8, blur_p=0.5), gen(0))
    assert torch.equal(state, torch.random.get_rng_state())


def test_cuda_generator_rejected():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    with pytest.raises(ValueError, match="CPU"):
        make_views(rand_images(2, 3, 8, 8), ViewSpec(size=4), torch.Generator(device="cuda"))


def test_identity_spec():
    images = rand_images(4, 3, 8, 8)
    out = make_views(images, full_spec(8), gen(0))
    assert torch.allclose(out, images, atol=1e-5)


def test_identity_spec_grayscale():
    images = rand_images(3, 1, 8, 8)
    assert torch.allclose(make_views(images, full_spec(8), gen(0)), images, atol=1e-5)


def test_flip():
    images = rand_images(4, 3, 8, 8)
    out = make_views(images, full_spec(8, flip_p=1.0), gen(0))
    assert torch.allclose(out, images.flip(-1), atol=1e-5)


def test_solarize():
    images = rand_images(4, 3, 8, 8)
    out = make_views(images, full_spec(8, solarize_p=1.0), gen(0))
    expected = torch.where(images >= 0.5, 1.0 - images, images)
    assert torch.allclose(out, expected, atol=1e-5)


def test_grayscale():
    images = rand_images(4, 3, 8, 8)
    out = make_views(images, full_spec(8, grayscale_p=1.0), gen(0))
    y = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    assert torch.allclose(out, y[:, None].expand(-1, 3, -1, -1), atol=1e-5)


def test_grayscale_noop_for_single_channel():
    images = rand_images(4, 1, 8, 8)
    out = make_views(images, full_spec(8, grayscale_p=1.0), gen(0))
    assert torch.allclose(out, images, atol=1e-5)


def test_crop_boxes_area_and_bounds():
    height, width = 37, 53
    scale, ratio = (0.2, 0.6), (3 / 4, 4 / 3)
    boxes = sample_crop_boxes(2000, height, width, scale, ratio, gen(5))
    x1, y1, x2, y2 = boxes.unbind(1)
    w, h = x2 - x1, y2 - y1
    assert (x1 >= 0).all() and (y1 >= 0).all()
    assert (x2 <= width).all() and (y2 <= height).all()
    assert (w >= 1).all() and (h >= 1).all()
    assert torch.equal(boxes, boxes.round())
    frac = w * h / (height * width)
    # Rounding w and h to integers moves the area by at most about (w + h + 1) pixels.
    slack = (w + h + 1) / (height * width)
    assert (frac >= scale[0] - slack).all() and (frac <= scale[1] + slack).all()
    r = w / h
    r_slack = 1.0 / h + r / h
    assert (r >= ratio[0] - r_slack).all() and (r <= ratio[1] + r_slack).all()
    # Crops are spread over the image, not stuck in a corner.
    assert x1.max() > 0 and y1.max() > 0


def test_crop_boxes_exact_quarter():
    boxes = sample_crop_boxes(500, 16, 16, (0.25, 0.25), (1.0, 1.0), gen(2))
    assert torch.all(boxes[:, 2] - boxes[:, 0] == 8)
    assert torch.all(boxes[:, 3] - boxes[:, 1] == 8)
    assert len(torch.unique(boxes[:, :2], dim=0)) > 10


def test_crop_boxes_fallback():
    # A 4x40 image cannot hold a square crop of half its area: centre fallback.
    boxes = sample_crop_boxes(10, 4, 40, (0.5, 0.5), (1.0, 1.0), gen(0))
    expected = torch.tensor([18.0, 0.0, 22.0, 4.0]).expand(10, 4)
    assert torch.equal(boxes, expected)


def test_quarter_crop_of_quadrant_image():
    # Each 8x8 quadrant of a 16x16 image is constant; an exact 8x8 crop resampled to 8x8
    # must reproduce the integer-shifted window of the source image.
    quad = torch.tensor([[0.1, 0.4], [0.7, 0.9]])
    images = quad.repeat_interleave(8, 0).repeat_interleave(8, 1).expand(6, 3, 16, 16)
    spec = ViewSpec(size=8, crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0), flip_p=0.0,
                    jitter_p=0.0, grayscale_p=0.0)
    g = gen(9)
    boxes = sample_crop_boxes(6, 16, 16, spec.crop_scale, spec.crop_ratio, gen(9))
    out = make_views(images, spec, g)
    for i, (x1, y1, _, _) in enumerate(boxes.long().tolist()):
        window = images[i, :, y1:y1 + 8, x1:x1 + 8]
        assert torch.allclose(out[i], window, atol=1e-5)


def test_samples_are_independent():
    images = rand_images(1, 3, 32, 32).expand(16, -1, -1, -1)
    out = make_views(images, ViewSpec(size=16), gen(0))
    flat = out.flatten(1)
    dists = torch.cdist(flat, flat)
    off_diag = dists[~torch.eye(16, dtype=torch.bool)]
    assert (off_diag > 1e-3).all()


class CountedCalls(TorchDispatchMode):
    """Counts the ATen operations run under it, by name."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_views_drawn_together_are_the_views_drawn_one_spec_at_a_time(channels, dtype):
    """The Eq member's three specs (two 24-px views with other probabilities,
    a 12-px small crop): the same random numbers in the same order, the same
    views (the blur's convolution may round differently for another batch),
    and each operation launched once per output size."""
    images = rand_images(16, channels, 40, 48)
    specs = [ViewSpec(size=24, blur_p=1.0), ViewSpec(size=24, blur_p=0.1, solarize_p=0.2, brightness=0.6),
             ViewSpec(size=12, crop_scale=(0.05, 0.14), blur_p=0.1)]
    one_at_a_time, together = gen(5), gen(5)
    expected = [make_views(images, spec, one_at_a_time, dtype) for spec in specs]
    with CountedCalls() as counted:
        views = make_view_batch(images, specs, together, dtype)
    assert [v.shape for v in views] == [e.shape for e in expected] and all(v.dtype == dtype for v in views)
    for view, reference in zip(views, expected):
        torch.testing.assert_close(view, reference, rtol=0, atol=2 * torch.finfo(dtype).eps)
    assert torch.equal(torch.rand(4, generator=one_at_a_time), torch.rand(4, generator=together))
    assert counted.calls["roi_align"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_device_consistency():
    images = rand_images(8, 3, 32, 32)
    spec = ViewSpec(size=16, blur_p=0.5, solarize_p=0.2)
    cpu = make_views(images, spec, gen(3))
    cuda = make_views(images.cuda(), spec, gen(3))
    assert cuda.device.type == "cuda"
    assert torch.allclose(cpu, cuda.cpu(), atol=1e-4)


def test_blur_constant_and_variance():
    const = torch.full((4, 3, 16, 16), 0.3)
    spec = full_spec(16, blur_p=1.0, blur_sigma=(1.0, 2.0))
    assert torch.allclose(make_views(const, spec, gen(0)), const, atol=1e-5)
    images = rand_images(4, 3, 16, 16)
    out = make_views(images, spec, gen(0))
    assert (out.var(dim=(1, 2, 3)) < 0.5 * images.var(dim=(1, 2, 3))).all()


def test_blur_matches_torchvision():
    images = rand_images(3, 3, 20, 20)
    sigma = torch.tensor([0.5, 1.0, 1.7])
    k = blur_kernel_size(2.0, 20)
    out = gaussian_blur(images, sigma, k)
    for i in range(3):
        ref = TF.gaussian_blur(images[i:i + 1], [k, k], [sigma[i].item()] * 2)
        assert torch.allclose(out[i:i + 1], ref, atol=1e-5)


def test_blur_kernel_size():
    assert blur_kernel_size(2.0, 224) == 13
    assert blur_kernel_size(2.0, 8) == 7
    assert blur_kernel_size(2.0, 9) == 9
    assert blur_kernel_size(2.0, 1) == 1


def test_blur_on_tiny_images():
    out = make_views(rand_images(2, 3, 8, 8), ViewSpec(size=2, blur_p=1.0), gen(0))
    assert out.shape == (2, 3, 2, 2)


def test_blur_only_touches_drawn_samples():
    images = rand_images(16, 3, 16, 16)
    spec = full_spec(16, blur_p=0.5)
    out = make_views(images, spec, gen(4))
    same = (out - images).abs().flatten(1).max(dim=1).values < 1e-5
    assert 0 < same.sum() < 16


def test_jitter_ops_match_torchvision():
    # torchvision's luma uses 0.2989 for red (ITU 601: 0.299), hence atol 1e-3 not 1e-5.
    images = rand_images(4, 3, 12, 12)
    f = torch.tensor([0.6, 1.0, 1.3, 1.4])
    shift = torch.tensor([-0.1, 0.0, 0.05, 0.5])
    for ours, theirs, p in (
        (adjust_brightness, TF.adjust_brightness, f),
        (adjust_contrast, TF.adjust_contrast, f),
        (adjust_saturation, TF.adjust_saturation, f),
        (adjust_hue, TF.adjust_hue, shift),
    ):
        out = ours(images, p)
        for i in range(4):
            ref = theirs(images[i], p[i].item())
            assert torch.allclose(out[i], ref, atol=1e-3), ours.__name__


def test_hsv_roundtrip():
    images = torch.cat([rand_images(4, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5),
                        torch.zeros(1, 3, 8, 8)])
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(images)), images, atol=1e-5)


def test_jitter_changes_colours_and_stays_in_range():
    images = rand_images(8, 3, 16, 16)
    out = make_views(images, full_spec(16, jitter_p=1.0), gen(0))
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, images, atol=1e-3)


def test_resize_center():
    images = rand_images(3, 3, 32, 24)
    out = resize_center(images, 16)
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(resize_center(images[..., :24, :], 24), images[..., :24, :], atol=1e-6)
    const = torch.full((2, 1, 30, 30), 0.7)
    assert torch.allclose(resize_center(const, 10), const[..., :10, :10], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(flip_p=1.5), "flip_p"),
        (dict(jitter_p=-0.1), "jitter_p"),
        (dict(solarize_p=math.nan), "solarize_p"),
        (dict(size=0), "size"),
        (dict(crop_scale=(0.5, 0.2)), "crop_scale"),
        (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
        (dict(crop_ratio=(0.0, 1.0)), "crop_ratio"),
        (dict(brightness=-0.1), "brightness"),
        (dict(hue=0.6), "hue"),
        (dict(blur_sigma=(2.0, 1.0)), "blur_sigma"),
    ],
)
def test_invalid_spec(kwargs, field):
    kwargs = {"size": 8, **kwargs}
    with pytest.raises(ValueError, match=field):
        ViewSpec(**kwargs)


def test_invalid_probability_message():
    with pytest.raises(ValueError) as err:
        ViewSpec(size=8, grayscale_p=2.0)
    msg = str(err.value)
    assert "grayscale_p" in msg and "2.0" in msg and "[0, 1]" in msg



# ---------------------------------------------------- against torchvision's CPU transforms
# The views are drawn on batched tensors on any device; torchvision's per-image
# transforms are what a CPU data loader applies. Same distributions, and the
# same outputs for the same parameters within the tolerance each test states.


def _box_statistics(boxes: torch.Tensor, height: int, width: int) -> list[torch.Tensor]:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return [w * h / (height * width), torch.log(w / h),
            (boxes[:, 0] + w / 2) / width, (boxes[:, 1] + h / 2) / height]


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.05, 0.14)])
def test_crop_parameters_follow_torchvisions_random_resized_crop(scale):
    """Area fraction, log aspect ratio and the box centre, normalised: two-sample
    Kolmogorov-Smirnov tests over 3,000 draws each do not tell them apart (p > 1e-3)."""
    from scipy.stats import ks_2samp
    from torchvision.transforms import RandomResizedCrop

    height, width, n, ratio = 240, 320, 3000, (3 / 4, 4 / 3)
    ours = sample_crop_boxes(n, height, width, scale, ratio, gen(0))
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    theirs = []
    for _ in range(n):
        top, left, h, w = RandomResizedCrop.get_params(image, list(scale), list(ratio))
        theirs.append([left, top, left + w, top + h])
    theirs = torch.tensor(theirs, dtype=torch.float32)
    for name, a, b in zip(("area", "log ratio", "centre x", "centre y"),
                          _box_statistics(ours, height, width), _box_statistics(theirs, height, width)):
        assert ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3, name


def test_draws_of_flip_jitter_grayscale_blur_and_solarize_have_their_probabilities():
    """Each op is applied to a Binomial(n, p) count of samples: within 4 sigma."""
    n = 4000
    spec = ViewSpec(size=4, flip_p=0.5, jitter_p=0.8, grayscale_p=0.2, blur_p=0.1, solarize_p=0.2)
    images = torch.zeros(n, 3, 4, 4)
    images[..., 0] = 1.0  # a left column: a flip moves it
    out = make_views(images, ViewSpec(size=4, **{**IDENTITY, "flip_p": spec.flip_p}), gen(1))
    flipped = (out[:, 0, 0, 3] > 0.5).float().mean().item()
    assert abs(flipped - 0.5) < 4 * math.sqrt(0.25 / n)
    for name, p in (("grayscale_p", 0.2), ("solarize_p", 0.2)):
        coloured = torch.zeros(n, 3, 4, 4)
        coloured[:, 0] = 0.8  # red: grayscale makes it 0.239 in every channel, solarize 0.2
        out = make_views(coloured, ViewSpec(size=4, **{**IDENTITY, name: p}), gen(2))
        changed = (out[:, 0, 0, 0] < 0.5).float().mean().item()
        assert abs(changed - p) < 4 * math.sqrt(p * (1 - p) / n), name


def test_flip_grayscale_and_solarize_match_torchvision():
    """Exactly, except grayscale: torchvision weighs red 0.2989, ITU-R 601 0.299."""
    from torchvision.transforms.v2 import functional as F

    images = rand_images(4, 3, 12, 12)
    base = make_views(images, full_spec(12), gen(0))  # the whole-image crop, up to roi_align's round-off
    assert torch.allclose(base, images, atol=1e-5)
    assert torch.equal(make_views(images, full_spec(12, flip_p=1.0), gen(0)), F.horizontal_flip(base))
    assert torch.equal(make_views(images, full_spec(12, solarize_p=1.0), gen(0)), F.solarize(base, 0.5))
    gray = make_views(images, full_spec(12, grayscale_p=1.0), gen(0))
    assert torch.allclose(gray, F.rgb_to_grayscale(base, num_output_channels=3), atol=1e-3)


@pytest.mark.parametrize("box", [(10, 20, 110, 120), (100, 30, 300, 200), (50, 60, 90, 100)])
def test_resized_crop_matches_torchvision_inside_the_box_when_it_enlarges(box):
    """A box smaller than the output is bilinear interpolation on both paths:
    equal to 1e-4 away from the edge (4 px), where ours may read the pixels
    just outside the box and a crop-then-resize cannot."""
    from torchvision.transforms.v2 import functional as F

    image = rand_images(1, 3, 240, 320)
    x1, y1, x2, y2 = box
    ours = crop_resize(image, torch.tensor([box], dtype=torch.float32), 224)
    theirs = F.resized_crop(image, y1, x1, y2 - y1, x2 - x1, [224, 224], antialias=True)
    assert torch.allclose(ours[..., 4:-4, 4:-4], theirs[..., 4:-4, 4:-4], atol=1e-4)


def test_resized_crop_of_a_photograph_like_image_is_close_to_torchvision_for_any_box():
    """On a smooth image, shrinking boxes too (an area average against
    torchvision's antialiasing triangle filter): mean |difference| < 1e-3, max < 0.05."""
    import torch.nn.functional as NF
    from torchvision.transforms.v2 import functional as F

    image = NF.interpolate(rand_images(1, 3, 12, 16), size=(240, 320), mode="bicubic").clamp(0, 1)
    boxes = sample_crop_boxes(12, 240, 320, (0.08, 1.0), (3 / 4, 4 / 3), gen(5))
    ours = crop_resize(image.expand(12, -1, -1, -1), boxes, 224)
    for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        theirs = F.resized_crop(image, y1, x1, y2 - y1, x2 - x1, [224, 224], antialias=True)
        difference = (ours[i] - theirs[0]).abs()
        assert difference.mean() < 1e-3 and difference.max() < 0.05, (x1, y1, x2, y2)


def test_float16_views_are_the_float32_views_to_a_pixel_level():
    """After the crop (always float32) every op in float16: max |d| < 0.01
    (the hue round trip), mean < 5e-4; the crop alone within 5e-4."""
    images = rand_images(64, 3, 40, 40)
    for spec, bound in ((full_spec(32, crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3)), 5e-4),
                        (ViewSpec(size=32, blur_p=0.5, solarize_p=0.2), 0.01)):
        full = make_views(images, spec, gen(0))
        half = make_views(images, spec, gen(0), torch.float16)
        assert half.dtype == torch.float16
        difference = (half.float() - full).abs()
        assert difference.max() < bound and difference.mean() < 5e-4
