"""Generated sections of the docs: the text between `<!-- NAME:begin` and `<!-- NAME:end -->`."""
from pathlib import Path


def write_section(doc: Path, name: str, body: str, heading: str = "") -> None:
    """Replace section NAME of `doc` with `body`, or append it (under `heading`) when absent."""
    text = doc.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin in text:
        text = text[: text.index(begin) + len(begin)] + "\n" + body + text[text.index(end):]
    else:
        text += ("\n" + heading + "\n" if heading else "\n") + f"\n{begin}\n{body}{end}\n"
    doc.write_text(text)
