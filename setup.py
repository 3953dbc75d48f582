"""setuptools' entry point; whether the request path is compiled is decided in
`build_backend/wakeproxy_build.py` (on the path during a build: `backend-path`)."""

from setuptools import setup
from wakeproxy_build import setup_options

setup(**setup_options())
