"""The classical lossless codecs the model is compared with: exact on every mode they claim, and
JPEG-XL left out with None, not an error, where its tools are missing."""

import numpy as np
import pytest

from vae_jax import codecs


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_missing_jpeg_xl_tools_give_none_and_pillow_codecs_still_run(monkeypatch):
    monkeypatch.setattr(codecs.shutil, "which", lambda name: None)
    assert not codecs.jpeg_xl_available()
    rates = codecs.timed_rates(_pixels((16, 24, 3)), "RGB")
    for codec in codecs.JPEG_XL_CODECS:
        assert rates[f"{codec}_bits_per_dim"] is None and rates[f"{codec}_decode_mpps"] is None
    assert rates["png_bits_per_dim"] > 0 and rates["webp_bits_per_dim"] > 0
    with pytest.raises(FileNotFoundError, match="libjxl-tools"):
        codecs.jpeg_xl_round_trip(None, 7)


@pytest.mark.skipif(not codecs.jpeg_xl_available(), reason="apt-get install libjxl-tools")
@pytest.mark.parametrize(("shape", "mode"), [((20, 31, 3), "RGB"), ((20, 31, 1), "L"), ((9, 14, 4), "RGBA")])
def test_jpeg_xl_lossless_round_trips_and_counts_its_file(shape, mode):
    from vae_jax.images import to_pil

    pixels = _pixels(shape)
    size, _, _ = codecs.jpeg_xl_round_trip(to_pil(pixels, mode), 7)
    # Uniform noise is incompressible: the file holds at least its 8 bits a sub-pixel.
    assert size >= pixels.size
    rates = codecs.timed_rates(pixels, mode)
    assert rates["jxl_e9_bits_per_dim"] >= 8.0 and rates["jxl_e7_encode_mpps"] is not None
