"""Auto-resume from traffic: an HTTP request to a paused sandbox's preview URL wakes it.

Starts a small web server (standard library only) on port 3000 inside the sandbox, gets
its preview host with `get_host(3000)`, pauses the sandbox, then requests the page: the
proxy holds the request, resumes the sandbox and forwards it. The server counts visits
in memory, so "visit 2" after the pause shows the same process was frozen and thawed,
not restarted.

Preview hosts look like `3000-<sandboxId>.localhost:8080`. A browser resolves any
`*.localhost` name to loopback by itself, so the printed URL opens as it is; this script
connects to E2B_SANDBOX_URL's address and sends the preview host in the `Host` header,
because Python's resolver may not know `*.localhost`.

Run `wakeproxy up` in one terminal, then in another, with the three lines it printed:

    E2B_API_URL=... E2B_SANDBOX_URL=... E2B_API_KEY=... python examples/web_server.py
"""

from __future__ import annotations

from _common import check_env, get, wait_for_page
from e2b import Sandbox

APP = """\
import http.server

visits = 0


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global visits
        visits += 1
        body = f"<h1>Hello from the sandbox</h1><p>visit {visits}</p>\\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("0.0.0.0", 3000), Page).serve_forever()
"""


def main() -> None:
    check_env()
    sandbox = Sandbox.create(
        timeout=5 * 60,
        lifecycle={"on_timeout": "pause", "auto_resume": True},
    )
    try:
        sandbox.files.write("/home/user/app.py", APP)
        # timeout=0: the server runs until the sandbox ends (the default ends it after 60 s).
        sandbox.commands.run("python3 /home/user/app.py", background=True, timeout=0)

        host = sandbox.get_host(3000)
        print(f"web server URL (open it in a browser): http://{host}/")
        status, page = wait_for_page(host)
        print(f"before the pause: {status} {page.strip()}")
        assert status == 200
        assert "visit 1" in page

        sandbox.pause()
        assert sandbox.get_info().state == "paused"
        print("paused")

        status, page = get(host)  # wakes the sandbox
        print(f"after the pause: {status} {page.strip()}")
        assert status == 200
        assert "visit 2" in page

        state = sandbox.get_info().state
        print(f"the request resumed it: state is {state}")
        assert state == "running"
    finally:
        sandbox.kill()


if __name__ == "__main__":
    main()
