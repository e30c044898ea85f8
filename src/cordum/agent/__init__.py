"""Where cap-sdk-python's generated protobuf modules find each other.

The CAP SDK generates its modules for a top-level package named ``cordum`` (they import
``from cordum.agent.v1 import job_pb2``) and ships them as ``cap.pb.cordum.agent.v1``.
In this process ``cordum`` is this project, so those imports land here, and
:mod:`cordum.agent.v1` hands back the SDK's own modules. Import ``cordum`` before ``cap``
(every module of this package does): the SDK puts its ``cordum`` first on ``sys.path``,
and whichever ``cordum`` is imported first is the one a process keeps.
"""
