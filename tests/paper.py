"""The M³ViT paper's ZCU104 numbers (NeurIPS 2022, hardware table), transcribed for the tests.

Typed in from the paper (see /work/shared/brief/m3vit.md), independently of ``m3vit.explore.schedules.PAPER``,
so that a test comparing the two can catch a wrong constant in the code.
"""

from __future__ import annotations

PAPER_ZCU104 = {
    # design: (on-chip MiB with reordering or the 2-expert cache, all experts on chip, latency ms with the
    #          expert cache and no reordering, latency ms with expert-by-expert reordering)
    "m3vit_small_pascal": {"ebe_mib": "4.840", "all_on_chip_mib": "11.610", "cache_ms": "637.5", "ebe_ms": "69.0"},
    "m3vit_small_nyud": {"ebe_mib": "4.840", "all_on_chip_mib": "11.610", "cache_ms": "750.6", "ebe_ms": "84.5"},
}


def markdown_table(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows (header → cell) of the markdown table in ``text`` whose first column is ``first_header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip().strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip()[1:-1].split("|")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows
