"""
The charts of the project, drawn with pillow alone (no plotting library to install):

    bar_chart(columns, rows, path)     eval.py --compare: one group of bars per metric, one bar per
                                       configuration, the std over seeds as error bars
    line_chart(curves, path, title)    study.py: training loss against step, one line per run

Both colour their series from one palette, in order.
"""
import math

# matplotlib's tab10, in its order: the first series is blue, the second orange, ...
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def color(i):
    return PALETTE[i % len(PALETTE)]


def bar_chart(columns, rows, path):
    """Grouped bar chart -> PNG at path. columns: metric titles; rows: (name, seeds, {column: (mean, std
    or None, n)}) per configuration, means and stds as fractions (drawn in percent); a mean of None
    draws no bar."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default()
    bar, gap, left, top, height = 26, 40, 70, 40, 300
    width = left + len(columns) * (len(rows) * bar + gap) + 20
    legend_h = 16 * len(rows) + 10
    image = Image.new('RGB', (max(width, 360), top + height + 40 + legend_h), 'white')
    draw = ImageDraw.Draw(image)
    values = [100 * v for _, _, stats in rows for m, s, _ in stats.values() if m is not None
              for v in (m - (s or 0), m + (s or 0))]
    lo, hi = min(values + [0.0]), max(values + [0.0])
    hi = hi + 0.05 * (hi - lo) if hi > lo else lo + 1.0
    y = lambda v: top + height - (v - lo) / (hi - lo) * height
    step = 10 ** math.floor(math.log10((hi - lo) / 2)) if hi > lo else 1.0
    tick = math.ceil(lo / step) * step
    while tick <= hi:  # horizontal grid with labels
        draw.line([(left, y(tick)), (width - 20, y(tick))], fill=(225, 225, 225))
        draw.text((5, y(tick) - 6), f"{tick:g}", fill='black', font=font)
        tick += step
    draw.line([(left, y(0)), (width - 20, y(0))], fill='black')
    draw.line([(left, top), (left, top + height)], fill='black')
    draw.text((left, 10), 'mean ± std over seeds (percent)', fill='black', font=font)
    for c, column in enumerate(columns):
        x0 = left + gap / 2 + c * (len(rows) * bar + gap)
        for r, (_, _, stats) in enumerate(rows):
            mean, std, _ = stats[column]
            if mean is None:
                continue
            x = x0 + r * bar
            v = 100 * mean
            draw.rectangle([x + 2, min(y(v), y(0)), x + bar - 2, max(y(v), y(0))], fill=color(r))
            if std is not None:
                cx, s = x + bar / 2, 100 * std
                draw.line([(cx, y(v - s)), (cx, y(v + s))], fill='black')
                draw.line([(cx - 4, y(v + s)), (cx + 4, y(v + s))], fill='black')
                draw.line([(cx - 4, y(v - s)), (cx + 4, y(v - s))], fill='black')
        draw.text((x0, top + height + 8), column, fill='black', font=font)
    for r, (name, seeds, _) in enumerate(rows):
        ly = top + height + 36 + 16 * r
        draw.rectangle([left, ly, left + 10, ly + 10], fill=color(r))
        draw.text((left + 16, ly - 1), f"{name} ({len(seeds)} seed{'' if len(seeds) == 1 else 's'})",
                  fill='black', font=font)
    image.save(path)


def line_chart(curves, path, title):
    """curves: {name: [(step, value)]} -> a line chart PNG at path (900 x 500), the names in sorted
    order. Nothing is written when no curve has a point."""
    from PIL import Image, ImageDraw
    W, H, pad = 900, 500, 60
    img = Image.new('RGB', (W, H), 'white')
    draw = ImageDraw.Draw(img)
    points = [p for c in curves.values() for p in c]
    if not points:
        return
    x_max = max(s for s, _ in points) or 1
    y_min, y_max = min(l for _, l in points), max(l for _, l in points)
    y_max = y_max if y_max > y_min else y_min + 1
    sx = lambda s: pad + (W - 2 * pad) * s / x_max
    sy = lambda l: H - pad - (H - 2 * pad) * (l - y_min) / (y_max - y_min)
    draw.rectangle([pad, pad, W - pad, H - pad], outline='black')
    draw.text((pad, 20), title, fill='black')
    for i in range(5):
        v = y_min + (y_max - y_min) * i / 4
        draw.text((5, sy(v) - 6), f"{v:.2f}", fill='black')
    draw.text((W - pad - 40, H - pad + 10), f"step {x_max}", fill='black')
    for i, (name, curve) in enumerate(sorted(curves.items())):
        if len(curve) > 1:
            draw.line([(sx(s), sy(l)) for s, l in curve], fill=color(i), width=2)
        draw.text((W - pad - 230, pad + 10 + 14 * i), name, fill=color(i))
    img.save(path)
