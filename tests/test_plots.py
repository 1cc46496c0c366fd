"""plots.py: the charts are PNGs of the size their layout gives, in the palette's colours."""
import numpy as np
from PIL import Image

import plots


def pixels_of(path):
    with Image.open(path) as im:
        assert im.format == 'PNG'
        return np.asarray(im.convert('RGB')).astype(int)


def count(pixels, color):
    return int((np.abs(pixels - color).sum(-1) == 0).sum())


def test_bar_chart_draws_a_bar_per_configuration_in_the_palette(tmp_path):
    columns = ['Vision Stable', 'Text Stable', 'VQAv2']
    rows = [('frozen', [0, 1], {'Vision Stable': (0.45, 0.07, 2), 'Text Stable': (0.25, None, 1),
                                'VQAv2': (0.45, 0.07, 2)}),
            ('mlp1', [3], {'Vision Stable': (0.30, None, 1), 'Text Stable': (-0.10, None, 1),
                           'VQAv2': (None, None, 0)}),
            ('unfrozen', [0], {c: (0.2, None, 1) for c in columns})]
    plots.bar_chart(columns, rows, tmp_path / 'bars.png')
    pixels = pixels_of(tmp_path / 'bars.png')
    # 70 left + 3 columns x (3 bars x 26 + 40) + 20; 40 top + 300 + 40 + a legend of 16 per row + 10
    assert pixels.shape == (40 + 300 + 40 + 16 * 3 + 10, 70 + 3 * (3 * 26 + 40) + 20, 3)
    for r in range(3):
        assert count(pixels, plots.PALETTE[r]) > 100, r
    assert count(pixels, plots.PALETTE[3]) == 0  # three configurations, three colours


def test_bar_chart_is_at_least_360_wide(tmp_path):
    plots.bar_chart(['A'], [('one', [0], {'A': (0.5, None, 1)})], tmp_path / 'bar.png')
    assert pixels_of(tmp_path / 'bar.png').shape == (40 + 300 + 40 + 16 + 10, 360, 3)


def test_line_chart_draws_a_line_per_curve_in_sorted_order(tmp_path):
    curves = {'b_seed0': [(s, 3.0 - s / 100) for s in range(0, 201, 10)],
              'a_seed0': [(s, 2.5 - s / 200) for s in range(0, 201, 10)],
              'c_seed0': [(s, 1.0) for s in range(0, 101, 10)]}
    plots.line_chart(curves, tmp_path / 'loss.png', 'mixed stage: train loss')
    pixels = pixels_of(tmp_path / 'loss.png')
    assert pixels.shape == (500, 900, 3)
    for i in range(3):  # a_seed0, b_seed0, c_seed0
        assert count(pixels, plots.PALETTE[i]) > 200, i
    assert count(pixels, plots.PALETTE[3]) == 0


def test_line_chart_of_no_points_writes_nothing(tmp_path):
    plots.line_chart({'empty': []}, tmp_path / 'none.png', 'nothing yet')
    assert not (tmp_path / 'none.png').exists()
