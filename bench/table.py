"""Print the README's performance table (Markdown) from the committed benchmark JSON in bench/results/."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def toy_rows(d: dict) -> list[str]:
    prov = d["provenance"]
    src = f"{prov['device']}, torch {prov['torch']}, {prov['date'][:10]}, commit {(prov['commit'] or '?')[:10]}"
    rows = [f"Teacher-student grid of one width, {d['grids'][0]['steps']} steps ({src}):", "",
            "| width | runs K | batched | one at a time, stock AdamW loop | speed-up | one at a time, own code (K=1) | speed-up | median rel. diff of final loss |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in d["grids"]:
        agree = g["final_train_loss_rel_diff_batched_vs_reference"]
        rows.append(f"| {g['width']} | {g['runs']} | {g['seconds_batched']:.2f} s | {g['seconds_reference_one_at_a_time']:.2f} s | "
                    f"**{g['speedup_vs_reference']:.1f}x** | {g['seconds_own_code_one_at_a_time']:.2f} s | {g['speedup_vs_own_k1']:.1f}x | {agree['median']:.1e} |")
    if d.get("paper_preset"):
        p = d["paper_preset"]
        rows += ["", f"`lorainit toy --preset paper` end to end ({len(p['widths'])} widths x {p['runs_per_width']} runs x "
                     f"{p['steps']} steps): **{p['wall_seconds']:.1f} s**."]
    return rows


def main() -> None:
    root = Path(__file__).resolve().parent / "results"
    for path in sorted(root.glob("toy_batched_*.json")):
        print("\n".join(toy_rows(json.loads(path.read_text()))))
        print()


if __name__ == "__main__":
    sys.exit(main())
