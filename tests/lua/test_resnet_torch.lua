-- machrt's ResNet34 against torchvision's (tests/fixtures/gen_resnet_fixtures.py):
-- same deterministic weights, same batch; logits, loss, running statistics,
-- every parameter gradient, three AdamW steps, and the GeM head.
local mt = require "machrt"
local nn = require "machrt.nn"
local A = require "assert"
local W = require "resnet_weights"

local FIXTURE = "tests/fixtures/resnet34_torch.safetensors"
local ref, meta = mt.load(FIXTURE)

local function rel_near(got, want, tol, label)
    if math.abs(got - want) > tol * math.abs(want) then
        error(("%s: %.9g, PyTorch has %.9g (relative tolerance %g)"):format(label, got, want, tol), 2)
    end
end

local function rel_max(got, want)
    return (got - want):abs():max() / math.max(want:abs():max(), 1e-12)
end

-- The model of the fixture, in training mode, with the hashed weights
-- (computed once: hashing 21 M values in Lua takes seconds).
local hashed_state
local function model(pool)
    mt.manual_seed(0)
    local m = nn.resnet34{in_channels = 1, num_classes = 4, pool = pool}
    if not hashed_state then
        W.fill(m)
        hashed_state = {}
        for k, t in pairs(m:state_dict()) do hashed_state[k] = t:clone() end
    else
        m:load_state_dict(hashed_state, {strict = false}) -- GeM's pool.p keeps its 3
    end
    return m
end

local function sample(t, positions)
    local flat = t:contiguous():reshape{-1}
    local out = {}
    for i, p in ipairs(positions) do out[i] = flat:get(p + 1) end
    return out
end

-- Positions of the samples (see positions() in the script).
local function positions(numel)
    local out = {}
    for k = 0, 31 do out[#out + 1] = (k * 2654435761 + 7) % numel end
    return out
end

-- stats = {sum, sum of squares}: the norm within `tol` relative, and each
-- sampled entry within tol * max(|value|, rms of the tensor).
local function compare(label, t, prefix, name, tol)
    local stats, want = ref[prefix .. "." .. name .. ".stats"], ref[prefix .. "." .. name .. ".sample"]
    local n = t:numel()
    local sumsq = (t * t):sum()
    local want_sumsq = stats:get(2)
    rel_near(math.sqrt(sumsq), math.sqrt(want_sumsq), tol, ("%s %s: norm"):format(label, name))
    local rms = math.sqrt(want_sumsq / n)
    local got = sample(t, positions(n))
    for i = 1, #got do
        local w = want:get(i)
        if math.abs(got[i] - w) > tol * math.max(math.abs(w), rms) then
            error(("%s %s: entry %d is %.9g, PyTorch has %.9g"):format(label, name, i, got[i], w), 2)
        end
    end
end

local tests = {}

tests["state-dict names and shapes are torchvision's"] = function()
    local m = nn.resnet34{in_channels = 1, num_classes = 4}
    local ours = {}
    for k, t in pairs(m:state_dict()) do
        ours[#ours + 1] = k .. ":" .. (t:dim() == 0 and "scalar" or table.concat(t:shape(), "x"))
    end
    table.sort(ours)
    local theirs = {}
    for e in meta.state_dict:gmatch("[^;]+") do theirs[#theirs + 1] = e end
    A.eq(#ours, #theirs, "number of state-dict entries")
    for i = 1, #theirs do A.eq(ours[i], theirs[i]) end
end

tests["a GeM model's state dict is torchvision's plus pool.p (the README's load into torchvision)"] = function()
    local m = nn.resnet34{in_channels = 1, num_classes = 4, pool = "gem"}
    local ours = {}
    for k, t in pairs(m:state_dict()) do
        ours[k] = t:dim() == 0 and "scalar" or table.concat(t:shape(), "x")
    end
    -- What the README's Python renames (pool.p -> avgpool.p) must be the only name torchvision lacks.
    A.eq(ours["pool.p"], "1", "GeM's exponent: pool.p, one value")
    ours["pool.p"] = nil
    local n = 0
    for e in meta.state_dict:gmatch("[^;]+") do
        local name, shape = e:match("^(.*):(.*)$")
        A.eq(ours[name], shape, name)
        ours[name] = nil
        n = n + 1
    end
    A.eq(next(ours), nil, "a name torchvision's resnet34 does not have")
    A.truthy(n > 200, "the fixture lists torchvision's names")
end

tests["evaluation logits match PyTorch to 1e-4"] = function()
    local m = model("avg"):evaluate()
    local logits = m:forward(ref.input)
    A.truthy(rel_max(logits, ref["eval.logits"]) < 1e-4,
        ("relative difference %.2e"):format(rel_max(logits, ref["eval.logits"])))
end

tests["training step: loss, statistics and every gradient match PyTorch"] = function()
    local m = model("avg")
    local loss_fn = nn.BCEWithLogitsLoss()
    local logits = m:forward(ref.input)
    local loss = loss_fn:forward(logits, ref.target)
    rel_near(loss, ref["train.loss"]:item(), 1e-5, "loss")
    A.truthy(rel_max(logits, ref["train.logits"]) < 1e-4)
    A.truthy(rel_max(m.children.bn1.buffers.running_mean, ref["train.bn1.running_mean"]) < 1e-4)
    local bn = m.children.layer4.children["1"].children.bn2
    A.truthy(rel_max(bn.buffers.running_var, ref["train.layer4.1.bn2.running_var"]) < 1e-4)
    m:zero_grad()
    m:backward(ref.input, loss_fn:backward(logits, ref.target))
    local count = 0
    for _, p in ipairs(m:parameters()) do
        compare("gradient", p.grad, "grad", p.name, 1e-3)
        count = count + 1
    end
    A.eq(count, 110, "parameters compared")
end

-- Adam divides each gradient entry by its own running magnitude, so an
-- entry whose gradient is below the float32 agreement of the two
-- implementations (3e-5 relative, see above) can move by up to a step (lr) in
-- one and not in the other: 550 of 21 M weights differ by more than 1e-4
-- after three steps, and 33 of the 3520 sampled weights (0.9 %) by more than
-- 1e-5 relative. How many cross that line depends on OpenBLAS's kernel
-- choice even where the gradients agree equally well (median sampled
-- gradient error 6e-6 with each): 32 of 3520 with its Haswell and SkylakeX
-- sgemm kernels, 117 to 128 (3.6 %, mostly in layer1's convolutions) with its
-- Cooperlake kernels on an AVX512-BF16 CPU. The test therefore asks, per
-- parameter, for the weights' norm to 1e-5 and the norm of the change to
-- 2e-3, and for 94 % of the sampled weights to agree to 1e-5 (every one
-- within the 3 * lr that three steps can move).
-- The update rule itself is checked to 1e-5 on fixed gradients in test_optim.
tests["three AdamW steps reproduce PyTorch's weights"] = function()
    local ok, optim = pcall(require, "machrt.optim")
    if not ok then A.skip("machrt.optim is not available") end
    local m = model("avg")
    local initial = {}
    for _, p in ipairs(m:parameters()) do initial[p.name] = p.param:clone() end
    local loss_fn = nn.BCEWithLogitsLoss()
    local opt = optim.AdamW(m:parameters(), {lr = 1e-3, weight_decay = 0.05})
    for _ = 1, 3 do
        opt:zero_grad()
        local logits = m:forward(ref.input)
        loss_fn:forward(logits, ref.target)
        m:backward(ref.input, loss_fn:backward(logits, ref.target))
        opt:step()
    end
    local samples, outliers = 0, 0
    for _, p in ipairs(m:parameters()) do
        local stats = ref["adamw." .. p.name .. ".stats"]
        rel_near(math.sqrt((p.param * p.param):sum()), math.sqrt(stats:get(2)), 1e-5, p.name .. " norm")
        local delta = p.param - initial[p.name]
        rel_near(math.sqrt((delta * delta):sum()), math.sqrt(ref["adamw." .. p.name .. ".delta_stats"]:get(2)),
            2e-3, p.name .. " norm of the change")
        local want = ref["adamw." .. p.name .. ".sample"]
        local rms = math.sqrt(stats:get(2) / p.param:numel())
        for i, v in ipairs(sample(p.param, positions(p.param:numel()))) do
            local w = want:get(i)
            samples = samples + 1
            if math.abs(v - w) > 1e-5 * math.max(math.abs(w), rms) then
                outliers = outliers + 1
                A.truthy(math.abs(v - w) <= 3e-3, ("%s entry %d: %.9g, PyTorch %.9g"):format(p.name, i, v, w))
            end
        end
    end
    A.truthy(outliers <= samples * 6 // 100, ("%d of %d sampled weights differ by more than 1e-5"):format(outliers, samples))
end

tests["GeM head matches the reference GeM"] = function()
    local m = model("gem"):evaluate()
    A.truthy(rel_max(m:forward(ref.input), ref["gem.eval.logits"]) < 1e-4)
    m:training()
    local loss_fn = nn.BCEWithLogitsLoss()
    local logits = m:forward(ref.input)
    local loss = loss_fn:forward(logits, ref.target)
    rel_near(loss, ref["gem.train.loss"]:item(), 1e-5, "GeM loss")
    m:zero_grad()
    m:backward(ref.input, loss_fn:backward(logits, ref.target))
    local grads = {}
    for _, p in ipairs(m:parameters()) do grads[p.name] = p.grad end
    for _, name in ipairs{"pool.p", "fc.weight", "fc.bias"} do
        local r = rel_max(grads[name], ref["gem.grad." .. name])
        A.truthy(r < 1e-3, ("%s gradient: relative difference %.2e"):format(name, r))
    end
end

return tests
