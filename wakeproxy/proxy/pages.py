"""The small, self-contained HTML pages the proxy shows to browsers.

No external assets (the sandbox may be the only server the browser can reach), real
text for screen readers (a heading, then what is happening, which sandbox, what to do)
and dark-on-light colours well above WCAG AA contrast.
"""

from __future__ import annotations

from html import escape

_STYLE = (
    "body{font:17px/1.55 system-ui,sans-serif;margin:0;background:#eef0f3;color:#111}"
    "main{max-width:34rem;margin:10vh auto;padding:1.5rem 2rem;background:#fff;"
    "border:1px solid #c4c9d0;border-top:6px solid #1a56b0;border-radius:8px}"
    "h1{font-size:1.5rem;line-height:1.3;margin:0 0 .75rem}p{margin:.6rem 0}"
    ".detail{color:#373d45;font-family:ui-monospace,monospace;overflow-wrap:anywhere}"
    ".hint{border-top:1px solid #dde0e4;padding-top:.75rem}"
)

# A spinner drawn by CSS beside the heading; still for people who ask for less motion.
_SPINNER = (
    "<style>h1::before{content:'';display:inline-block;width:.9em;height:.9em;"
    "margin-right:.5em;vertical-align:-.1em;border:.18em solid #c4c9d0;"
    "border-top-color:#1a56b0;border-radius:50%;animation:spin 1s linear infinite}"
    "@keyframes spin{to{transform:rotate(1turn)}}"
    "@media(prefers-reduced-motion:reduce){h1::before{animation:none}}</style>"
)


def page(
    *, title: str, message: str, detail: str = "", head_extra: str = "", hint: str = ""
) -> bytes:
    """Render one page; every argument but `head_extra` is plain text and is escaped here.

    `message` says what is happening, `detail` which sandbox, `hint` what to do about it.
    """
    return _render(title, message, detail, hint, head_extra, live=False)


def _render(
    title: str, message: str, detail: str, hint: str, head_extra: str, *, live: bool
) -> bytes:
    # On the waiting page the message is a live region, so a screen reader announces it.
    status = ' role="status"' if live else ""
    detail_html = f'<p class="detail">{escape(detail)}</p>' if detail else ""
    hint_html = f'<p class="hint">{escape(hint)}</p>' if hint else ""
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title>{head_extra}<style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>"
        f"<p{status}>{escape(message)}</p>{detail_html}{hint_html}</main></body></html>"
    ).encode()


# The waiting page long-polls this path on the sandbox's own host (so it needs no CORS
# and no second origin); the proxy answers it itself and never forwards it.
WAIT_PATH = "/.wakeproxy/wait"

# 503 means "still waking, or a passing failure": ask again. Any other answer (200 ready,
# or an error such as "port is not open" or "not found") is final, and the reload shows
# the real page or the page that explains the error.
_WAIT_SCRIPT = (
    "(function(){function poll(){fetch('" + WAIT_PATH + "',{cache:'no-store'})"
    ".then(function(r){if(r.status===503){setTimeout(poll,1000)}else{location.reload()}})"
    ".catch(function(){setTimeout(poll,2000)})}poll()})();"
)


def waiting_page(sandbox_id: str, refresh_seconds: int) -> bytes:
    """Shown to a browser while its sandbox wakes; turns into the real page by itself.

    With JavaScript it reloads the moment the long-poll says ready; without, the meta
    refresh reloads every `refresh_seconds`. The refresh sits in `<noscript>`: with
    JavaScript on, a timed reload would only cut the long-poll short and send the browser
    through another held navigation and another waiting page every few seconds.
    """
    head = (
        f'<noscript><meta http-equiv="refresh" content="{int(refresh_seconds)}"></noscript>'
        f"<script>{_WAIT_SCRIPT}</script>{_SPINNER}"
    )
    return _render(
        "Waking up the sandbox",
        "This sandbox was paused and is starting again. "
        "The page will load by itself as soon as it is ready.",
        f"Sandbox: {sandbox_id}",
        "There is no need to reload.",
        head,
        live=True,
    )
