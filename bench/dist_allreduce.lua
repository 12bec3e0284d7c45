-- Allreduce of a ResNet34-sized gradient buffer (85 MB of float32) between
-- local ranks: one plain MPI_Allreduce, and the bucketed reducer (25 MB
-- buckets, as PyTorch DDP) started bucket by bucket then waited for.
--
--   ./machrt bench/dist_allreduce.lua [--np 2] [--mb 85] [--reps 10]
--
-- Started without an MPI launcher it runs itself under mpirun (with the
-- flags a root container needs). Prints the median time per reduction and
-- the bus bandwidth of a ring allreduce, 2 (N - 1) / N * bytes / time.
local mt = require "machrt"
local dist = require "machrt.dist"

local opts = { np = 2, mb = 85, reps = 10 }
local i = 1
while i <= #arg do
  local k = arg[i]:match("^%-%-(%w+)$")
  if not k or opts[k] == nil or not tonumber(arg[i + 1]) then
    error("usage: machrt bench/dist_allreduce.lua [--np N] [--mb MB] [--reps N]", 0)
  end
  opts[k] = tonumber(arg[i + 1])
  i = i + 2
end

if not require("machrt.dist_c").launcher() then
  local cmd = string.format("env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun "
    .. "--oversubscribe -np %d %s %s --np %d --mb %g --reps %d", opts.np, arg[-1], arg[0], opts.np, opts.mb,
    opts.reps)
  local ok = os.execute(cmd)
  os.exit(ok and 0 or 1)
end

local n = math.floor(opts.mb * 1e6 / 4)
local buf = mt.ones{ n }
local function median(list)
  table.sort(list)
  return list[(#list + 1) // 2]
end

local function timed(fn)
  local times = {}
  fn() -- warm-up: connections and buffers
  for r = 1, opts.reps do
    dist.barrier()
    local t0 = mt.clock()
    fn()
    times[r] = mt.clock() - t0
  end
  return median(times)
end

local plain = timed(function() dist.allreduce(buf, "mean") end)

-- The reducer over a stand-in model of PARAMS equal parameters (ResNet34
-- has 110 parameter tensors).
local PARAMS = 100
local model = { flat_grads = buf }
function model:parameters()
  local list, q = {}, n // PARAMS
  for p = 1, PARAMS do
    local len = p < PARAMS and q or n - (PARAMS - 1) * q
    list[p] = { name = "p" .. p, grad = buf:narrow(1, (p - 1) * q + 1, len) }
  end
  return list
end
local reducer = dist.GradReducer(model, { bucket_mb = 25 })
local bucketed = timed(function()
  for p = PARAMS, 1, -1 do reducer:ready(p) end
  reducer:wait()
end)

-- The machine's cores (nproc says 1 under mpirun, which binds each rank to one).
local function cores()
  local n = 0
  for line in io.lines("/proc/cpuinfo") do if line:match("^processor") then n = n + 1 end end
  return n
end

if dist.is_main() then
  local bytes, size = n * 4, dist.size()
  local bus = function(s) return 2 * (size - 1) / size * bytes / s / 1e9 end
  print(string.format("allreduce of %.1f MB float32, %d ranks on this machine (%s), median of %d:",
    bytes / 1e6, size, cores() .. " cores", opts.reps))
  print(string.format("  plain MPI_Allreduce      %7.1f ms   bus bandwidth %5.2f GB/s", plain * 1e3, bus(plain)))
  print(string.format("  %d buckets of ~25 MB      %7.1f ms   bus bandwidth %5.2f GB/s", #reducer.buckets,
    bucketed * 1e3, bus(bucketed)))
end
