import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from focusfuse.errors import InputError, UsageError
from focusfuse.io.images import (check_output_path, expand_inputs, list_images, natural_key, read_image, tiff_page_count,
                          write_image)


def _rand(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, hi + 1, size=shape, dtype=dtype)
    return rng.random(shape).astype(dtype)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
@pytest.mark.parametrize("shape", [(13, 17), (13, 17, 3)])
def test_lossless_round_trip_8bit(tmp_path, suffix, shape):
    image = _rand(shape, np.uint8)
    path = write_image(tmp_path / f"x{suffix}", image)
    back = read_image(path)
    assert back.dtype == np.uint8 and np.array_equal(back, image)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("shape", [(13, 17), (13, 17, 3)])
def test_lossless_round_trip_16bit(tmp_path, suffix, shape):
    image = _rand(shape, np.uint16)
    back = read_image(write_image(tmp_path / f"x{suffix}", image))
    assert back.dtype == np.uint16 and np.array_equal(back, image)


def test_float_tiff_round_trip(tmp_path):
    image = _rand((9, 11, 3), np.float32)
    back = read_image(write_image(tmp_path / "x.tif", image))
    assert back.dtype == np.float32 and np.array_equal(back, image)


def test_jpeg_is_8bit_and_close(tmp_path):
    image = np.full((16, 16, 3), (200, 100, 50), np.uint8)
    back = read_image(write_image(tmp_path / "x.jpg", image))
    assert back.dtype == np.uint8 and back.shape == image.shape
    assert np.abs(back.astype(int) - image).max() <= 3


def test_16bit_to_jpeg_warns_and_reduces(tmp_path):
    image = np.full((8, 8), 65535, np.uint16)
    with pytest.warns(UserWarning, match="8-bit"):
        back = read_image(write_image(tmp_path / "x.jpg", image))
    assert back.dtype == np.uint8 and back.max() >= 254


def test_float_to_jpeg_warns_and_reduces_but_not_to_png(tmp_path, recwarn):
    image = np.full((8, 8), 0.5, np.float32)
    with pytest.warns(UserWarning, match=r"^x\.jpg: \.jpg holds 8 bits; float result reduced to 8-bit"):
        back = read_image(write_image(tmp_path / "x.jpg", image))
    assert back.dtype == np.uint8 and abs(int(back.max()) - 128) <= 1
    recwarn.clear()
    assert read_image(write_image(tmp_path / "x.png", image)).dtype == np.uint16  # 16 bits: nothing to say
    assert not [w for w in recwarn if "reduced" in str(w.message)]


def test_warnings_name_the_output_not_its_temporary_file(tmp_path):
    from focusfuse.io.images import final_name, partial_path

    with pytest.warns(UserWarning, match=r"^x\.jpg: \.jpg holds 8 bits"):
        write_image(partial_path(tmp_path / "x.jpg"), np.full((8, 8), 65535, np.uint16))
    assert final_name(partial_path(tmp_path / "a.b.tif")) == "a.b.tif"
    assert final_name(tmp_path / "plain.png") == "plain.png"


def test_rgba_channel_order_is_kept_and_unsupported_types_are_refused(tmp_path):
    pixel = [154, 147, 151, 128]
    back = read_image(write_image(tmp_path / "rgba.png", np.tile(np.array(pixel, np.uint8), (4, 4, 1))))
    assert back[0, 0].tolist() == pixel
    assert np.asarray(Image.open(tmp_path / "rgba.png"))[0, 0].tolist() == pixel
    with pytest.raises(UsageError, match="cannot write pixels of type int16"):
        write_image(tmp_path / "signed.png", np.zeros((4, 4), np.int16))
    assert not (tmp_path / "signed.png").exists()


def test_rgb_channel_order_is_kept(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0] = 255  # pure red
    back = read_image(write_image(tmp_path / "red.png", image))
    assert back[0, 0].tolist() == [255, 0, 0]
    assert np.asarray(Image.open(tmp_path / "red.png"))[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    image = _rand((6, 10, 3), np.uint8, seed=orientation)
    pil = Image.fromarray(image)
    exif = pil.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    pil.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert np.array_equal(read_image(path), expected)


def test_multipage_tiff_is_a_stack(tmp_path):
    pages = _rand((5, 12, 10), np.uint16)
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, pages)
    assert tiff_page_count(path) == 5
    refs = expand_inputs([path])
    assert [r.page for r in refs] == [0, 1, 2, 3, 4]
    assert np.array_equal(refs[3].read(), pages[3])


def test_files_given_one_by_one_take_natural_order(tmp_path):
    from focusfuse.io.images import natural_file_order

    files = [tmp_path / name for name in ("img1.png", "img10.png", "img2.png")]  # as a shell glob lists them
    assert [p.name for p in natural_file_order(files)] == ["img1.png", "img2.png", "img10.png"]
    (tmp_path / "more").mkdir()
    assert natural_file_order([tmp_path / "more", files[1], files[0]]) == [tmp_path / "more", files[1], files[0]]


def test_multipage_rgb_tiff(tmp_path):
    pages = _rand((3, 8, 6, 3), np.uint8)
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, pages, photometric="rgb")
    refs = expand_inputs([path])
    assert len(refs) == 3 and np.array_equal(refs[2].read(), pages[2])


def test_natural_sort_of_frames(tmp_path):
    for name in ["img10.png", "img2.png", "img1.png", "IMG3.png", "notes.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["img1.png", "img2.png", "IMG3.png", "img10.png"]
    assert sorted(["a10", "a9", "a09b"], key=natural_key) == ["a9", "a09b", "a10"]


def test_folder_expands_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        write_image(tmp_path / f"f{i}.png", _rand((4, 4), np.uint8, seed=i))
    assert [r.name for r in expand_inputs([tmp_path])] == ["f1.png", "f2.png", "f10.png"]


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "corrupt.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match="TIFF"):
        read_image(tmp_path / "bad.tif")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(UsageError, match="holds no images"):
        expand_inputs([empty])
    with pytest.raises(UsageError, match="no such file"):
        expand_inputs([tmp_path / "nope"])


def test_nan_in_float_tiff_is_refused(tmp_path):
    image = np.zeros((4, 4), np.float32)
    image[1, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", image)
    with pytest.raises(InputError, match="NaN"):
        read_image(tmp_path / "nan.tif")


def test_output_checks(tmp_path):
    existing = write_image(tmp_path / "out.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(UsageError, match="exists"):
        check_output_path(existing, overwrite=False)
    assert check_output_path(existing, overwrite=True) == existing
    with pytest.raises(UsageError, match="unknown output type"):
        check_output_path(tmp_path / "out.gif", overwrite=False)
    with pytest.raises(UsageError, match="overwrite an input"):
        check_output_path(existing, overwrite=True, inputs=[existing])
    with pytest.raises(UsageError, match="does not exist"):
        check_output_path(tmp_path / "no" / "out.png", overwrite=False)


def test_unwritable_folder_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: pretend the permission bits apply
        monkeypatch.setattr(os, "access", lambda path, mode: not str(path).endswith("ro"))
    folder.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="not writable"):
            check_output_path(folder / "out.png", overwrite=False)
    finally:
        folder.chmod(0o700)


def test_write_is_atomic_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import focusfuse.io.images as fio

    def broken_encode(path, image):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fio, "_encode", broken_encode)
    target = tmp_path / "out.png"
    with pytest.raises(UsageError, match="cannot write"):
        write_image(target, np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []
    assert not Path(target).exists()


def test_gray_alpha_png_reads_as_gray_in_stacks(tmp_path):
    from PIL import Image

    from focusfuse import fuse_stack
    from conftest import random_model

    folder = tmp_path / "ga"
    folder.mkdir()
    for i in range(2):
        gray = (np.random.default_rng(i).random((20, 24)) * 255).astype(np.uint8)
        Image.fromarray(np.dstack([gray, np.full_like(gray, 255)]), mode="LA").save(folder / f"f{i}.png")
    assert read_image(folder / "f0.png").shape == (20, 24, 2)  # gray and alpha, as stored
    with pytest.warns(UserWarning, match="alpha"):
        result = fuse_stack(folder, weights=random_model(), device="cpu", align="none", tile_size=0)
    assert result.fused.shape == (20, 24)


@pytest.mark.parametrize("image,kwargs,message", [
    (np.zeros((4, 4, 5), np.uint8), {}, "shape"),
    (np.zeros((2, 4, 4, 3), np.uint8), {}, "shape"),
    (np.zeros((4, 4), np.uint8), {"compression": "lzw"}, "compression 'lzw'"),
])
def test_write_image_refuses_what_it_cannot_write_in_words(tmp_path, image, kwargs, message):
    from focusfuse.errors import UsageError

    with pytest.raises(UsageError, match=message):
        write_image(tmp_path / "x.tif", image, **kwargs)
    assert list(tmp_path.iterdir()) == []
