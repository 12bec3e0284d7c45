-- Run under mpirun by tests/lua/test_dist_mpi.lua: every collective of
-- machrt.dist on inputs that depend on the rank. Rank 0 prints one JSON
-- object with what came back; the test compares it with values it works out
-- from the inputs. arg[1]: where rank 0 saves the reduced gradients (the
-- test compares two runs byte for byte).
local mt = require "machrt"
local sys = require "machrt.sys"
local nn = require "machrt.nn"
local dist = require "machrt.dist"

local rank, size = dist.rank(), dist.size()
local out = { size = size }

-- Values 0..4 plus 10 * rank.
local function ramp() return mt.arange(5) + 10 * rank end
for _, op in ipairs{ "sum", "mean", "max", "min" } do
    out[op] = dist.allreduce(ramp(), op):totable()
end
-- Double precision: parts that cancel leave the small total exactly
-- (float32 would round 2^53 + 3 to 2^53 + 4 or 2^53 and return 4 or 0).
out.numbers = dist.allreduce_numbers({ rank == 0 and 2 ^ 53 or -2 ^ 53 + 3 }, "sum")
out.numbers_mean = dist.allreduce_numbers({ rank }, "mean")
out.transport = { cpu = dist.transport("cpu"), cuda = dist.transport("cuda"),
                  nccl_built = require("machrt.dist_c").nccl_built() }
out.broadcast = dist.broadcast(mt.full({ 3 }, rank + 7), size - 1):totable()
out.broadcast_int = dist.broadcast(mt.full({ 2 }, rank + 3, "int64"), 0):totable()
-- A strided view goes through a contiguous copy and comes back in place.
local m = mt.arange(6):reshape{ 2, 3 } + rank
dist.allreduce(m:transpose(1, 2), "sum")
out.strided = m:totable()

-- Barrier: the last rank arrives late; nobody leaves before it arrives.
local t0 = mt.clock()
if rank == size - 1 then os.execute("sleep 0.5") end
dist.barrier()
out.barrier_seconds = dist.gather(mt.clock() - t0)

out.gather = dist.gather({ rank = rank, name = "r" .. rank })
out.gather_rows = dist.gather_rows(mt.full({ rank + 1, 2 }, rank))
out.gather_rows = out.gather_rows and out.gather_rows:totable()

-- Shards of a batch of 8, put back together in rank order.
local batch = {}
for i = 1, 8 do batch[i] = 100 + i end
out.shards = dist.gather((dist.shard(batch)))

-- broadcast_module: each rank builds its model from its own seed.
local function model()
    return nn.Sequential{ nn.Conv2d(1, 3, 3, { padding = 1 }), nn.BatchNorm2d(3), nn.ReLU(),
                                                nn.Flatten(), nn.Linear(3 * 4 * 4, 2) }
end
mt.manual_seed(100 + rank)
local net = model():flatten_parameters()
net.children["1"].buffers.running_mean:fill(rank + 1)
dist.broadcast_module(net)
local p = net.flat_params:clone()
local spread = dist.allreduce(p:clone(), "max") - dist.allreduce(p:clone(), "min")
out.module_spread = spread:abs():max()
out.module_is_rank0 = dist.gather(net.flat_params:sum())
out.buffer_after = net.children["1"].buffers.running_mean:totable()

-- Bucketed reducer against one plain allreduce of the same gradients.
mt.manual_seed(7 + rank)
net.flat_grads:copy(mt.randn{ net.flat_grads:numel() })
local plain = dist.allreduce(net.flat_grads:clone(), "mean")
local reducer = dist.GradReducer(net, { bucket_mb = 4 * 4 / 2 ^ 20 }) -- 4 floats a bucket
out.buckets = #reducer.buckets
local params = net:parameters()
for i = #params, 1, -1 do reducer:ready(i) end
out.started_before_wait = reducer:started()
reducer:wait()
out.reducer_vs_plain = (net.flat_grads - plain):abs():max()
if rank == 0 and arg[1] then mt.save(arg[1], { grads = net.flat_grads }) end
-- A second step on the same reducer.
net.flat_grads:copy(plain)
for i = 1, #params do reducer:ready(i) end
reducer:wait()
out.second_step_vs_plain = (net.flat_grads - plain):abs():max()

if rank == 0 then print(sys.json_encode(out)) end
