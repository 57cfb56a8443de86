"""Image decoding, mode conversion, EXIF orientation, cropping, buckets and filters."""
import io
import math

import numpy as np
import pytest
from PIL import Image

from data_pipeline.filters import Filters
from data_pipeline.transforms import (BadImage, choose_bucket, crop_resize, decode_image, make_buckets,
                                      parse_buckets, place, probe_size)


def _bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_every_mode_becomes_rgb_with_alpha_on_white():
    cases = {
        "CMYK": (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "TIFF", (255, 0, 0)),
        "LA": (Image.new("LA", (4, 4), (0, 0)), "PNG", (255, 255, 255)),  # fully transparent black
        "RGBA": (Image.new("RGBA", (4, 4), (0, 0, 255, 128)), "PNG", (127, 127, 255)),
        "I;16": (Image.fromarray(np.full((4, 4), 65535, np.uint16)), "PNG", (255, 255, 255)),
        "L": (Image.new("L", (4, 4), 100), "PNG", (100, 100, 100)),
        "1": (Image.new("1", (4, 4), 1), "PNG", (255, 255, 255)),
    }
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    cases["P"] = (p, "PNG", (10, 200, 30))
    pt = Image.new("P", (4, 4), 0)
    pt.putpalette([0, 0, 0] * 256)
    pt.info["transparency"] = 0
    cases["P+transparency"] = (pt, "PNG", (255, 255, 255))
    for name, (img, fmt, rgb) in cases.items():
        out = decode_image(_bytes(img, fmt))
        assert out.mode == "RGB", name
        assert np.abs(np.asarray(out)[0, 0].astype(int) - rgb).max() <= 1, (name, np.asarray(out)[0, 0])


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    out = decode_image(_bytes(img, "JPEG", exif=exif, quality=95))
    assert out.size == (20, 40)
    top = np.asarray(out)[2, 10]
    assert top[0] > 200 and top[1] < 60  # the red left half is now on top


def test_bad_bytes_get_their_reason():
    good = _bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    for data, reason in ((b"", "zero_byte"), (b"not an image at all" * 4, "corrupt"),
                         (good[: len(good) // 2], "truncated")):
        with pytest.raises(BadImage) as err:
            decode_image(data)
        assert err.value.reason == reason
    assert probe_size(good[: len(good) // 2]) == (64, 64)  # the header alone looks fine


def test_centre_crop_records_box_and_original_size():
    img = Image.new("RGB", (300, 200))
    placed = crop_resize(img, (64, 64))
    assert placed.size == (64, 64) and placed.original_size == (200, 300)
    assert placed.crop_box == (50, 0, 250, 200)
    assert placed.pixels.shape == (64, 64, 3) and placed.pixels.dtype == np.uint8


def test_centre_crop_takes_the_middle_pixels():
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, 20:40] = 255  # white middle third
    placed = place(Image.fromarray(arr), 20)
    assert placed.crop_box == (20, 0, 40, 20) and placed.pixels.min() == 255


def test_buckets_keep_area_and_divisibility():
    buckets = make_buckets(256, 16)
    assert (256, 256) in buckets
    for h, w in buckets:
        assert h % 16 == 0 and w % 16 == 0
        assert abs(h * w / 256**2 - 1) < 0.15
        assert 1 / 3 <= w / h <= 3
    assert len(buckets) == 13 and {(w, h) for h, w in buckets} == set(buckets)  # symmetric
    aspects = [w / h for h, w in buckets]
    assert aspects == sorted(aspects) and aspects[-1] > 2.5
    assert choose_bucket(400, 200, buckets) == min(buckets, key=lambda b: abs(math.log(b[1] / b[0] / 2)))
    placed = place(Image.new("RGB", (400, 200)), 256, buckets)
    assert placed.size == choose_bucket(400, 200, buckets)
    assert parse_buckets("256x256, 192x320") == [(256, 256), (192, 320)]
    with pytest.raises(ValueError, match="HxW"):
        parse_buckets("256")


def test_filters_defaults():
    f = Filters.for_resolution(256)
    assert f.min_size == 128 and f.max_aspect == 3.0
    assert f.reject(128, 384) is None
    assert f.reject(127, 300) == "too_small"
    assert f.reject(128, 385) == "bad_aspect"
    assert Filters.for_resolution(256, min_size=10).reject(20, 20) is None
