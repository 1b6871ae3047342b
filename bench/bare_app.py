"""The yardstick: a bare Flask JSON route, served by the same server and config as the app (bench/http_load.py)."""
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    """Answer as small a JSON document as /health/ does."""
    return {"status": "ok"}
