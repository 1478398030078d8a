"""degenbench-standins: build (pretrain) the shipped stand-in bases, or print their records."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from degenbench.models import standins


def table(names: list[str]) -> str:
    """The shipped bases' records (standin.json) as Markdown: size, build, and reading CER beside a
    blind answer's on the same pages (own style A; the benchmark's style B with the JSON prompt)."""
    from degenbench.config import compose

    rows = ["| family | parent | parameters | steps | build s | CER own 4 rows (blind) | CER own 1 row (blind) "
            "| CER benchmark (blind) | JSON valid, benchmark |", "|---" * 9 + "|"]
    for name in names:
        info = json.loads((Path(compose([f"family={name}"]).family.sizes.tiny.pretrained) / standins.MARKER).read_text())
        r = info["reading"]
        cell = lambda k: f"{r[k]['cer']:.3f} ({r[k]['blind_cer']:.3f})"  # noqa: E731
        rows.append(f"| {name} | {info['parent'] or '-'} | {info['n_params']:,} | {info['training']['steps']} | "
                    f"{info['training']['seconds']:.0f} | {cell('own_4_rows')} | {cell('own_1_rows')} | "
                    f"{cell('benchmark')} | {r['benchmark']['json_valid']:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    from degenbench.config import compose

    p = argparse.ArgumentParser(description="Build (pretrain) the tiny offline stand-ins' vanilla bases "
                                            "into the shipped directory standins/<family>.")
    p.add_argument("families", nargs="*", help="family names (default: all, parents first)")
    p.add_argument("--force", action="store_true", help="rebuild even if the shipped base is current")
    p.add_argument("--table", action="store_true", help="print the shipped bases' records as a Markdown table")
    args = p.parse_args(argv)
    from degenbench.config import known_families

    if args.table:
        print(table(args.families or known_families()))
        return

    logging.basicConfig(level=logging.INFO)
    names = args.families or known_families()
    names.sort(key=lambda n: bool(compose([f"family={n}"]).family.standin.base.parent))  # parents first
    for name in names:
        fam = compose([f"family={name}"]).family
        out = Path(fam.sizes.tiny.pretrained)
        if args.force or not standins.current(out, fam):
            standins.build(fam, out)
        info = json.loads((out / standins.MARKER).read_text())
        print(f"{name}: {out} ({info['n_params']:,} parameters, recipe {info['recipe']}, "
              f"reading {info.get('reading')})", flush=True)


if __name__ == "__main__":
    main()
