"""The guard of every HTML view, where the web views import it; the code is isp_admin.access, shared by all edges."""
from isp_admin.access import PUBLIC, access, can  # noqa: F401  (re-exported for the web views)
