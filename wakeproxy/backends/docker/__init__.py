"""The `docker` backend: labelled containers of one Docker Engine as sandboxes.

`engine.py` is the Engine API client, `containers.py` what labels and engine states mean
(pure), `timeouts.py` when a container is due to sleep, `backend.py` the `Backend`, and
`opening.py` builds it from the configuration.
"""
