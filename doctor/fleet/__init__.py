"""Fleet mode: `doctor merge` reads the `doctor check --format json` report of every node and shows the fleet:
per node and check the status, why each failing node fails, version skew, the nodes that sent no report."""
from .merge import Expected, Fleet, Node, merge
from .node import NodeReport, read

__all__ = ["Expected", "Fleet", "Node", "NodeReport", "merge", "read"]
