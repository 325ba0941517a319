#!/usr/bin/env python3
"""Plots a soak CSV (bench/soak.sh) as an SVG with no dependencies, and prints the verdict:
database size and RSS level off (the last five minutes grow < 5 %), throughput in the last
five minutes within 10 % of the first five.

    python3 bench/soak_plot.py soak.csv soak.svg
"""
import csv
import sys


def series(rows, key, scale=1.0):
    return [float(r[key] or 0) * scale for r in rows]


def polyline(xs, ys, x0, y0, w, h, xmax, ymax, color):
    pts = " ".join(
        f"{x0 + w * x / xmax:.1f},{y0 + h - h * y / ymax:.1f}" for x, y in zip(xs, ys)
    )
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>'


def panel(out, title, xs, lines, x0, y0, w, h, unit):
    xmax = max(xs) if xs else 1
    ymax = max([max(ys) for _, ys, _ in lines if ys] + [1e-9]) * 1.15
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="#fafafa" stroke="#999"/>')
    out.append(f'<text x="{x0}" y="{y0 - 8}" font-size="14" font-weight="bold">{title}</text>')
    for i in range(5):
        v = ymax * i / 4
        y = y0 + h - h * i / 4
        out.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{v:.0f}</text>')
    for m in range(0, int(xmax) + 1, 5):
        x = x0 + w * m / xmax
        out.append(f'<text x="{x:.1f}" y="{y0 + h + 16}" font-size="11" text-anchor="middle">{m}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" font-size="11" text-anchor="middle">minute</text>')
    out.append(f'<text x="{x0 - 44}" y="{y0 + h / 2}" font-size="11" transform="rotate(-90 {x0 - 44} {y0 + h / 2})" text-anchor="middle">{unit}</text>')
    for k, (name, ys, color) in enumerate(lines):
        out.append(polyline(xs, ys, x0, y0, w, h, xmax, ymax, color))
        lx = x0 + 10 + 150 * k
        out.append(f'<rect x="{lx}" y="{y0 + 8}" width="12" height="4" fill="{color}"/>')
        out.append(f'<text x="{lx + 16}" y="{y0 + 14}" font-size="11">{name}</text>')


def mean(v):
    return sum(v) / len(v) if v else 0.0


def main(csv_path, svg_path):
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    xs = [int(r["minute"]) for r in rows]
    db = series(rows, "db_bytes", 1 / 2**20)
    wal = series(rows, "wal_bytes", 1 / 2**20)
    rss = series(rows, "rss_kb", 1 / 1024)
    tok, pair, mfa = (series(rows, k) for k in ("token_rps", "pair_rps", "mfa_rps"))
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="760" height="560" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>']
    panel(out, "Size: database file, its WAL, server RSS", xs,
          [("database MB", db, "#1f77b4"), ("WAL MB", wal, "#9edae5"), ("RSS MB", rss, "#d62728")],
          80, 40, 640, 200, "MB")
    panel(out, "Throughput per minute", xs,
          [("JWT issuance /s", tok, "#2ca02c"), ("card pairs /s", pair, "#ff7f0e"), ("MFA sessions /s", mfa, "#9467bd")],
          80, 310, 640, 200, "per second")
    out.append("</svg>")
    with open(svg_path, "w") as f:
        f.write("\n".join(out) + "\n")

    n = len(rows)
    if n < 10:
        print(f"only {n} minutes: no verdict (needs 10 or more)")
        return
    def growth(v):
        base = v[n - 6]
        return (v[-1] - base) / base * 100 if base else float("inf")
    size = [a + b for a, b in zip(db, wal)]
    print(f"database+WAL: {size[n - 6]:.1f} MB at minute {xs[n - 6]} -> {size[-1]:.1f} MB at minute {xs[-1]}: {growth(size):+.1f} % (limit +5 %)")
    print(f"server RSS:   {rss[n - 6]:.1f} MB -> {rss[-1]:.1f} MB: {growth(rss):+.1f} % (limit +5 %)")
    for name, v in (("JWT issuance", tok), ("card pairs", pair), ("MFA sessions", mfa)):
        first, last = mean(v[:5]), mean(v[-5:])
        d = (last - first) / first * 100 if first else float("inf")
        print(f"{name:<13} first 5 min {first:8.1f}/s, last 5 min {last:8.1f}/s: {d:+.1f} % (limit +-10 %)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
