-- mpirun for the tests (loaded with `require "mpi"`): the command line that
-- starts N ranks of ./machrt here, in a root container too (Open MPI refuses
-- root without the two ALLOW variables) and on a machine with fewer cores
-- than ranks (--oversubscribe), under a timeout so that a hang fails the
-- test instead of stalling the suite.
local M = {}

M.ENV = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1"

--- `timeout SECONDS mpirun -np N ./machrt ARGS` with the environment above.
function M.command(np, args, seconds)
    return string.format("env %s timeout %d mpirun --oversubscribe -np %d ./machrt %s", M.ENV, seconds or 120,
        np, args)
end

return M
