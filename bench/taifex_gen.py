"""Make a TAIFEX-format daily tick file (`Daily_YYYY_MM_DD.csv` / `.zip`) for tests and
benchmarks: cp950, CRLF, the published header, padded fields, TX / MTX / TE / TF rows (two
months each), rows of products hftd does not trade (stock futures), spread rows, the opening
auction marks, the night session (15:00 of the day before to 05:00, its rows after midnight
dated the next calendar day) and the day session (08:45-13:45), and optionally a few
malformed lines. Rows are written grouped by product, each group in time order (the feed
sorts by exchange time itself).

    python -m bench.taifex_gen OUT_DIR [--date 2026-12-01] [--rows 1000000] [--zip] [--bad 6]
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import zipfile

import numpy as np

HEADER = "成交日期,商品代號,到期月份(週別),成交時間,成交價格,成交數量(B+S),近月價格,遠月價格,開盤集合競價"
# product: (start price, tick size, decimals, share of the rows)
PRODUCTS = {"TX": (23000.0, 1, 0, 0.25), "MTX": (23000.0, 1, 0, 0.35),
            "TE": (1250.0, 0.05, 2, 0.08), "TF": (2150.0, 0.2, 1, 0.07),
            "CDF": (1100.0, 1, 0, 0.10), "UDF": (350.0, 0.5, 1, 0.10)}  # the last two: not traded by hftd
SPREAD_SHARE = 0.05
MALFORMED = [  # (description, a function of a good row's fields -> the bad line)
    ("bad price", lambda f: ",".join(f[:4] + ["12a45"] + f[5:])),
    ("off the tick grid", lambda f: ",".join(f[:4] + [str(int(float(f[4]))) + ".03"] + f[5:])),
    ("bad time", lambda f: ",".join(f[:3] + ["256100"] + f[4:])),
    ("odd volume", lambda f: ",".join(f[:5] + ["3"] + f[6:])),
    ("too few fields", lambda f: ",".join(f[:5])),
    ("bad date", lambda f: ",".join(["20261340"] + f[1:])),
]


def _times(rng, n: int, day: datetime.date) -> list[tuple[str, str]]:
    """n (date, time) pairs in time order over the night session (from the day before) and
    the day session of trading day `day`."""
    prev = day - datetime.timedelta(days=1)
    night = 14 * 3600  # 15:00 -> 05:00
    daytime = 5 * 3600  # 08:45 -> 13:45
    s = np.sort(rng.integers(0, night + daytime, n))
    out = []
    for x in s.tolist():
        if x < night:
            t = 15 * 3600 + x
            d = prev if t < 86400 else day
            t %= 86400
        else:
            t = 8 * 3600 + 45 * 60 + (x - night)
            d = day
        out.append((d.strftime("%Y%m%d"), f"{t // 3600:02d}{t // 60 % 60:02d}{t % 60:02d}"))
    return out


def make_day(day: datetime.date, rows: int = 200_000, seed: int = 1, bad: int = 6,
             near: str = "202612", far: str = "202701") -> bytes:
    """The CSV bytes of trading day `day`."""
    rng = np.random.default_rng(seed)
    lines = [HEADER]
    goods = []
    for product, (start, tick, dec, share) in PRODUCTS.items():
        n = int(rows * share)
        n_near = int(n * 0.85)
        for month, k in ((near, n_near), (far, n - n_near)):
            steps = rng.integers(-2, 3, k).cumsum()
            prices = start + steps * tick
            vols = rng.integers(1, 20, k) * 2
            times = _times(rng, k, day)
            opened = set()  # the first trade of each session is the opening auction's
            for (d, t), p, v in zip(times, prices.tolist(), vols.tolist()):
                session = "day" if d == f"{day:%Y%m%d}" and "084500" <= t <= "134500" else "night"
                auction = " " if session in opened else "*"
                opened.add(session)
                ptxt = f"{p:.{dec}f}" if dec else str(int(round(p)))
                f = [d, f"{product:<7}", f"{month:<11}", t, ptxt, str(v), "-", "-", auction]
                lines.append(",".join(f))
                if product == "TX" and month == near:
                    goods.append(f)
        if product in ("TX", "MTX"):
            for (d, t), v in zip(_times(rng, int(rows * SPREAD_SHARE / 2), day),
                                 rng.integers(1, 5, rows).tolist()):
                lines.append(",".join([d, f"{product:<7}", f"{near}/{far}", t, "-35",
                                       str(2 * v), f"{int(start)}", f"{int(start) + 35}", " "]))
    for k in range(bad):
        f = goods[(k * 7919) % len(goods)]
        pos = 1 + (k * 104729) % (len(lines) - 1)
        lines.insert(pos, MALFORMED[k % len(MALFORMED)][1](list(f)))
    return ("\r\n".join(lines) + "\r\n").encode("cp950")


def write_day(out_dir: str, day: datetime.date, as_zip: bool = False, **kw) -> str:
    """Write Daily_YYYY_MM_DD.csv (or .zip holding it) into `out_dir`; returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    name = f"Daily_{day:%Y_%m_%d}"
    data = make_day(day, **kw)
    if as_zip:
        path = os.path.join(out_dir, name + ".zip")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(name + ".csv", data)
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        return path
    path = os.path.join(out_dir, name + ".csv")
    with open(path, "wb") as f:
        f.write(data)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--date", default="2026-12-01")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bad", type=int, default=6, help="malformed lines to put in")
    ap.add_argument("--zip", action="store_true")
    a = ap.parse_args()
    print(write_day(a.out_dir, datetime.date.fromisoformat(a.date), a.zip, rows=a.rows,
                    seed=a.seed, bad=a.bad))


if __name__ == "__main__":
    main()
