"""The control plane's logic: transport-agnostic and adapter-agnostic.

Services depend on models, the policy kernel and the ports, never on an adapter or HTTP.
"""
