"""Drawing of the synthetic lesion images for :func:`make_synthetic_lesions`.

Every image is a lesion-like blob on noisy, skin-coloured background. The look of
the lesion (colour, size, border irregularity, texture) depends on the class
*pair* ``k // 2`` only, plus a weak darkening of odd classes; the background is
class-independent. See the docstring of :mod:`skinfuse.datasets._synthetic` for
how image and metadata share the class signal.
"""

from __future__ import annotations

import numpy as np

#: Relative darkening of odd-class lesions: the image's only (weak) parity cue.
_PARITY_DARKENING = 0.08

#: Images rendered at once (bounds the memory of the float work arrays).
_CHUNK_SIZE = 256


def _pair_appearance(n_pairs):
    """Lesion colour, radius, border irregularity and texture of each pair.

    The first four pairs have hand-picked looks (brown, pink, blue-grey,
    purple-red); further pairs get looks from a fixed generator, so the look of
    a class never depends on ``random_state``.
    """
    colour = np.array(
        [
            [0.42, 0.26, 0.18],  # dark brown
            [0.80, 0.42, 0.44],  # pink-red
            [0.32, 0.34, 0.46],  # blue-grey
            [0.58, 0.14, 0.30],  # purple-red
        ]
    )
    radius = np.array([0.20, 0.30, 0.25, 0.16])
    irregularity = np.array([0.04, 0.20, 0.12, 0.02])
    texture = np.array([0.06, 0.22, 0.14, 0.03])
    if n_pairs > 4:
        extra = np.random.default_rng(20240607)
        m = n_pairs - 4
        colour = np.vstack([colour, extra.uniform(0.15, 0.85, (m, 3))])
        radius = np.append(radius, extra.uniform(0.14, 0.32, m))
        irregularity = np.append(irregularity, extra.uniform(0.0, 0.22, m))
        texture = np.append(texture, extra.uniform(0.02, 0.24, m))
    return colour[:n_pairs], radius[:n_pairs], irregularity[:n_pairs], texture[:n_pairs]


def _smooth_noise(rng, n, size, cells):
    """Smooth random fields of shape (n, size, size), values roughly in [-1, 1]."""
    from scipy.ndimage import zoom

    coarse = rng.uniform(-1.0, 1.0, (n, cells, cells))
    fine = zoom(coarse, (1, size / cells, size / cells), order=1, mode="nearest")
    return fine[:, :size, :size]


def make_images(y, lesion_index, is_second, n_classes, image_size, rng):
    """Render all images as uint8 (n, S, S, 3) plus their bool lesion masks."""
    n = y.size
    s = image_size
    n_lesions = int(lesion_index.max()) + 1
    lesion_class = np.empty(n_lesions, dtype=np.int64)
    lesion_class[lesion_index] = y
    pair = lesion_class // 2
    colour, radius, irregularity, texture = _pair_appearance((n_classes + 1) // 2)

    # lesion-level appearance (shared by the images of one lesion)
    n_harm = 4
    les = {
        # a weak parity cue (parity-1 lesions slightly darker), so that with
        # n_classes=2 the image is not pure noise; pairs dominate the look
        "colour": np.clip(
            colour[pair] * (1.0 - _PARITY_DARKENING * (lesion_class % 2))[:, None]
            + rng.normal(0.0, 0.05, (n_lesions, 3)),
            0.02,
            0.98,
        ),
        "radius": radius[pair] * np.exp(rng.normal(0.0, 0.12, n_lesions)),
        "irregularity": np.clip(irregularity[pair] + rng.normal(0.0, 0.03, n_lesions), 0.0, 0.35),
        "texture": np.clip(texture[pair] + rng.normal(0.0, 0.03, n_lesions), 0.0, 0.4),
        "harm_amp": rng.dirichlet(np.ones(n_harm), n_lesions),
        "harm_phase": rng.uniform(0.0, 2 * np.pi, (n_lesions, n_harm)),
        "aspect": rng.uniform(0.75, 1.0, n_lesions),
    }
    # image-level pose: second images are rotated and shifted copies
    angle = rng.uniform(0.0, 2 * np.pi, n_lesions)[lesion_index]
    angle = angle + is_second * rng.uniform(0.5, 2 * np.pi - 0.5, n)
    centre = 0.5 + rng.normal(0.0, 0.05, (n, 2))
    centre = centre + is_second[:, None] * rng.normal(0.0, 0.05, (n, 2))
    centre = np.clip(centre, 0.35, 0.65)

    images = np.empty((n, s, s, 3), dtype=np.uint8)
    masks = np.empty((n, s, s), dtype=bool)
    grid = (np.arange(s) + 0.5) / s
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    harmonics = np.arange(2, 2 + n_harm)
    for start in range(0, n, _CHUNK_SIZE):
        sl = slice(start, min(start + _CHUNK_SIZE, n))
        m = sl.stop - sl.start
        li = lesion_index[sl]
        dy = yy[None] - centre[sl, 0, None, None]
        dx = xx[None] - centre[sl, 1, None, None]
        theta = np.arctan2(dy, dx) - angle[sl, None, None]
        dist = np.hypot(dy, dx)
        # elliptic, wavy border: r(theta)
        ell = 1.0 / np.sqrt(
            np.cos(theta) ** 2 + (np.sin(theta) / les["aspect"][li, None, None]) ** 2
        )
        wave = np.einsum(
            "nh,nhij->nij",
            les["harm_amp"][li],
            np.sin(
                harmonics[None, :, None, None] * theta[:, None]
                + les["harm_phase"][li][:, :, None, None]
            ),
        )
        r_theta = (
            les["radius"][li, None, None] * ell * (1.0 + les["irregularity"][li, None, None] * wave)
        )
        # never smaller than a pixel, never touching the image border
        r_theta = np.clip(r_theta, 1.0 / s, 0.33)
        edge = 1.0 / s  # about one pixel of soft border
        alpha = np.clip((r_theta - dist) / edge + 0.5, 0.0, 1.0)
        masks[sl] = alpha >= 0.5

        # background: class-independent skin tone, illumination, noise
        skin = np.array([0.88, 0.70, 0.60]) + rng.normal(0.0, 0.04, (m, 3))
        light = 1.0 + 0.06 * _smooth_noise(rng, m, s, 3)
        background = skin[:, None, None, :] * light[..., None]

        # lesion: colour, darker centre, texture whose strength is class signal
        rel = np.clip(dist / r_theta, 0.0, 1.0)
        tex = _smooth_noise(rng, m, s, max(2, s // 6))
        shade = (1.0 - 0.15 * (1.0 - rel)) * (1.0 + les["texture"][li, None, None] * 2.0 * tex)
        lesion = les["colour"][li, None, None, :] * shade[..., None]

        img = background * (1.0 - alpha[..., None]) + lesion * alpha[..., None]
        img = img + rng.normal(0.0, 0.03, img.shape)
        images[sl] = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return images, masks
