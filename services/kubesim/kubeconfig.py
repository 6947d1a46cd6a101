"""The kubeconfig kubesim writes: one cluster, a user per role (bearer tokens) and contexts ``kubesim`` (admin)
and ``kubesim-viewer``, so the official client and kubectl reach it the way they reach a real cluster."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import yaml

CONTEXT = "kubesim"


def new_tokens() -> dict[str, str]:
    """Fresh random bearer tokens, mapped to roles."""
    return {secrets.token_urlsafe(24): "admin", secrets.token_urlsafe(24): "viewer"}


def kubeconfig(server: str, tokens: dict[str, str], ca_pem: bytes | None = None,
               namespace: str = "default") -> dict[str, object]:
    by_role = {role: token for token, role in tokens.items()}
    users, contexts = [], []
    for role, token in sorted(by_role.items()):
        context = CONTEXT if role == "admin" else f"{CONTEXT}-{role}"
        users.append({"name": f"kubesim-{role}", "user": {"token": token}})
        contexts.append({"name": context, "context": {"cluster": CONTEXT, "user": f"kubesim-{role}",
                                                      "namespace": namespace}})
    cluster: dict[str, str] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": users,
        "contexts": contexts,
        "current-context": CONTEXT,
    }


def write_kubeconfig(path: Path, server: str, tokens: dict[str, str], ca_pem: bytes | None = None) -> Path:
    """Writes the file readable by its owner only (it holds bearer tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        yaml.safe_dump(kubeconfig(server, tokens, ca_pem), handle, sort_keys=False)
    os.chmod(path, 0o600)
    return path
