"""Generated docs stay in step with the declarations they are generated from."""

from pathlib import Path

from tickgate.wire import docs

ROOT = Path(__file__).resolve().parent.parent


def test_wire_formats_doc_is_generated_from_the_layouts():
    text = (ROOT / "docs" / "wire-formats.md").read_text()
    assert text == docs.render(), "docs/wire-formats.md is stale: run `python -m tickgate.wire.docs > docs/wire-formats.md`"
    assert "| 32 | 4 | `price` | price (4 dec) |" in text  # ITCH 'A' price offset from the spec
