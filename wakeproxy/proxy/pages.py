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


# The waiting page long-polls this path on the sandbox's own host (so it needs no CORS
# and no second origin); the proxy answers it itself and never forwards it.
WAIT_PATH = "/.wakeproxy/wait"

_WAIT_SCRIPT = (
    "(function(){function poll(){fetch('" + WAIT_PATH + "',{cache:'no-store'})"
    ".then(function(r){if(r.status===200){location.reload()}else{setTimeout(poll,1000)}})"
    ".catch(function(){setTimeout(poll,2000)})}poll()})();"
)


def waiting_page(sandbox_id: str, refresh_seconds: int) -> bytes:
    """Shown to a browser while its sandbox wakes; turns into the real page by itself.

    With JavaScript it reloads the moment the long-poll says ready; without, the meta
    refresh reloads every `refresh_seconds`.
    """
    head = (
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">'
        f"<script>{_WAIT_SCRIPT}</script>"
    )
    return page(
        title="Waking up the sandbox",
        message="This sandbox was paused and is starting again. "
        "The page will load by itself as soon as it is ready.",
        detail=f"Sandbox: {sandbox_id}",
        head_extra=head,
    )
