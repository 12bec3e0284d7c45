-- Run under mpirun by tests/lua/test_dist_mpi.lua: arg[1] = "error" (rank 1
-- raises a Lua error) or "kill" (rank 1 is killed by SIGKILL) while rank 0
-- waits in an allreduce that can never complete on its own.
local mt = require "machrt"
local dist = require "machrt.dist"
dist.barrier()
if dist.rank() == 1 then
    if arg[1] == "kill" then
        local pid = io.open("/proc/self/stat"):read("n")
        os.execute("kill -9 " .. math.tointeger(pid))
        os.execute("sleep 30")
    end
    error("deliberate failure in the training step")
end
dist.allreduce(mt.ones{ 4 }, "sum")
os.execute("sleep 30")
print("rank 0 was never stopped")
