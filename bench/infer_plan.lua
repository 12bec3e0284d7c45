-- The fp32 inference plan alone (nn.compile_inference) on ResNet34, batch
-- of 1 x 128 x 216 (5 s chunks): one thread, CPU seconds (os.clock) of the
-- best of --reps forwards after one warm-up, so that a loaded machine
-- stretches the figure as little as possible. --describe first prints each
-- step's implementation (plan:describe). --threads N (run it with
-- OMP_WAIT_POLICY=passive) also prints the wall time: CPU seconds that stay
-- those of one thread mean the threads share the work without spinning.
--
--   machrt bench/infer_plan.lua [--batch N] [--reps N] [--threads N] [--describe]
local mt = require "machrt"
local nn = require "machrt.nn"
local cli = require "machrt.cli"

local CLI = { name = "infer_plan",
              options = { batch = "value", reps = "value", threads = "value", describe = "flag" },
              usage = "usage: machrt bench/infer_plan.lua [--batch N] [--reps N] [--threads N] [--describe]\n" }
local args = cli.parse(arg, CLI)
local B = cli.integer(CLI, args, "batch", 1) or 32
local reps = cli.integer(CLI, args, "reps", 1) or 3
local threads = cli.integer(CLI, args, "threads", 1) or 1

mt.set_num_threads(threads)
mt.manual_seed(0)
local model = nn.resnet34{in_channels = 1, num_classes = 4, pool = "avg"}:evaluate()
local x = mt.randn{B, 1, 128, 216}
local plan = nn.compile_inference(model, {precision = "fp32"})
if args.describe then
    local reorders, steps = plan:describe(B, 128, 216)
    io.write(steps, ("%d reorders between layers\n"):format(reorders))
end
plan:forward(x)
local best, best_wall = math.huge, math.huge
for _ = 1, reps do
    local t0, w0 = os.clock(), mt.clock()
    plan:forward(x)
    best, best_wall = math.min(best, os.clock() - t0), math.min(best_wall, mt.clock() - w0)
end
print(require("machrt.cpuinfo").line())
if threads == 1 then
    print(("ResNet34 fp32 inference plan, batch %d, one thread: %.3f CPU s, %.2f chunks/s"):format(B, best, B / best))
else
    print(("ResNet34 fp32 inference plan, batch %d, %d threads: %.3f CPU s (%.2f chunks per CPU s), "
        .. "%.3f s wall, %.2f chunks/s"):format(B, threads, best, B / best, best_wall, B / best_wall))
end
