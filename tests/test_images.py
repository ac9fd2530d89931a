"""Image files: exact reads in their own mode and depth, refusals before anything is written,
no file replaced unasked, and 8-bit reads for learning that scale 16 bits instead of clipping."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vae_jax import images


def _png_48_bit(path, height=4, width=5):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rgb = np.random.default_rng(0).integers(0, 65536, (height, width, 3)).astype(">u2")
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16"])
def test_exact_modes_round_trip(tmp_path, mode):
    rng = np.random.default_rng(1)
    planes = rng.integers(0, 256, (6, 7, images.EXACT_MODES[mode]), dtype=np.uint8)
    written = images.write_exact(tmp_path / "x.png", planes, mode)
    read, read_mode = images.read_exact(written)
    assert read_mode == mode
    np.testing.assert_array_equal(read, planes)
    with Image.open(written) as image:
        assert image.mode == mode


def test_sixteen_bit_grey_keeps_all_sixteen_bits(tmp_path):
    values = (np.arange(48).reshape(6, 8) * 1361).astype(np.uint16)  # up to 63967: far above 255
    Image.fromarray(values).save(tmp_path / "g16.png")
    planes, mode = images.read_exact(tmp_path / "g16.png")
    assert mode == "I;16"
    np.testing.assert_array_equal((planes[..., 0].astype(np.uint16) << 8) | planes[..., 1], values)


def test_modes_that_cannot_be_coded_exactly_are_refused(tmp_path):
    with pytest.raises(images.ImageModeError, match="16 bits per colour channel"):
        images.read_exact(_png_48_bit(tmp_path / "rgb48.png"))
    Image.new("P", (4, 4)).save(tmp_path / "palette.png")
    with pytest.raises(images.ImageModeError, match="'P' cannot be coded exactly"):
        images.read_exact(tmp_path / "palette.png")
    Image.new("CMYK", (4, 4)).save(tmp_path / "cmyk.tiff")
    with pytest.raises(images.ImageModeError, match="'CMYK'"):
        images.read_exact(tmp_path / "cmyk.tiff")
    with pytest.raises(FileNotFoundError):
        images.read_exact(tmp_path / "missing.png")


def test_writes_never_replace_a_file_unasked(tmp_path):
    planes = np.zeros((2, 2, 3), np.uint8)
    (tmp_path / "x.png").write_bytes(b"original")
    with pytest.raises(FileExistsError, match="already exists"):
        images.write_exact(tmp_path / "x.png", planes, "RGB")
    assert (tmp_path / "x.png").read_bytes() == b"original"
    images.write_exact(tmp_path / "x.png", planes, "RGB", force=True)
    with pytest.raises(ValueError, match="is a directory"):
        images.write_exact(tmp_path, planes, "RGB")
    with pytest.raises(ValueError, match="PNG"):
        images.write_exact(tmp_path / "x.jpg", planes, "RGB")


def test_eight_bit_reads_scale_sixteen_bits_and_report_alpha(tmp_path):
    values = np.array([[0, 257, 65535, 32896]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    pixels, dropped = images.read_8bit(tmp_path / "g16.png", 3)
    np.testing.assert_array_equal(pixels[0, :, 0], [0, 1, 255, 128])
    assert pixels.shape == (1, 4, 3) and not dropped
    Image.fromarray(np.full((2, 2, 4), 9, np.uint8), "RGBA").save(tmp_path / "rgba.png")
    pixels, dropped = images.read_8bit(tmp_path / "rgba.png", None)
    assert dropped and pixels.shape == (2, 2, 3)


def _cut_in_half(path):
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_damaged_file_is_named_by_every_reader(tmp_path):
    half = _cut_in_half(tmp_path / "half.png")
    for read in (images.read_exact, lambda p: images.load_image(p, 3), lambda p: images.read_8bit(p, None)):
        with pytest.raises(ValueError, match=rf"{half}: the image data is damaged or cut short"):
            read(half)


def test_outputs_are_checked_together_before_anything_is_written(tmp_path):
    (tmp_path / "notes.json").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.json already exists"):
        images.check_outputs([tmp_path / "new.vae", tmp_path / "notes.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json"]
    assert images.check_outputs([tmp_path / "notes.json"], force=True) == [tmp_path / "notes.json"]
    # A folder the writer will create is fine when allowed; a path through a file never is.
    deep = tmp_path / "a" / "b" / "x.png"
    assert images.check_writable(deep, make_parents=True) == deep
    with pytest.raises(FileNotFoundError, match="does not exist"):
        images.check_writable(tmp_path / "a" / "x.png")
    with pytest.raises(NotADirectoryError, match=rf"{tmp_path / 'notes.json'} is a file, not a directory"):
        images.check_writable(tmp_path / "notes.json" / "sub" / "x.png", make_parents=True)
    (tmp_path / "x.vae.json").mkdir()
    with pytest.raises(ValueError, match="x.vae.json is a directory"):
        images.check_outputs([tmp_path / "x.vae", tmp_path / "x.vae.json"])
    with pytest.raises(ValueError, match="expected a .png path"):
        images.check_exact_output(tmp_path / "back.jpg")
    assert not (tmp_path / "a").exists() and not (tmp_path / "back.jpg").exists()


def test_a_directory_that_cannot_be_written_into_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("permissions not enforced for this user (root): a read-only folder stays writable")
        with pytest.raises(PermissionError, match=rf"directory {locked} is not writable"):
            images.check_writable(locked / "samples" / "x.png", make_parents=True)
    finally:
        locked.chmod(0o755)
