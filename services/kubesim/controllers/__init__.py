"""Controllers that play a cluster's part inside kubesim: workloads make pods, the scheduler binds them to nodes,
the kubelet stand-in moves them through their phases. ``runner.Controllers`` ticks them all on the server's loop."""
