"""``cordum.agent.v1.<name>_pb2``: the CAP SDK's generated module of that name.

Each one is the module ``cap.pb.cordum.agent.v1.<name>_pb2`` itself, never a second copy
(a .proto file registered twice would clash in protobuf's descriptor pool).
"""

from __future__ import annotations

import importlib
from types import ModuleType

_SDK_PACKAGE = "cap.pb.cordum.agent.v1"


def __getattr__(name: str) -> ModuleType:
    if not name.endswith(("_pb2", "_pb2_grpc")):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f"{_SDK_PACKAGE}.{name}")
