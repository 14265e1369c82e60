"""`doctor check --distributed`: the one flow (doctor.session.check) run on every rank of a torchrun or srun
launch, then compared across ranks on rank 0 over a gloo process group (doctor.distributed.driver), with an
all-reduce bus-bandwidth test (doctor.distributed.allreduce). torch is imported only in this mode."""
