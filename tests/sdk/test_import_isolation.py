"""``import cordum.sdk`` stays light: an agent or worker process never loads the server.

Pinned, each in a fresh interpreter:
- after ``import cordum.sdk`` none of the server's modules (FastAPI, uvicorn, Starlette,
  sqlite3, and cordum's services, api, ports, policy and wiring) is in ``sys.modules``;
- the SDK imports and builds a Client, an AsyncClient and a Worker even when those
  modules cannot be imported at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.sdk.servers import clean_env

SERVER_MODULES = (
    "fastapi",
    "uvicorn",
    "starlette",
    "sqlite3",
    "cordum.services",
    "cordum.api",
    "cordum.ports",
    "cordum.policy",
    "cordum.wiring",
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )


def test_importing_the_sdk_loads_no_server_module() -> None:
    done = run_python(
        """
        import json, sys
        import cordum.sdk
        print(json.dumps(sorted(sys.modules)))
        """
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "cordum.sdk" in loaded
    leaked = sorted(
        name
        for name in loaded
        if any(name == banned or name.startswith(banned + ".") for banned in SERVER_MODULES)
    )
    assert leaked == []


def test_the_sdk_works_where_the_server_cannot_be_imported() -> None:
    done = run_python(
        f"""
        import importlib.abc, sys

        BANNED = {SERVER_MODULES!r}

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BANNED):
                    raise ImportError(f"{{name}} is not installed here")
                return None

        sys.meta_path.insert(0, Refuse())
        from cordum.sdk import AsyncClient, Client, Worker

        Client("http://127.0.0.1:9").close()
        AsyncClient("http://127.0.0.1:9")
        worker = Worker(pool="p", topics=["job.x.*"], url="http://127.0.0.1:9")

        @worker.handle("job.x.y")
        def handler(ctx):
            return None

        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
