"""WSGI entry point for gunicorn: `gunicorn wsgi:app`."""
from isp_admin import create_app

app = create_app()
