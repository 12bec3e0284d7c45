-- ResNet34 training step and inference throughput of machrt in fp32 and in
-- bf16 GEMMs (mt.set_gemm_precision), side by side in one run with the peers
-- of bench/peers/peers_resnet.py (torchvision resnet34, 1-channel conv1, 2
-- threads each, one with --cpu-time): PyTorch 2.x fp32 and bf16 autocast (best of contiguous and
-- channels_last), ONNX Runtime fp32, OpenVINO fp32 and its default
-- precision. The peers run under $PEERS_PYTHON (a venv with torch,
-- torchvision, onnx, onnxruntime, openvino); without it a line says they
-- were skipped.
--
--   machrt bench/train_step.lua [--steps N] [--infer-reps N] [--batch N] [--rounds N] [--profile]
--                               [--cpu-time] [--train-only]
--
-- Training: batch 32 of 1 x 128 x 431 (10 s log-mel), BCE, AdamW.
-- Inference: batch 32 of 1 x 128 x 216 (5 s chunks), evaluation mode.
-- --profile prints time and GFLOP/s per layer type for one training step in
-- each precision measured. --train-only skips machrt's inference (layer by
-- layer and the inference plan).
local mt = require "machrt"
local nn = require "machrt.nn"
local optim = require "machrt.optim"

local cli = require "machrt.cli"
local cpuinfo = require "machrt.cpuinfo"

local CLI = { name = "train_step",
              options = { steps = "value", ["infer-reps"] = "value", batch = "value", rounds = "value",
                          profile = "flag", ["cpu-time"] = "flag", ["train-only"] = "flag" },
              usage = "usage: machrt bench/train_step.lua [--steps N] [--infer-reps N] [--batch N] [--rounds N] "
                      .. "[--profile] [--cpu-time] [--train-only]\n" }
local args = cli.parse(arg, CLI)
-- Best of 4 steps and 5 inference passes on both sides by default: on a
-- Zen 5 guest a bf16 step after the warm-up one still ran 1.47 s, the
-- next ones 1.22-1.31 s (its stem convolution 196 ms once, then 5.6 ms).
local opts = { steps = cli.integer(CLI, args, "steps", 1) or 4,
               infer_reps = cli.integer(CLI, args, "infer-reps", 1) or 5,
               batch = cli.integer(CLI, args, "batch", 1) or 32, profile = args.profile or false,
               -- --rounds N: machrt, then the peers, N times over; each figure is
               -- the best of its rounds, so that a machine whose speed drifts
               -- (a shared VM) moves both sides alike
               rounds = cli.integer(CLI, args, "rounds", 1) or 1,
               train_only = args["train-only"] or false }
-- --cpu-time: one thread, timed in CPU seconds (os.clock), which a loaded
-- machine stretches far less than wall-clock ones; the rates are per core,
-- and the peers (with $PEERS_PYTHON) run on one thread in CPU seconds too.
local cpu_time = args["cpu-time"] or false
local threads = cpu_time and 1 or 2
local clock = cpu_time and os.clock or mt.clock

mt.set_num_threads(threads)
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
            local t0 = clock(); local y = f(self, xin); p.fwd = p.fwd + clock() - t0
            -- Counted here: backward releases the output it consumed.
            if key == "Conv2d" then
                self.profile_flops = conv_flops(self, xin)
                p.flops_f = p.flops_f + self.profile_flops
            end
            return y
        end
        m.backward = function(self, xin, g, scratch)
            local t0 = clock(); local gi = b(self, xin, g, scratch); p.bwd = p.bwd + clock() - t0
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
        local t0 = clock(); fn(); local dt = clock() - t0
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


local infer_flops -- direct-convolution FLOPs of one inference batch
local function measure_ours()
    local ours = {}
    for _, precision in ipairs{"fp32", "bf16"} do
        mt.set_gemm_precision(precision)
        if mt.gemm_precision() == precision then
            model:training()
            step() -- warm-up: allocates every buffer once (and creates the GEMM primitives)
            ours[precision] = {train = B / best_time(opts.steps, step)}
            if precision == "fp32" then ours.train_rss = peak_rss_mb() end
        end
        if mt.gemm_precision() == precision and not opts.train_only then
            model:evaluate()
            local xi = mt.randn{B, 1, 128, 216}
            model:forward(xi)
            if not infer_flops then
                infer_flops = 0
                model:apply(function(m) if m.__name == "Conv2d" then infer_flops = infer_flops + conv_flops(m) end end)
            end
            ours[precision].infer = B / best_time(opts.infer_reps, function() model:forward(xi) end)
            -- the fused inference plan (nn.compile_inference), same weights and input
            local plan = nn.compile_inference(model, {precision = precision})
            plan:forward(xi)
            ours[precision].plan = B / best_time(opts.infer_reps, function() plan:forward(xi) end)
            plan = nil
        end
    end
    mt.set_gemm_precision("fp32")
    return ours
end

-- the peers on as many threads as machrt, and in CPU time with --cpu-time
local peers_python = os.getenv("PEERS_PYTHON")
local function measure_peers()
    local peer = {}
    if not peers_python or peers_python == "" then return peer end
    local py = io.popen(("%s bench/peers/peers_resnet.py %d %d %d %d%s 2>/dev/null"):format(
        peers_python, opts.steps, opts.infer_reps, B, threads, cpu_time and " cpu-time" or ""))
    for line in py:lines() do
        local k, v = line:match("^(%S+) (.+)$")
        if k then peer[k] = tonumber(v) or v end
    end
    py:close()
    return peer
end

-- The rounds, interleaved; the best of each figure (rates: higher is better).
local function keep_best(into, from)
    for k, v in pairs(from) do
        if type(v) == "table" then
            into[k] = into[k] or {}
            keep_best(into[k], v)
        elseif type(v) ~= "number" or into[k] == nil or v > into[k] then
            into[k] = v
        end
    end
end
local ours, peer = {}, {}
for r = 1, opts.rounds do
    if opts.rounds > 1 then
        io.stderr:write(("round %d of %d: machrt, then the peers\n"):format(r, opts.rounds))
    end
    local mine = measure_ours()
    if r > 1 then mine.train_rss = nil end -- the high-water mark: round 1's training alone
    keep_best(ours, mine)
    keep_best(peer, measure_peers())
end

if opts.profile then
    model:training()
    instrument(model)
    -- Each precision measured above, its primitives already made.
    for _, precision in ipairs{"fp32", "bf16"} do
        if ours[precision] then
            mt.set_gemm_precision(precision)
            for _, p in pairs(profile) do p.fwd, p.bwd, p.flops_f, p.flops_b = 0, 0, 0, 0 end
            local t0 = clock(); step(); local total = clock() - t0
            print(("profile of one %s training step (batch %d): %.2f s"):format(precision, B, total))
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
    end
    mt.set_gemm_precision("fp32")
end


local model_name, isa, flags = cpuinfo.cpu()
print(("cpu: %s, %d thread%s%s; load average %s"):format(model_name, threads, threads > 1 and "s" or "",
    cpu_time and ", CPU time" or "", cpuinfo.loadavg()))
print(("cpu flags: %s"):format(isa))
flags = flags or {}
if not flags.amx_bf16 and flags.avx512_bf16 then
    print("no AMX on this CPU: machrt's bf16 runs oneDNN's avx512_bf16 kernels; AMX figures unmeasured")
elseif not flags.amx_bf16 then
    print("no AMX and no avx512_bf16 on this CPU: machrt computes in fp32 when bf16 is asked for; "
          .. "bf16 and AMX figures unmeasured (the peers' bf16 lines show what they do here)")
end
print(("%-54s %12s %12s"):format("ResNet34, batch " .. B, "train smp/s", "infer chk/s"))
local function fmt(v) return v and ("%12.2f"):format(v) or ("%12s"):format("-") end
local function row(label, train_v, infer_v) print(("%-54s %s %s"):format(label, fmt(train_v), fmt(infer_v))) end
for _, precision in ipairs{"fp32", "bf16"} do
    if ours[precision] then
        row("machrt " .. precision .. " (layer by layer)", ours[precision].train, ours[precision].infer)
        row("machrt " .. precision .. " inference plan (nn.compile_inference)", nil, ours[precision].plan)
    else
        row("machrt " .. precision .. " (this CPU has no bf16)", nil, nil)
    end
end
-- The best of a peer's layouts, and which one it was.
local function best_layout(prefix, what)
    local c, l = peer[prefix .. "_contiguous." .. what], peer[prefix .. "_channels_last." .. what]
    if not c and not l then return nil end
    if not l or (c and c >= l) then return c, "contiguous" end
    return l, "channels_last"
end
local best = {}
if not peers_python or peers_python == "" then
    print("peers skipped: PEERS_PYTHON is not set (a Python with torch 2.x, torchvision, onnx, onnxruntime, openvino)")
else
    for k, v in pairs(peer) do
        if k:match("^skip%.") then print(("peer skipped: %s: %s"):format(k:sub(6), v)) end
    end
    for _, p in ipairs{{"torch_fp32", "PyTorch fp32"}, {"torch_bf16", "PyTorch bf16 autocast"}} do
        local tr, tl = best_layout(p[1], "train_samples_per_s")
        local ir, il = best_layout(p[1], "infer_chunks_per_s")
        best[p[1] .. ".train"], best[p[1] .. ".infer"] = tr, ir
        row(("%s (%s / %s)"):format(p[2], tl or "-", il or "-"), tr, ir)
    end
    row("ONNX Runtime fp32", nil, peer["onnxruntime_fp32.infer_chunks_per_s"])
    row("OpenVINO fp32", nil, peer["openvino_fp32.infer_chunks_per_s"])
    row(("OpenVINO default (%s)"):format(peer["openvino_default.precision"] or "?"), nil,
        peer["openvino_default.infer_chunks_per_s"])
end
print(("%-54s %9.0f MB"):format("peak RSS (machrt, fp32 training)", ours.train_rss or 0))

-- The goals: 1.5x the fastest peer of the same kind.
local function max_of(...)
    local m
    for _, v in ipairs{...} do if v and (not m or v > m) then m = v end end
    return m
end
local function goal(label, mine, theirs)
    if not mine or not theirs then
        print(("goal %-44s unmeasured"):format(label))
    else
        print(("goal %-44s %5.2fx %s"):format(label, mine / theirs, mine / theirs >= 1.5 and "met" or "not met"))
    end
end
local f32, b16 = ours.fp32 or {}, ours.bf16 or {}
goal("fp32 training >= 1.5x fastest fp32 peer", f32.train, best["torch_fp32.train"])
goal("fp32 inference >= 1.5x fastest fp32 peer", f32.infer,
    max_of(best["torch_fp32.infer"], peer["onnxruntime_fp32.infer_chunks_per_s"], peer["openvino_fp32.infer_chunks_per_s"]))
-- Without bf16 on the CPU, a run that asks for mixed precision trains in
-- fp32 (and says so): that is what such a run gets next to the peers' bf16.
local asked = ours.bf16 and b16 or f32
local in_fp32 = ours.bf16 and "" or " (machrt in fp32)"
goal("bf16 training >= 1.5x PyTorch bf16 autocast" .. in_fp32, asked.train, best["torch_bf16.train"])
goal("bf16 inference >= 1.5x OpenVINO default" .. in_fp32, asked.infer, peer["openvino_default.infer_chunks_per_s"])
goal("fp32 inference plan >= 1.5x fastest fp32 peer", f32.plan,
    max_of(best["torch_fp32.infer"], peer["onnxruntime_fp32.infer_chunks_per_s"], peer["openvino_fp32.infer_chunks_per_s"]))
goal("bf16 inference plan >= 1.5x OpenVINO default" .. in_fp32, asked.plan,
    peer["openvino_default.infer_chunks_per_s"])

-- Fraction of peak: direct-convolution FLOPs over the threads' peak, timed
-- on one core by mt.cpu_peaks() (independent FMA chains in fp32, bf16 dot
-- products with avx512_bf16) and multiplied by the threads: the clock
-- /proc/cpuinfo gives is the nominal one, and FLOP per cycle differ between
-- CPUs with the same flags. AMX is not timed: its line uses 1024 bf16
-- FLOP/cycle a core at that nominal clock, an estimate. Winograd does fewer
-- multiplications than counted, so its fraction can pass what direct
-- convolution could reach.
local peaks = mt.cpu_peaks()
local mhz
do
    local f = io.open("/proc/cpuinfo")
    if f then
        mhz = tonumber(f:read("a"):match("cpu MHz%s*:%s*([%d.]+)"))
        f:close()
    end
end
local gflop_chunk = (infer_flops or 0) / B * 1e-9
if infer_flops then
    print(("inference: %.2f GFLOP of direct convolution a chunk; peak timed on one core x %d thread%s "
        .. "(mt.cpu_peaks): fp32 %s, bf16 %s"):format(gflop_chunk, threads, threads > 1 and "s" or "",
        peaks.fp32 and ("%.0f GFLOP/s"):format(peaks.fp32) or "not timed",
        flags.amx_bf16 and ("AMX estimate 1024 FLOP/cycle at %s MHz"):format(mhz or "?")
        or (peaks.bf16 and ("%.0f GFLOP/s (avx512_bf16)"):format(peaks.bf16) or "none")))
end
local function peak_line(label, chunks, per_core)
    if not chunks or not per_core then return end
    local gflops = chunks * gflop_chunk
    local peak = threads * per_core
    print(("  %-52s %8.0f GFLOP/s  %5.1f%% of %.0f"):format(label, gflops, 100 * gflops / peak, peak))
end
local bf16_peak = flags.amx_bf16 and mhz and 1024 * mhz * 1e-3 or peaks.bf16
peak_line("machrt fp32 layer by layer", f32.infer, peaks.fp32)
peak_line("machrt fp32 inference plan", f32.plan, peaks.fp32)
peak_line(flags.amx_bf16 and "machrt bf16 inference plan (of the AMX estimate)" or "machrt bf16 inference plan",
          b16.plan, bf16_peak)
