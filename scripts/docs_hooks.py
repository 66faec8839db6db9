"""MkDocs hook: ``<!-- pfd-options: PerturbConfig -->`` becomes the table of that configuration section.

The tables are made from :mod:`pfd_atomate.config` at build time, so the pages list every option of
every Maker with its default and description, exactly as the code defines them.
"""

from __future__ import annotations

import json
import re

_MARKER = re.compile(r"<!-- pfd-options: (\w+) -->")


def _table(name: str) -> str:
    import pfd_atomate.config as config

    model = getattr(config, name)
    rows = ["| key | default | description |", "|---|---|---|"]
    for key, info in model.model_fields.items():
        if info.default_factory is not None:
            try:
                default = info.default_factory()
            except TypeError:
                default = "…"
        else:
            default = info.default
        if hasattr(default, "model_dump"):
            default = "section below" if hasattr(default, "build") else default.model_dump(mode="json")
        text = "(required)" if default is Ellipsis or repr(default) == "PydanticUndefined" else json.dumps(default, default=str)
        if len(text) > 60:
            text = text[:57] + "…"
        description = (info.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{key}` | `{text}` | {description} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs hook signature
    return _MARKER.sub(lambda m: _table(m.group(1)), markdown)
