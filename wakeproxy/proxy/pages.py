"""The small, self-contained HTML pages the proxy shows to browsers.

No external assets (the sandbox may be the only server the browser can reach), real
text for screen readers, and high-contrast colours.
"""

from __future__ import annotations

from html import escape

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#fff;color:#111}"
    "main{max-width:36rem;margin:12vh auto;padding:0 1.5rem}"
    "h1{font-size:1.5rem;margin:0 0 .5rem}"
    "p{margin:.5rem 0}code{background:#eee;padding:0 .25rem;border-radius:3px}"
    ".muted{color:#444;font-size:.9rem}"
)


def page(*, title: str, message: str, detail: str = "", head_extra: str = "") -> bytes:
    """Render one page; every argument is plain text and is escaped here."""
    detail_html = f'<p class="muted">{escape(detail)}</p>' if detail else ""
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title>{head_extra}<style>{_STYLE}</style></head>"
        f'<body><main role="main"><h1>{escape(title)}</h1>'
        f"<p>{escape(message)}</p>{detail_html}</main></body></html>"
    ).encode()
