"""Face crops: box, margin, square, padding, channels, eye alignment, bad boxes."""

import cv2
import numpy as np
import pytest

from bregflax.data import faces


def scene(height=100, width=120, box=(20, 30, 40, 40), value=255, channels=None):
    shape = (height, width) if channels is None else (height, width, channels)
    image = np.zeros(shape, np.uint8)
    x, y, w, h = box
    image[y : y + h, x : x + w] = value
    return image


def test_crop_is_the_box():
    crop = faces.crop_face(scene(), (20, 30, 40, 40), size=16, channels=1)
    assert crop.shape == (16, 16, 1) and crop.dtype == np.uint8
    assert (crop == 255).all()


def test_margin_grows_the_box_on_each_side():
    crop = faces.crop_face(
        scene(box=(40, 40, 20, 20)), (40, 40, 20, 20), size=40, channels=1, margin=0.5
    )
    assert (crop[10:30, 10:30] == 255).all()
    assert (crop[:10] == 0).all() and (crop[30:] == 0).all()
    assert (crop[:, :10] == 0).all() and (crop[:, 30:] == 0).all()


def test_wide_box_is_made_square_around_its_centre():
    image = np.arange(100 * 100, dtype=np.int64).reshape(100, 100) % 251
    image = image.astype(np.uint8)
    crop = faces.crop_face(image, (10, 30, 40, 20), size=40, channels=1)
    np.testing.assert_array_equal(crop[..., 0], image[20:60, 10:50])


def test_box_partly_outside_is_padded_black():
    image = np.full((50, 50), 200, np.uint8)
    crop = faces.crop_face(image, (-10, -10, 20, 20), size=20, channels=1)[..., 0]
    assert (crop[:10, :] == 0).all() and (crop[:, :10] == 0).all()
    assert (crop[10:, 10:] == 200).all()


@pytest.mark.parametrize(
    "box, reason",
    [
        ((200, 10, 20, 20), "box_outside_image"),
        ((10, -40, 20, 20), "box_outside_image"),
        ((10, 10, 0, 20), "degenerate_box"),
        ((10, 10, 20, -5), "degenerate_box"),
        ((np.nan, 10, 20, 20), "degenerate_box"),
        ((0, 0, 1e7, 1e7), "box_too_large"),  # refused before a crop is allocated
        ((0, 0, 481, 20), "box_too_large"),  # over 4x the longer side, 120
    ],
)
def test_bad_boxes_name_their_reason(box, reason):
    with pytest.raises(faces.BadFaceBox) as info:
        faces.crop_face(scene(), box, size=16, channels=1)
    assert info.value.reason == reason


def test_channels():
    rgb = scene(channels=3)
    rgb[30:70, 20:60] = (255, 0, 0)
    red = faces.crop_face(rgb, (20, 30, 40, 40), size=8, channels=3)
    assert red.shape == (8, 8, 3) and (red == (255, 0, 0)).all()
    gray = faces.crop_face(rgb, (20, 30, 40, 40), size=8, channels=1)
    assert gray.shape == (8, 8, 1) and (gray == 76).all()  # 0.299 * 255
    from_gray = faces.crop_face(scene(value=90), (20, 30, 40, 40), size=8, channels=3)
    assert from_gray.shape == (8, 8, 3) and (from_gray == 90).all()
    with pytest.raises(ValueError):
        faces.to_channels(rgb, 2)


def eye_landmarks(left, right):
    points = np.zeros((68, 2))
    points[faces.LEFT_EYE] = left
    points[faces.RIGHT_EYE] = right
    return points


def test_eye_angle_sign():
    assert faces.eye_angle(eye_landmarks((40, 40), (80, 40))) == pytest.approx(0)
    assert faces.eye_angle(eye_landmarks((40, 40), (80, 80))) == pytest.approx(45)
    assert faces.eye_angle(eye_landmarks((40, 40), (80, 0))) == pytest.approx(-45)


@pytest.mark.parametrize("right_y", [60, 20])
def test_align_levels_the_eyes(right_y):
    image = np.zeros((120, 120), np.uint8)
    left, right = (40, 40), (80, right_y)
    for centre in (left, right):
        cv2.circle(image, centre, 4, 255, -1)
    landmarks = eye_landmarks(left, right)
    box = (20, 40 + (right_y - 40) / 2 - 40, 80, 80)

    def eye_rows(crop):
        crop = crop[..., 0].astype(float)
        half = crop.shape[1] // 2
        rows = []
        for part in (crop[:, :half], crop[:, half:]):
            ys, _ = np.nonzero(part > 128)
            rows.append(ys.mean())
        return rows

    plain = faces.crop_face(image, box, size=80, channels=1, landmarks=landmarks)
    aligned = faces.crop_face(image, box, size=80, channels=1, landmarks=landmarks, align=True)
    assert abs(np.subtract(*eye_rows(plain))) > 15
    assert abs(np.subtract(*eye_rows(aligned))) < 1.5


def test_boxes_up_to_four_times_the_image_are_cropped():
    crop = faces.crop_face(scene(), (-180, -150, 480, 480), size=16, channels=1)
    assert crop.shape == (16, 16, 1) and 0 < crop.mean() < 255


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("box", [(60, 90, 150, 150), (-160, -120, 400, 330), (250, 200, 300, 240)])
def test_windows_over_max_window_are_cut_at_reduced_resolution(monkeypatch, box, align):
    """A window over MAX_WINDOW is never held at full size, and gives about the same crop:
    nearer the exact one than a crop one output pixel to the side is."""
    noise = np.random.default_rng(0).integers(0, 256, (300, 360)).astype(np.float32)
    image = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 6), None, 0, 255, cv2.NORM_MINMAX)
    image = image.astype(np.uint8)
    landmarks = np.zeros((68, 2))
    landmarks[faces.LEFT_EYE], landmarks[faces.RIGHT_EYE] = (100, 120), (200, 150)
    kwargs = dict(size=24, channels=1, margin=0.2, landmarks=landmarks, align=align)
    exact = faces.crop_face(image, box, **kwargs).astype(float)
    aside = (box[0] + box[2] / 24, *box[1:])
    off_by_a_pixel = np.abs(faces.crop_face(image, aside, **kwargs) - exact).mean()
    allocated, zeros = [], np.zeros

    def recording_zeros(shape, *args):
        allocated.append(shape)
        return zeros(shape, *args)

    monkeypatch.setattr(faces.np, "zeros", recording_zeros)
    monkeypatch.setattr(faces, "MAX_WINDOW", 96)
    reduced = faces.crop_face(image, box, **kwargs).astype(float)
    assert allocated and max(shape[0] for shape in allocated) == 96
    assert np.abs(reduced - exact).mean() < off_by_a_pixel / 2
