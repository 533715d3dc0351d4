"""What runs Evergreen's deployments for real: the local stack and the serving gateway. The gateway
reads features through Feast: this package prepares the process before anything imports it (see
evergreen/lazy_typecheck.py)."""

from evergreen import lazy_typecheck

lazy_typecheck.install()
