"""View models for the cluster panes: pure functions from a KubeSnapshot, tested without Textual."""
