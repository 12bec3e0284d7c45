-- Data-parallel costs on this machine, with local ranks under mpirun.
--
--   ./machrt bench/dist.lua allreduce [--np 2] [--mb 85] [--reps 10]
--   ./machrt bench/dist.lua step [--batch 32] [--steps 3]
--
-- allreduce: a ResNet34-sized gradient buffer (85 MB of float32) reduced by
-- one plain MPI_Allreduce, and by the bucketed reducer (25 MB buckets, as
-- PyTorch DDP) started bucket by bucket then waited for; the median time
-- and the bus bandwidth of a ring allreduce, 2 (N - 1) / N * bytes / time.
--
-- step: ResNet34 forward + backward + gradient reduction (buckets start as
-- modules finish their backward: GradReducer:attach) for 1 process x 2
-- threads, then 2 ranks x 1 thread, the same global batch; the AdamW step
-- is left out (the same on every rank as in one process). Printed:
-- samples/s of each layout, the time a rank waits in reducer:wait() (what
-- overlap did not hide) and one plain allreduce of the whole buffer.
--
-- Started without an MPI launcher, it runs itself under mpirun with the
-- flags a root container needs.
local mt = require "machrt"
local nn = require "machrt.nn"
local dist = require "machrt.dist"

local USAGE = "usage: machrt bench/dist.lua allreduce [--np N] [--mb MB] [--reps N]\n"
    .. "       machrt bench/dist.lua step [--batch N] [--steps N]"
local cli = require "machrt.cli"

local DEFAULTS = { allreduce = { np = 2, mb = 85, reps = 10 }, step = { batch = 32, steps = 3, threads = 0 } }
local CLI = { name = "dist", usage = USAGE .. "\n", positional = true,
              options = { np = "value", mb = "value", reps = "value", batch = "value", steps = "value",
                          threads = "value" } }
local args = cli.parse(arg, CLI)
local mode = args.positional[1]
local opts = DEFAULTS[mode]
if not opts or #args.positional > 1 then cli.fail(CLI, "give one mode: allreduce or step") end
for k in pairs(CLI.options) do
    if args[k] ~= nil then
        if opts[k] == nil then cli.fail(CLI, string.format("--%s is not an option of %s", k, mode)) end
        opts[k] = tonumber(args[k]) or cli.fail(CLI, string.format("--%s needs a number, got '%s'", k, args[k]))
    end
end

local function relaunch(np, extra)
    local words = { "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np",
                                    np, arg[-1], arg[0], mode }
    for k, v in pairs(opts) do words[#words + 1] = ("--%s %s"):format(k, v) end
    words[#words + 1] = extra or ""
    return os.execute(table.concat(words, " "))
end
local launched = require("machrt.dist_c").launcher() ~= nil

local function median(list)
    local c = table.move(list, 1, #list, 1, {})
    table.sort(c)
    return c[(#c + 1) // 2]
end

-- Median of `reps` timed calls after one warm-up (connections, buffers).
local function timed(reps, fn)
    local times, extra = {}, {}
    fn()
    for r = 1, reps do
        collectgarbage()
        dist.barrier()
        local t0 = mt.clock()
        extra[r] = fn()
        times[r] = mt.clock() - t0
    end
    return median(times), extra[1] and median(extra)
end

-- The machine's cores (nproc says 1 under mpirun, which binds each rank to one).
local function cores()
    local n = 0
    for line in io.lines("/proc/cpuinfo") do if line:match("^processor") then n = n + 1 end end
    return n
end

local function bench_allreduce()
    if not launched then os.exit(relaunch(opts.np) and 0 or 1) end
    local n = math.floor(opts.mb * 1e6 / 4)
    local buf = mt.ones{ n }
    local plain = timed(opts.reps, function() dist.allreduce(buf, "mean") end)
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
    local bucketed = timed(opts.reps, function()
        for p = PARAMS, 1, -1 do reducer:ready(p) end
        reducer:wait()
    end)
    if dist.is_main() then
        local bytes, size = n * 4, dist.size()
        local bus = function(s) return 2 * (size - 1) / size * bytes / s / 1e9 end
        print(string.format("allreduce of %.1f MB float32, %d ranks on this machine (%d cores), median of %d:",
            bytes / 1e6, size, cores(), opts.reps))
        print(string.format("  plain MPI_Allreduce      %7.1f ms   bus bandwidth %5.2f GB/s", plain * 1e3, bus(plain)))
        print(string.format("  %d buckets of ~25 MB      %7.1f ms   bus bandwidth %5.2f GB/s", #reducer.buckets,
            bucketed * 1e3, bus(bucketed)))
    end
end

local function bench_step()
    if not launched and opts.threads == 0 then
        opts.threads = 2
        assert(os.execute(table.concat({ arg[-1], arg[0], "step", "--batch", opts.batch, "--steps", opts.steps,
            "--threads 2" }, " ")))
        opts.threads = 1
        os.exit(relaunch(2) and 0 or 1)
    end
    mt.set_num_threads(math.tointeger(opts.threads))
    local size = dist.size()
    local local_batch = dist.local_batch_size(math.tointeger(opts.batch), size, "--batch")
    mt.manual_seed(0)
    local model = nn.resnet34{ in_channels = 1, num_classes = 4, pool = "avg" }:flatten_parameters()
    dist.broadcast_module(model)
    local reducer = dist.GradReducer(model):attach(model)
    local loss_fn = nn.BCEWithLogitsLoss()
    local x = mt.randn{ local_batch, 1, 128, 431 }
    local target = mt.zeros{ local_batch, 4 }
    target:narrow(2, 1, 1):fill(1)
    local step_s, wait_s = timed(math.tointeger(opts.steps), function()
        model:zero_grad()
        local logits = model:forward(x)
        loss_fn:forward(logits, target)
        model:backward(x, loss_fn:backward(logits, target))
        local t0 = mt.clock()
        reducer:wait()
        return mt.clock() - t0
    end)
    local plain = timed(1, function() dist.allreduce(model.flat_grads, "mean") end)
    if dist.is_main() then
        print(string.format("%d process(es) x %d thread(s), global batch %d (%d per rank): step %.2f s, "
            .. "%.2f samples/s", size, opts.threads, opts.batch, local_batch, step_s, opts.batch / step_s))
        if size > 1 then
            print(string.format("  gradients %.1f MB in %d buckets; wait() after backward %.3f s (%.1f %% of "
                .. "the step); one plain allreduce of them all %.3f s (%.1f %% of the step)",
                model.flat_grads:numel() * 4 / 1e6, #reducer.buckets, wait_s, 100 * wait_s / step_s, plain,
                100 * plain / step_s))
        end
    end
end

if mode == "allreduce" then bench_allreduce() else bench_step() end
