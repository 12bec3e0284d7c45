-- nn.compile_inference: the fused oneDNN inference plan of a ResNet against
-- the unfused model in evaluation mode and against torchvision's logits
-- (tests/fixtures/gen_resnet_fixtures.py); refusals and bad inputs. The
-- plan's C core is checked against a direct reference in
-- tests/c/test_infer_plan.c.
local mt = require "machrt"
local nn = require "machrt.nn"
local K = require "machrt.kernels"
local F = require "files"
local A = require "assert"
local W = require "resnet_weights"

local tests, test, tmpdir = F.suite()

-- Reorders a ResNet plan has between layers: with machrt's own Winograd
-- (fp32 on CPUs without AVX-512), which works in nchw while the layers it
-- does not run stay in oneDNN's layout, one where the stem (conv1 and the
-- max pool) hands its output to layer1, and three for each downsampling
-- block (its input into oneDNN's layout, shared by the stride-2 conv1 and
-- the 1x1 downsample, and their two outputs back to nchw); none otherwise.
local function handover(steps)
    if not steps:find("machrt winograd") then return 0 end
    A.truthy(steps:find("maxpool[^\n]*\nreorder: [^\n]*\nlayer1%.0%.conv1"), "a reorder follows the stem:\n" .. steps)
    local _, downsamples = steps:gsub("downsample%.0 %(", "")
    for stage = 2, 4 do
        A.truthy(steps:find(("reorder: [^\n]*\nlayer%d%%.0%%.conv1"):format(stage)),
            ("layer%d.0's input is reordered for oneDNN:\n"):format(stage) .. steps)
    end
    return 1 + 3 * downsamples
end

local function rel_max(got, want)
    return (got - want):abs():max() / math.max(want:abs():max(), 1e-12)
end

-- Batch norms with statistics and affine parameters far from the identity,
-- so that folding them is really exercised.
local function perturb_batchnorms(model, seed)
    mt.manual_seed(seed)
    model:apply(function(m)
        if m.__name == "BatchNorm2d" then
            m.buffers.running_mean:copy(mt.randn{m.c}:mul(0.2))
            m.buffers.running_var:copy(mt.rand{m.c}:add(0.5))
            m.params.weight.param:copy(mt.rand{m.c}:add(0.5))
            m.params.bias.param:copy(mt.randn{m.c}:mul(0.2))
        end
    end)
    return model
end

local function small_resnet(pool, seed)
    mt.manual_seed(seed or 0)
    return perturb_batchnorms(nn.resnet18{in_channels = 1, num_classes = 5, pool = pool, width = 16}, (seed or 0) + 1)
        :evaluate()
end

local function bf16_or_skip()
    if not K.infer_bf16_supported() then A.skip("this CPU has neither avx512_bf16 nor AMX") end
end

-- Shapes: odd sizes, batch 1, and one even enough for every stride.
local SHAPES = {{3, 61, 77}, {1, 64, 48}, {2, 33, 95}}

for _, pool in ipairs{"gem", "avg"} do
    test(("fp32 plan = evaluation logits to 1e-4, %s head, stride-2 blocks, odd sizes and batch 1"):format(pool), function()
        local model = small_resnet(pool, 3)
        for _, winograd in ipairs{true, false} do
            local plan = nn.compile_inference(model, {precision = "fp32", winograd = winograd})
            for _, s in ipairs(SHAPES) do
                mt.manual_seed(s[2])
                local x = mt.randn{s[1], 1, s[2], s[3]}
                local want = model:forward(x):clone()
                local got = plan:forward(x)
                A.shape_eq(got, {s[1], 5})
                local rel = rel_max(got, want)
                A.truthy(rel < 1e-4, ("%dx1x%dx%d, winograd %s: relative difference %.3e"):format(s[1], s[2], s[3],
                    tostring(winograd), rel))
            end
        end
    end)
end

-- bf16 keeps 8 significant bits: weights (after folding), the input and
-- every activation between the 20 layers are rounded, each by up to 2^-9
-- relative. The errors of a layer's sums partly cancel, and those of the
-- layers add up roughly as a random walk, sqrt(20) * 2^-9 ~ 1e-2 of the
-- typical logit; 3e-2 of the largest leaves room for the tail. Measured:
-- below 1e-2 (printed).
test("bf16 plan: within 3e-2 of the fp32 evaluation logits (relative to the largest)", function()
    bf16_or_skip()
    local model = small_resnet("gem", 5)
    local plan = nn.compile_inference(model, {precision = "bf16"})
    A.eq(plan.precision, "bf16")
    local worst = 0
    for _, s in ipairs(SHAPES) do
        mt.manual_seed(s[3])
        local x = mt.randn{s[1], 1, s[2], s[3]}
        local rel = rel_max(plan:forward(x), model:forward(x))
        A.truthy(rel < 3e-2, ("%dx1x%dx%d: relative difference %.3e"):format(s[1], s[2], s[3], rel))
        worst = math.max(worst, rel)
    end
    A.truthy(worst > 0, "bf16 logits are not fp32's")
    print(("# bf16 plan logits: %.3e of the largest fp32 logit"):format(worst))
end)

-- torchvision's logits of the fixture (hashed weights and statistics).
local FIXTURE = "tests/fixtures/resnet34_torch.safetensors"
for _, case in ipairs{{"avg", "eval.logits"}, {"gem", "gem.eval.logits"}} do
    test(("fp32 plan of ResNet34 = torchvision's %s to 1e-4"):format(case[2]), function()
        local ref = mt.load(FIXTURE)
        mt.manual_seed(0)
        local m = nn.resnet34{in_channels = 1, num_classes = 4, pool = case[1], init = false}
        W.fill(m)
        if case[1] == "gem" then m.children.pool.params.p.param:fill(3) end
        m:evaluate()
        local plan = nn.compile_inference(m, {precision = "fp32"})
        local rel = rel_max(plan:forward(ref.input), ref[case[2]])
        A.truthy(rel < 1e-4, ("relative difference %.3e"):format(rel))
        local reorders, steps = plan:describe(ref.input:size(1), ref.input:size(3), ref.input:size(4))
        A.eq(reorders, handover(steps), "activations stay in one layout between layers:\n" .. steps)
    end)
end

test("ResNet34 plans reorder only the input, the output and (own Winograd) the stem's and the downsampling blocks' hand-overs, in both precisions", function()
    mt.manual_seed(0)
    local m = nn.resnet34{in_channels = 1, num_classes = 4, init = false}:evaluate()
    for _, precision in ipairs(K.infer_bf16_supported() and {"fp32", "bf16"} or {"fp32"}) do
        local plan = nn.compile_inference(m, {precision = precision})
        local reorders, steps = plan:describe(2, 128, 216)
        A.eq(reorders, handover(steps), precision .. ":\n" .. steps)
        local _, n_steps = steps:gsub("\n", "")
        local _, n_reorders = steps:gsub("reorder:", "")
        A.eq(n_steps - n_reorders, 36 + 1, precision .. ": one step per convolution, and the max pool:\n" .. steps)
        A.truthy(not steps:find("batchnorm") and not steps:find("eltwise") and not steps:find("binary"),
            "BN, ReLU and the residual sum are fused:\n" .. steps)
    end
end)

test("refresh takes the model's new weights and statistics", function()
    local model = small_resnet("avg", 7)
    local plan = nn.compile_inference(model, {precision = "fp32"})
    local x = mt.randn{2, 1, 40, 40}
    local before = plan:forward(x):clone()
    perturb_batchnorms(model, 99)
    local want = model:forward(x):clone()
    A.truthy(rel_max(plan:forward(x), want) > 1e-2, "the plan holds a copy of the weights")
    plan:refresh()
    A.truthy(rel_max(plan:forward(x), want) < 1e-4, "after refresh")
    A.truthy(rel_max(before, want) > 1e-2)
end)

test("models the plan cannot run are refused, naming the layer", function()
    local Module = nn.Module
    local Odd = Module.class("Odd", Module)
    function Odd:forward(x) return x end
    local net = nn.Sequential{nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), Odd(), nn.GeM(), nn.Flatten(),
                              nn.Linear(8, 2)}
    net:_set_path("")
    A.raises(function() nn.compile_inference(net) end, "3 (Odd) cannot be planned")
    local no_pool = nn.Sequential{nn.Conv2d(1, 8, 3), nn.ReLU()}
    A.raises(function() nn.compile_inference(no_pool) end, "has no global pooling")
    local after_pool = nn.Sequential{nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.ReLU(), nn.Flatten()}
    A.raises(function() nn.compile_inference(after_pool) end, "follows the global pooling")
    A.raises(function() nn.compile_inference(small_resnet("avg"), {precision = "fp16"}) end,
        "precision must be 'fp32' or 'bf16'")
    A.raises(function() nn.compile_inference(small_resnet("avg"), {threads = 2}) end, "unknown option 'threads'")
    -- a plain Sequential of the same layers is planned, and matches
    mt.manual_seed(4)
    local plain = nn.Sequential{nn.Conv2d(2, 16, 3, {padding = 1}), nn.BatchNorm2d(16), nn.ReLU(),
                                nn.MaxPool2d(2), nn.Conv2d(16, 16, 3), nn.ReLU(), nn.Dropout(0.5),
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3)}
    perturb_batchnorms(plain, 5):evaluate()
    local x = mt.randn{3, 2, 15, 17}
    A.truthy(rel_max(nn.compile_inference(plain, {precision = "fp32"}):forward(x), plain:forward(x)) < 1e-4)
end)

test("a bad input shape gives a clear error", function()
    local plan = nn.compile_inference(small_resnet("gem"), {precision = "fp32"})
    A.raises(function() plan:forward(mt.randn{2, 3, 32, 32}) end, "expected input of shape N x 1 x H x W, got 2x3x32x32")
    A.raises(function() plan:forward(mt.randn{1, 32, 32}) end, "expected input of shape N x 1 x H x W, got 1x32x32")
    local unpadded = nn.Sequential{nn.Conv2d(1, 8, 5), nn.ReLU(), nn.GeM(), nn.Flatten(), nn.Linear(8, 2)}
    unpadded:_set_path("")
    A.raises(function() nn.compile_inference(unpadded, {precision = "fp32"}):forward(mt.randn{1, 1, 3, 9}) end,
        "too small: 0 (Conv2d) gets 3x9")
    A.raises(function() plan:forward("x") end, "got string")
    -- and the plan still works afterwards
    A.shape_eq(plan:forward(mt.randn{1, 1, 40, 40}), {1, 5})
end)

-- A CPU without AMX (hidden): oneDNN's avx512_bf16 kernels; one without
-- any bf16: one message and an fp32 plan.
test("without AMX the bf16 plan runs avx512_bf16 kernels; without bf16 it falls back to fp32", function()
    bf16_or_skip()
    local script = tmpdir() .. "/plan.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
        local mt = require "machrt"
        local nn = require "machrt.nn"
        mt.manual_seed(0)
        local m = nn.resnet18{in_channels = 1, num_classes = 3, width = 16}:evaluate()
        local x = mt.randn{2, 1, 40, 56}
        for _ = 1, 2 do
            local plan = nn.compile_inference(m, {precision = "bf16"})
            local _, steps = plan:describe(2, 40, 56)
            local rel = (plan:forward(x) - m:forward(x)):abs():max() / m:forward(x):abs():max()
            print(("precision %s amx %s rel %.3e"):format(plan.precision, tostring(steps:find("amx") ~= nil), rel))
        end
    ]])
    f:close()
    local code, text = F.run("MACHRT_CPU_FEATURES=-amx_bf16 ./machrt " .. script)
    A.eq(code, 0, text)
    local rel = tonumber(text:match("precision bf16 amx false rel (%S+)"))
    A.truthy(rel and rel < 3e-2, "bf16 without AMX: " .. text)
    code, text = F.run("MACHRT_CPU_FEATURES=-avx512_bf16,-amx_bf16 ./machrt " .. script)
    A.eq(code, 0, text)
    A.truthy(text:find("precision fp32 amx false rel"), text)
    local _, said = text:gsub("bf16 inference plan unavailable", "")
    A.eq(said, 1, "one message: " .. text)
end)

return tests
