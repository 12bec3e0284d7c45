-- bf16 GEMMs on the CPU (mt.set_gemm_precision("bf16"), and
-- environment.mixed_precision_training through train.mixed_precision):
-- training converges like fp32, evaluation logits stay near fp32's, and a
-- CPU without bf16 says so and trains in fp32. The GEMMs themselves are
-- checked against a bf16-rounded reference in tests/c/test_gemm.c.
local mt = require "machrt"
local nn = require "machrt.nn"
local optim = require "machrt.optim"
local train = require "machrt.train"
local F = require "files"
local A = require "assert"

local tests, test, tmpdir = F.suite()

local function supported()
    local before = mt.set_gemm_precision("fp32")
    local ok = pcall(mt.set_gemm_precision, "bf16") and mt.gemm_precision() == "bf16"
    mt.set_gemm_precision(before)
    if not ok then A.skip("this CPU has no bf16 GEMMs (avx512_bf16 or AMX)") end
    return ok
end

-- A small convolutional net on a task it can learn: the label says which
-- half of the image is brighter. Returns the losses of `steps` AdamW steps.
local function train_losses(precision, steps)
    mt.set_gemm_precision(precision)
    mt.manual_seed(11)
    local net = nn.Sequential{
        nn.Conv2d(1, 16, 3, {padding = 1}), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, {padding = 1}), nn.BatchNorm2d(16), nn.ReLU(),
        nn.GeM{p = 1}, nn.Flatten(), nn.Linear(16, 2),
    }:flatten_parameters()
    local opt = optim.AdamW(net:parameters(), {lr = 1e-2, weight_decay = 0})
    local loss_fn = nn.BCEWithLogitsLoss()
    local losses = {}
    mt.manual_seed(12)
    for s = 1, steps do
        local x = mt.rand{16, 1, 12, 12}
        local target = mt.zeros{16, 2}
        for i = 1, 16 do
            local img = x:select(1, i)
            local top = img:narrow(2, 1, 6):sum()
            local bottom = img:narrow(2, 7, 6):sum()
            target:set(1, i, top > bottom and 1 or 2)
            -- make the difference visible: brighten the brighter half
            img:narrow(2, top > bottom and 1 or 7, 6):mul_(1.3)
        end
        net:zero_grad()
        local logits = net:forward(x)
        losses[s] = loss_fn:forward(logits, target)
        net:backward(x, loss_fn:backward(logits, target))
        opt:step()
    end
    mt.set_gemm_precision("fp32")
    return losses
end

local function mean(t, from, to)
    local s = 0
    for i = from, to do s = s + t[i] end
    return s / (to - from + 1)
end

test("bf16 training converges like fp32", function()
    supported()
    local steps = 60
    local f32, b16 = train_losses("fp32", steps), train_losses("bf16", steps)
    local start, f_end, b_end = mean(f32, 1, 5), mean(f32, steps - 9, steps), mean(b16, steps - 9, steps)
    A.truthy(f_end < 0.5 * start, ("fp32 learns the task: %.4f -> %.4f"):format(start, f_end))
    A.truthy(math.abs(b_end - f_end) < 0.1 * start,
        ("bf16 ends where fp32 does: %.4f vs %.4f (start %.4f)"):format(b_end, f_end, start))
    print(("# losses: start %.4f, last ten steps fp32 %.4f, bf16 %.4f"):format(start, f_end, b_end))
    -- and it is not fp32 under another name
    local differs = false
    for i = 1, steps do differs = differs or f32[i] ~= b16[i] end
    A.truthy(differs, "bf16 losses differ from fp32's")
end)

test("bf16 evaluation logits of a ResNet34 are within 1e-2 of fp32 (relative to the largest)", function()
    supported()
    mt.manual_seed(0)
    local m = nn.resnet34{in_channels = 1, num_classes = 4}:evaluate()
    mt.manual_seed(1)
    local x = mt.randn{2, 1, 64, 48}
    mt.set_gemm_precision("fp32")
    local f32 = m:forward(x):clone()
    mt.set_gemm_precision("bf16")
    local b16 = m:forward(x):clone()
    mt.set_gemm_precision("fp32")
    local rel = (b16 - f32):abs():max() / f32:abs():max()
    A.truthy(rel < 1e-2, ("relative difference %.3e"):format(rel))
    A.truthy(rel > 0, "bf16 logits are not fp32's")
    print(("# bf16 logits: %.3e of the largest fp32 logit"):format(rel))
end)

test("mixed_precision_training on the CPU: bf16 GEMMs where they pay, no loss scaler", function()
    supported()
    local cfg = {environment = {mixed_precision_training = true}}
    A.eq(train.mixed_precision(cfg, "cpu"), nil, "no loss scaling in bf16")
    local peaks = mt.cpu_peaks()
    local pays = mt.cpu_bf16() == "amx" or peaks.bf16 / peaks.fp32 >= 1.5
    A.eq(mt.gemm_precision(), pays and "bf16" or "fp32", "bf16 where it pays (the next test says why)")
    mt.set_gemm_precision("fp32")
    cfg.environment.mixed_precision_training = false
    A.eq(train.mixed_precision(cfg, "cpu"), nil)
    A.eq(mt.gemm_precision(), "fp32", "off leaves fp32")
end)

-- The run's script under MACHRT_CPU_FEATURES=`hide`: its output.
local function run_mixed(hide)
    local script = tmpdir() .. "/mixed.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
        local mt = require "machrt"
        local train = require "machrt.train"
        local cfg = {environment = {mixed_precision_training = true}}
        for _ = 1, 3 do train.mixed_precision(cfg, "cpu") end
        print("precision " .. mt.gemm_precision() .. " units " .. tostring(mt.cpu_bf16()))
        local peaks = mt.cpu_peaks()
        print(("peaks bf16/fp32 %.2f"):format((peaks.bf16 or 0) / peaks.fp32))
        mt.set_gemm_precision("bf16")
        print("forced " .. mt.gemm_precision())
    ]])
    f:close()
    local code, text = F.run("MACHRT_CPU_FEATURES=" .. hide .. " ./machrt " .. script)
    A.eq(code, 0, text)
    return text
end

local function count(text, s) return select(2, text:gsub(s:gsub("%p", "%%%0"), "")) end

test("avx512_bf16 without AMX: bf16 where its dot products time at 1.5x the FMAs, else fp32; said once",
     function()
    supported()
    local text = run_mixed("-amx_bf16")
    local speedup = tonumber(text:match("peaks bf16/fp32 ([%d.]+)"))
    A.truthy(speedup and speedup > 0, "the timed ratio: " .. text)
    if speedup >= 1.5 then
        A.eq(count(text, "precision bf16 units avx512_bf16"), 1, text)
        A.eq(count(text, "mixed precision: bf16 GEMM operands on the CPU (avx512_bf16, dot products timed at "
                         .. ("%.2fx"):format(speedup)), 1, text)
    else
        A.eq(count(text, "precision fp32 units avx512_bf16"), 1, text)
        A.eq(count(text, ("bf16 dot products time at %.2fx its fp32 FMAs (below 1.5x; no AMX)"):format(speedup)),
             1, text)
    end
    A.eq(count(text, "forced bf16"), 1, "mt.set_gemm_precision('bf16') still forces bf16: " .. text)
end)

test("cpu_peaks: timed once per process, positive where the CPU has the units, nil where not", function()
    local p = mt.cpu_peaks()
    A.truthy(p.fp32 and p.fp32 > 0, "an fp32 peak on a CPU with AVX2 or AVX-512")
    A.eq(mt.cpu_peaks().fp32, p.fp32, "the same figure on a second call")
    local flags = select(3, require("machrt.cpuinfo").cpu())
    A.eq(p.bf16 ~= nil, flags.avx512_bf16 == true, "bf16 timed where the CPU has avx512_bf16")
    local script = tmpdir() .. "/peaks.lua"
    local f = assert(io.open(script, "w"))
    f:write('local p = require("machrt").cpu_peaks() print("bf16 " .. tostring(p.bf16))\n')
    f:close()
    local code, text = F.run("MACHRT_CPU_FEATURES=-avx512_bf16,-amx_bf16 ./machrt " .. script)
    A.eq(code, 0, text)
    A.eq(count(text, "bf16 nil"), 1, "no bf16 figure with avx512_bf16 hidden: " .. text)
end)

test("a CPU without bf16: one message, and training in fp32", function()
    local text = run_mixed("-avx512_bf16,-amx_bf16")
    A.eq(count(text, "precision fp32 units nil"), 1, text)
    A.eq(count(text, "forced fp32"), 1, text)
    A.eq(count(text, "bf16 GEMMs need a CPU with avx512_bf16 or AMX"), 1, "the C notice, once: " .. text)
    A.eq(count(text, "this CPU has no bf16"), 1, "the run's notice, once: " .. text)
end)

return tests
