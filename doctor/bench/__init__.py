"""GPU microbenchmarks: matmul, memory bandwidth and Hessian-vector products, measured in a subprocess
of the job's interpreter (worker/) and judged by the bench.* checks against sourced reference figures."""
