-- ResNet34 training step and inference throughput, side by side with PyTorch
-- (torchvision resnet34, 1-channel conv1, 2 threads each).
--
--   machrt bench/train_step.lua [--steps N] [--infer-reps N] [--batch N] [--profile]
--
-- Training: batch 32 of 1 x 128 x 431 (10 s log-mel), BCE, AdamW.
-- Inference: batch 32 of 1 x 128 x 216 (5 s chunks), evaluation mode.
-- --profile prints time and GFLOP/s per layer type for one training step.
local mt = require "machrt"
local nn = require "machrt.nn"
local optim = require "machrt.optim"

local cli = require "machrt.cli"

local CLI = { name = "train_step",
              options = { steps = "value", ["infer-reps"] = "value", batch = "value", profile = "flag" },
              usage = "usage: machrt bench/train_step.lua [--steps N] [--infer-reps N] [--batch N] [--profile]\n" }
local args = cli.parse(arg, CLI)
local opts = { steps = cli.integer(CLI, args, "steps", 1) or 2,
               infer_reps = cli.integer(CLI, args, "infer-reps", 1) or 3,
               batch = cli.integer(CLI, args, "batch", 1) or 32, profile = args.profile or false }

mt.set_num_threads(2)
mt.manual_seed(0)
local B = opts.batch
local model = nn.resnet34{in_channels = 1, num_classes = 4, pool = "avg"}
local opt = optim.AdamW(model:parameters(), {lr = 1e-3, weight_decay = 0})
local loss_fn = nn.BCEWithLogitsLoss()
local x = mt.randn{B, 1, 128, 431}
local target = mt.zeros{B, 4}
target:narrow(2, 1, 1):fill(1)

-- Per-layer-type timing: wrap every leaf module's forward and backward.
local profile = {}
local function conv_flops(m, x_in)
    local y = m.output
    return 2 * y:size(1) * y:size(2) * y:size(3) * y:size(4) * m.cin * m.kh * m.kw
end
local function instrument(root)
    root:apply(function(m)
        if #m.child_order > 0 or m.__name == "BasicBlock" then return end
        local f, b = m.forward, m.backward
        local key = m.__name
        profile[key] = profile[key] or {fwd = 0, bwd = 0, flops_f = 0, flops_b = 0}
        local p = profile[key]
        m.forward = function(self, xin)
            local t0 = mt.clock(); local y = f(self, xin); p.fwd = p.fwd + mt.clock() - t0
            -- Counted here: backward releases the output it consumed.
            if key == "Conv2d" then
                self.profile_flops = conv_flops(self, xin)
                p.flops_f = p.flops_f + self.profile_flops
            end
            return y
        end
        m.backward = function(self, xin, g, scratch)
            local t0 = mt.clock(); local gi = b(self, xin, g, scratch); p.bwd = p.bwd + mt.clock() - t0
            if key == "Conv2d" then
                p.flops_b = p.flops_b + self.profile_flops * (self.need_input_grad and 2 or 1)
            end
            return gi
        end
    end)
    -- BasicBlock adds the residual itself; count that as its own row.
end

local function step()
    opt:zero_grad()
    local logits = model:forward(x)
    loss_fn:forward(logits, target)
    model:backward(x, loss_fn:backward(logits, target))
    opt:step()
end

local function best_time(reps, fn)
    local best = math.huge
    for _ = 1, reps do
        collectgarbage()
        local t0 = mt.clock(); fn(); local dt = mt.clock() - t0
        if dt < best then best = dt end
    end
    return best
end

local function peak_rss_mb()
    local f = io.open("/proc/self/status")
    if not f then return 0 end
    local s = f:read("a"); f:close()
    return (tonumber(s:match("VmHWM:%s+(%d+)")) or 0) / 1024
end

model:training()
step() -- warm-up: allocates every buffer once
local t_train = best_time(opts.steps, step)
local train_rss = peak_rss_mb()

if opts.profile then
    instrument(model)
    local t0 = mt.clock(); step(); local total = mt.clock() - t0
    print(("profile of one training step (batch %d): %.2f s"):format(B, total))
    print(("%-20s %10s %10s %12s"):format("layer type", "forward s", "backward s", "GFLOP/s"))
    local rows = {}
    for k, p in pairs(profile) do rows[#rows + 1] = {k, p} end
    table.sort(rows, function(a, b) return a[2].fwd + a[2].bwd > b[2].fwd + b[2].bwd end)
    local accounted = 0
    for _, r in ipairs(rows) do
        local p = r[2]
        accounted = accounted + p.fwd + p.bwd
        local gf = p.flops_f > 0 and ("%5.1f / %5.1f"):format(p.flops_f / p.fwd * 1e-9, p.flops_b / p.bwd * 1e-9) or ""
        print(("%-20s %10.3f %10.3f %12s"):format(r[1], p.fwd, p.bwd, gf))
    end
    print(("%-20s %21.3f"):format("other (residual adds, loss, optimizer)", total - accounted))
    print("")
end

model:evaluate()
local xi = mt.randn{B, 1, 128, 216}
model:forward(xi)
local t_infer = best_time(opts.infer_reps, function() model:forward(xi) end)

local peer = {}
local py = io.popen(("/usr/bin/python3 bench/peers/torch_resnet.py %d %d %d 2>/dev/null"):format(
    opts.steps, opts.infer_reps, B))
for line in py:lines() do
    local k, v = line:match("^(%S+) ([%d.]+)")
    if k then peer[k] = tonumber(v) end
end
py:close()

local function row(label, ours, theirs, unit)
    if theirs then
        print(("%-34s %9.2f %s %9.2f %s %7.2fx"):format(label, ours, unit, theirs, unit, ours / theirs))
    else
        print(("%-34s %9.2f %s %20s"):format(label, ours, unit, "(PyTorch not installed)"))
    end
end
print(("%-34s %14s %14s %8s"):format("ResNet34, 2 threads", "machrt", "PyTorch", "ratio"))
row(("training, batch %d x 1x128x431"):format(B), B / t_train, peer.train_samples_per_s, "samples/s")
row(("inference, batch %d x 1x128x216"):format(B), B / t_infer, peer.infer_chunks_per_s, "chunks/s ")
print(("%-34s %9.0f MB %19s"):format("peak RSS (training process)", train_rss,
    peer.peak_rss_mb and ("%9.0f MB"):format(peer.peak_rss_mb) or "-"))
