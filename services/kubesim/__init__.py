"""kubesim: a Kubernetes API double served over loopback for tests and demos (it says so: see ``SIMULATED_HEADER``)."""
