"""Switchboard's services: the gateway, and (in later work) the bundled backend, bench and kubesim."""
