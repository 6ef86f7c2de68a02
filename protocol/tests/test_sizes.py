"""CPython only: the size table in SPEC.md is current and the flood reading fits its budget."""

from pathlib import Path

from protocol.vectors import sizes


def test_spec_holds_the_generated_size_table() -> None:
    """SPEC.md between the size markers is exactly what protocol.vectors.sizes prints."""
    text = Path(sizes.SPEC).read_text()
    assert text == sizes.spec_with_table(text), (
        "protocol/SPEC.md size table is stale: run `python -m protocol.vectors.sizes --write`")


def test_flood_reading_within_budget() -> None:
    """A typical framed flood reading is at most 32 bytes untagged and 56 tagged."""
    table = sizes.table()
    row = next(line for line in table.splitlines() if line.startswith("| flood (typical)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[2]) <= 32 and int(cells[3]) <= 56, row
    assert "within" in cells[4], row
