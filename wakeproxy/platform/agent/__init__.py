"""The in-sandbox agent: the part of E2B's envd that the E2B SDKs use.

It runs inside a sandbox as the root of its process tree and serves, on port 49983:

    /health, /files              plain HTTP (app, files_http)
    process.Process/*            Connect RPC, JSON codec (process_service, process, spawn)
    filesystem.Filesystem/*      Connect RPC, JSON codec (filesystem_service, entries,
                                 watch_service, watch)

The request path: `app` (routes, token) → `rpc` (Connect framing and errors, via the
pure `connect`, `jsonpb` and `messages`) → a service → `paths` (user and path
resolution) and the process table or the disk.

`ENVD_VERSION` is the envd version whose protocol the agent speaks; the control plane
reports it as `envdVersion`, and the SDKs pick features by it.
"""

ENVD_VERSION = "0.6.4"
"""Watch options (entry info on events 0.6.3, network mounts 0.6.4), file metadata (0.6.2),
octet-stream uploads (0.5.7), closing stdin (0.5.2), a default user (0.4.0), stdin control
(0.3.0) and recursive watches (0.1.4) are served."""
