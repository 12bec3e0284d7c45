-- machrt.optim: AdamW/SGD against PyTorch (tests/fixtures/optim.safetensors,
-- made by tests/fixtures/gen_optim_fixtures.py), the cosine schedule,
-- gradient clipping, parameter groups, state_dict resume, gradient
-- accumulation, and argument errors.

local mt = require "machrt"
local optim = require "machrt.optim"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

local F = mt.load("tests/fixtures/optim.safetensors")
local NAMES = { "w", "b", "k" }

-- Fresh entries {name, param, grad} starting from the fixture's values.
local function entries()
    local list = {}
    for i, n in ipairs(NAMES) do
        local init = F["init." .. n]
        list[i] = { name = n, param = init:clone(), grad = mt.zeros(init:shape()) }
    end
    return list
end

-- Steps `opt` with the fixture's gradients of steps first..last.
local function run_steps(opt, list, first, last)
    for s = first, last do
        for _, e in ipairs(list) do e.grad:copy(F["grad." .. s .. "." .. e.name]) end
        opt:step()
    end
end

local function assert_case(list, case)
    for _, e in ipairs(list) do
        A.tensor_near(e.param, F[case .. "." .. e.name]:totable(), 1e-5, case .. "." .. e.name)
    end
end

local function max_diff(a, b) return (a - b):abs():max() end

-- Relative comparison for small values such as learning rates.
local function rel_near(got, want, rtol, msg)
    if math.abs(got - want) > rtol * math.abs(want) + 1e-15 then
        error(string.format("%s: expected %.9g, got %.9g", msg or "value", want, got), 2)
    end
end

-- The optimizer configurations of gen_optim_fixtures.py.
local CASES = {
    adamw = function(p)
        return optim.AdamW({ { params = { p[1], p[2] }, weight_decay = 0.1 },
                             { params = { p[3] }, lr = 3e-3, weight_decay = 0 } }, { lr = 1e-2 })
    end,
    adamw_amsgrad = function(p)
        return optim.AdamW(p, { lr = 5e-2, betas = { 0.8, 0.9 }, eps = 1e-6, weight_decay = 1e-2,
                                amsgrad = true })
    end,
    sgd_plain = function(p) return optim.SGD(p, { lr = 0.1, weight_decay = 1e-2 }) end,
    sgd_momentum = function(p) return optim.SGD(p, { lr = 0.1, momentum = 0.9 }) end,
    sgd_dampening = function(p)
        return optim.SGD(p, { lr = 0.1, momentum = 0.9, dampening = 0.3 })
    end,
    sgd_nesterov = function(p)
        return optim.SGD(p, { lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 1e-2 })
    end,
}
local CASE_ORDER = { "adamw", "adamw_amsgrad", "sgd_plain", "sgd_momentum", "sgd_dampening",
                     "sgd_nesterov" }

-- PyTorch fixtures ---------------------------------------------------------------

for _, case in ipairs(CASE_ORDER) do
    test("three steps match torch.optim: " .. case, function()
        local list = entries()
        run_steps(CASES[case](list), list, 1, 3)
        assert_case(list, case)
    end)
end

test("defaults are PyTorch's", function()
    local g = optim.AdamW(entries()).param_groups[1]
    A.eq(g.lr, 1e-3); A.eq(g.betas, { 0.9, 0.999 }); A.eq(g.eps, 1e-8)
    A.eq(g.weight_decay, 1e-2); A.eq(g.amsgrad, false)
    local s = optim.SGD(entries(), { lr = 0.5 }).param_groups[1]
    A.eq(s.lr, 0.5); A.eq(s.momentum, 0); A.eq(s.dampening, 0)
    A.eq(s.weight_decay, 0); A.eq(s.nesterov, false)
end)

test("per-group settings override the options", function()
    local p = entries()
    local opt = optim.AdamW({ { params = { p[1] } },
                              { params = { p[2], p[3] }, lr = 0.5, betas = { 0.5, 0.6 } } },
                            { lr = 0.1, weight_decay = 0 })
    local g1, g2 = opt.param_groups[1], opt.param_groups[2]
    A.eq(g1.lr, 0.1); A.eq(g2.lr, 0.5); A.eq(g2.betas, { 0.5, 0.6 }); A.eq(g2.weight_decay, 0)
    A.eq(g2.initial_lr, 0.5)
    A.eq(#g2.params, 2)
end)

-- Schedule -------------------------------------------------------------------------

test("cosine matches the reference run and PyTorch's CosineAnnealingLR", function()
    local lr = optim.cosine { base_lr = 1e-3, total_steps = 120 }
    local ref = F["cosine.ref"]
    for k = 0, 120 do
        rel_near(lr(k), 1e-3 * (1 + math.cos(math.pi * k / 120)) / 2, 1e-12, "formula at " .. k)
        if k < 120 then rel_near(lr(k), ref:get(k + 1), 1e-6, "torch at " .. k) end
    end
    A.eq(lr(0), 1e-3)
    A.truthy(math.abs(lr(120)) < 1e-18)
    A.near(ref:get(121), 0, 1e-9)
end)

test("cosine with warmup and min_lr", function()
    local lr = optim.cosine { base_lr = 1e-3, warmup_steps = 5, total_steps = 20, min_lr = 1e-4 }
    local ref = F["cosine.warmup"]
    for k = 0, 24 do rel_near(lr(k), ref:get(k + 1), 1e-6, "step " .. k) end
    A.eq(lr(0), 0)
    rel_near(lr(2), 0.4e-3, 1e-12)
    rel_near(lr(5), 1e-3, 1e-12)
    rel_near(lr(20), 1e-4, 1e-12)
    rel_near(lr(1000), 1e-4, 1e-12) -- held at min_lr after total_steps
    -- base_lr = 1 gives the factor for groups with their own rates.
    local f = optim.cosine { base_lr = 1, total_steps = 10 }
    rel_near(f(5), 0.5, 1e-12)
end)

test("a schedule drives the groups' lr", function()
    local list = entries()
    local opt = optim.SGD(list, { lr = 1 })
    local lr = optim.cosine { base_lr = 0.1, total_steps = 4 }
    local before = list[1].param:clone()
    for k = 0, 3 do
        opt.param_groups[1].lr = lr(k)
        for _, e in ipairs(list) do e.grad:fill(1) end
        opt:step()
    end
    local total = 0
    for k = 0, 3 do total = total + lr(k) end
    A.near(max_diff(before - list[1].param, mt.full(before:shape(), total)), 0, 1e-6)
end)

test("cosine errors", function()
    local function fails(opts, ...)
        A.raises(function() local f = optim.cosine(opts); return f end, "cosine", ...)
    end
    fails({ total_steps = 10 }, "base_lr")
    fails({ base_lr = -1, total_steps = 10 }, "base_lr")
    fails({ base_lr = 1 }, "total_steps")
    fails({ base_lr = 1, total_steps = 2.5 }, "total_steps")
    fails({ base_lr = 1, total_steps = 10, warmup_steps = 11 }, "warmup_steps")
    fails({ base_lr = 1, total_steps = 10, min_lr = -1 }, "min_lr")
    local f = optim.cosine { base_lr = 1, total_steps = 10 }
    A.raises(function() local v = f(-1); return v end, "step")
end)

-- Clipping -----------------------------------------------------------------------------

local function grads_of_step1()
    local list = entries()
    for _, e in ipairs(list) do e.grad:copy(F["grad.1." .. e.name]) end
    return list
end

test("clip_grad_norm matches torch.nn.utils.clip_grad_norm_", function()
    local list = grads_of_step1()
    local norm = optim.clip_grad_norm(list, 1.0)
    rel_near(norm, F["clip.total_norm"]:get(1), 1e-6, "total norm")
    for _, e in ipairs(list) do
        A.tensor_near(e.grad, F["clip." .. e.name]:totable(), 1e-6, "clipped " .. e.name)
    end
    -- Now the norm is max_norm (up to the 1e-6 guard).
    A.near(optim.clip_grad_norm(list, 1.0), 1.0, 1e-5)
end)

test("clip_grad_norm leaves small gradients alone", function()
    local list = grads_of_step1()
    local norm = optim.clip_grad_norm(list, 100)
    rel_near(norm, F["clip.total_norm"]:get(1), 1e-6)
    for _, e in ipairs(list) do A.eq(max_diff(e.grad, F["grad.1." .. e.name]), 0) end
end)

test("clip_grad_norm takes an optimizer, groups or gradient tensors", function()
    local want = F["clip.total_norm"]:get(1)
    local list = grads_of_step1()
    rel_near(optim.clip_grad_norm(optim.AdamW(list), 1e9), want, 1e-6, "optimizer")
    local groups = { { params = { list[1] } }, { params = { list[2], list[3] } } }
    rel_near(optim.clip_grad_norm(groups, 1e9), want, 1e-6, "groups")
    local grads = { list[1].grad, list[2].grad, list[3].grad }
    rel_near(optim.clip_grad_norm(grads, 1e9), want, 1e-6, "tensors")
    local function fails(params, max_norm, ...)
        A.raises(function() local n = optim.clip_grad_norm(params, max_norm); return n end,
            "clip_grad_norm", ...)
    end
    fails(list, -1, "max_norm")
    fails({ { name = "x", param = mt.zeros { 2 } } }, 1, "'x'", "grad")
end)

-- Parameter groups ------------------------------------------------------------------------

-- torchvision-style names; shapes only matter for the 1-D rule.
local FAKE = {
    { "conv1.weight", { 4, 1, 3, 3 } }, { "bn1.weight", { 4 } }, { "bn1.bias", { 4 } },
    { "layer1.0.conv1.weight", { 4, 4, 3, 3 } }, { "layer1.0.bn1.weight", { 4 } },
    { "layer2.0.downsample.0.weight", { 8, 4, 1, 1 } }, { "layer2.0.downsample.1.weight", { 8 } },
    { "fc.weight", { 2, 8 } }, { "fc.bias", { 2 } }, { "pool.p", { 1 } },
}

local function fake_params()
    local list = {}
    for i, f in ipairs(FAKE) do
        list[i] = { name = f[1], param = mt.zeros(f[2]), grad = mt.zeros(f[2]) }
    end
    return list
end

local function group_names(g)
    local names = {}
    for i, e in ipairs(g.params) do names[i] = e.name end
    return names
end

test("param_groups: biases, norm weights and pool.p get no decay", function()
    local groups = optim.param_groups(fake_params(), { weight_decay = 0.05, lr = 1e-3 })
    A.eq(#groups, 2)
    A.eq(groups[1].name, "decay")
    A.eq(group_names(groups[1]), { "conv1.weight", "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight", "fc.weight" })
    A.eq(groups[1].weight_decay, 0.05)
    A.eq(groups[2].name, "no_decay")
    A.eq(group_names(groups[2]), { "bn1.weight", "bn1.bias", "layer1.0.bn1.weight",
        "layer2.0.downsample.1.weight", "fc.bias", "pool.p" })
    A.eq(groups[2].weight_decay, 0)
    A.eq(groups[1].lr, 1e-3); A.eq(groups[2].lr, 1e-3)
    for name, want in pairs { ["x.norm.weight"] = true, ["x.LayerNorm.weight"] = true,
                              ["x.bias"] = true, ["x.weight"] = false } do
        A.eq(optim.no_decay(name, mt.zeros { 3 }), want, name)
    end
end)

test("param_groups: differential learning rate for named layers", function()
    local groups = optim.param_groups(fake_params(), {
        weight_decay = 0.05, lr = 1e-3,
        differential_lr = 1e-4, differential_layers = { "layer2", "fc" } })
    A.eq(#groups, 4)
    local by = {}
    for _, g in ipairs(groups) do by[g.name] = g end
    A.eq(group_names(by.decay), { "conv1.weight", "layer1.0.conv1.weight" })
    A.eq(group_names(by.no_decay), { "bn1.weight", "bn1.bias", "layer1.0.bn1.weight", "pool.p" })
    A.eq(group_names(by.differential), { "layer2.0.downsample.0.weight", "fc.weight" })
    A.eq(group_names(by.differential_no_decay), { "layer2.0.downsample.1.weight", "fc.bias" })
    A.eq(by.differential.lr, 1e-4); A.eq(by.differential.weight_decay, 0.05)
    A.eq(by.differential_no_decay.lr, 1e-4); A.eq(by.differential_no_decay.weight_decay, 0)
    -- Whole dotted segments: "layer1" does not take "layer10".
    local one = { { name = "layer10.w", param = mt.zeros { 2, 2 }, grad = mt.zeros { 2, 2 } } }
    local g2 = optim.param_groups(one, { differential_layers = { "layer1" } })
    A.eq(g2[1].name, "decay")
end)

test("param_groups feed an optimizer; a custom no_decay rule", function()
    local only_fc = function(name) return name == "fc.weight" end
    local groups = optim.param_groups(fake_params(), { no_decay = only_fc })
    local opt = optim.AdamW(groups, { weight_decay = 0.3 })
    A.eq(#opt.param_groups, 2)
    A.eq(opt.param_groups[1].weight_decay, 0.3) -- nil in the group: the optimizer's option
    A.eq(opt.param_groups[2].weight_decay, 0)
    A.eq(group_names(opt.param_groups[2]), { "fc.weight" })
    A.eq(opt.param_groups[1].lr, 1e-3)
    local function fails(named, opts, ...)
        A.raises(function() local g = optim.param_groups(named, opts); return g end,
            "param_groups", ...)
    end
    fails(fake_params(), { weigth_decay = 1 }, "unknown option", "weigth_decay")
    fails({ { param = mt.zeros { 1 } } }, nil, "entry 1")
    fails(fake_params(), { differential_layers = "layer4" }, "differential_layers")
    fails(fake_params(), { lr = -1 }, "lr")
end)

-- state_dict and resume ---------------------------------------------------------------------

local function with_tmp(fn)
    local path = os.tmpname()
    local ok, err = pcall(fn, path)
    os.remove(path)
    if not ok then error(err, 0) end
end

-- Runs steps 1-3 straight, and 1, save, load into a fresh optimizer over
-- fresh parameters (copied from the interrupted run), steps 2-3; the two
-- must be identical to the bit.
local function check_resume(make)
    local straight = entries()
    local opt = make(straight)
    opt.param_groups[1].lr = opt.param_groups[1].lr * 0.5 -- a schedule's write is restored too
    run_steps(opt, straight, 1, 3)

    local first = entries()
    local opt1 = make(first)
    opt1.param_groups[1].lr = opt1.param_groups[1].lr * 0.5
    run_steps(opt1, first, 1, 1)
    with_tmp(function(path)
        local tensors, info = opt1:state_dict()
        mt.save(path, tensors, info)
        local resumed = entries()
        for i, e in ipairs(resumed) do e.param:copy(first[i].param) end
        local opt2 = make(resumed)
        local t2, i2 = mt.load(path)
        opt2:load_state_dict(t2, i2)
        A.eq(opt2.param_groups[1].lr, opt1.param_groups[1].lr)
        run_steps(opt2, resumed, 2, 3)
        for i, e in ipairs(resumed) do A.eq(max_diff(e.param, straight[i].param), 0, e.name) end
    end)
end

test("state_dict through mt.save/mt.load resumes exactly (AdamW, amsgrad, groups)", function()
    check_resume(CASES.adamw)
    check_resume(CASES.adamw_amsgrad)
end)

test("state_dict round trip resumes exactly (SGD)", function()
    check_resume(CASES.sgd_nesterov)
    check_resume(CASES.sgd_plain)
end)

test("state_dict contents", function()
    local list = entries()
    local opt = CASES.adamw(list)
    local tensors, info = opt:state_dict()
    A.eq(next(tensors), nil, "no state before the first step")
    run_steps(opt, list, 1, 2)
    tensors, info = opt:state_dict()
    A.eq(info.optimizer, "AdamW")
    A.eq(info.param_groups, "2")
    A.eq(info["group.1.params"], "w,b")
    A.eq(info["group.2.params"], "k")
    A.eq(tonumber(info["group.2.lr"]), 3e-3)
    A.eq(info["group.1.betas"], "0.90000000000000002,0.999")
    A.eq(info["state.k.step"], "2")
    A.truthy(mt.is_tensor(tensors["state.w.exp_avg"]))
    A.truthy(mt.is_tensor(tensors["state.w.exp_avg_sq"]))
    A.eq(tensors["state.w.max_exp_avg_sq"], nil)
    for k, v in pairs(info) do A.eq(type(v), "string", k) end
end)

test("load_state_dict errors are clear and change nothing", function()
    local list = entries()
    local opt = CASES.adamw(list)
    run_steps(opt, list, 1, 1)
    local tensors, info = opt:state_dict()
    local function copy(t)
        local c = {}
        for k, v in pairs(t) do c[k] = v end
        return c
    end
    local target = CASES.adamw(entries())
    local function fails(t, i, ...)
        A.raises(function() target:load_state_dict(t, i) end, "load_state_dict", ...)
        A.eq(next(target.state), nil, "a failed load changed the state")
        A.eq(target.param_groups[1].lr, 1e-2, "a failed load changed the groups")
    end
    local sgd = optim.SGD(entries(), { lr = 0.1, momentum = 0.9 })
    A.raises(function() sgd:load_state_dict(tensors, info) end, "is for AdamW", "SGD")
    local i = copy(info); i.param_groups = "3"
    fails(tensors, i, "3 parameter groups")
    i = copy(info); i["group.1.params"] = "w,bias"
    fails(tensors, i, "group 1", "missing in the state: b", "not in this optimizer: bias")
    i = copy(info); i["group.1.params"] = "b,w"
    fails(tensors, i, "order")
    i = copy(info); i["group.1.betas"] = "0.9,1.5"
    fails(tensors, i, "betas")
    i = copy(info); i["group.1.lr"] = "fast"
    fails(tensors, i, "group.1.lr", "fast")
    i = copy(info); i["group.2.eps"] = nil
    fails(tensors, i, "group.2.eps", "missing")
    local t = copy(tensors); t["state.b.exp_avg_sq"] = nil
    fails(t, info, "state.b.exp_avg_sq", "missing")
    t = copy(tensors); t["state.w.exp_avg"] = mt.zeros { 4, 3 }
    fails(t, info, "state.w.exp_avg", "4x3", "3x4")
    t = copy(tensors); t["state.ghost.exp_avg"] = mt.zeros { 1 }
    fails(t, info, "unexpected", "state.ghost.exp_avg")
    i = copy(info); i["state.k.step"] = nil
    fails(tensors, i, "state.k.step")
    A.raises(function() target:load_state_dict(tensors) end, "load_state_dict", "tables")
    -- Names outside "state." (the model's weights in the same file) are ignored.
    t = copy(tensors); t["conv1.weight"] = mt.zeros { 2 }
    target:load_state_dict(t, info)
    A.eq(target.state.w.step, 1)
end)

-- Gradient accumulation and zero_grad ---------------------------------------------------------

test("gradient accumulation: two backward-like additions, then one step", function()
    local acc, once = entries(), entries()
    local opt_acc, opt_once = CASES.adamw(acc), CASES.adamw(once)
    opt_acc:zero_grad()
    for _, e in ipairs(acc) do e.grad:add_(F["grad.1." .. e.name]) end
    for _, e in ipairs(acc) do e.grad:add_(F["grad.2." .. e.name]) end
    opt_acc:step()
    for _, e in ipairs(once) do e.grad:copy(F["grad.1." .. e.name] + F["grad.2." .. e.name]) end
    opt_once:step()
    for i, e in ipairs(acc) do A.eq(max_diff(e.param, once[i].param), 0, e.name) end
    opt_acc:zero_grad()
    for _, e in ipairs(acc) do A.eq(e.grad:abs():max(), 0, e.name) end
end)

test("lr 0 leaves parameters unchanged; a negative lr set later is caught", function()
    local list = entries()
    local opt = optim.AdamW(list, { lr = 0 })
    run_steps(opt, list, 1, 2)
    for _, e in ipairs(list) do A.eq(max_diff(e.param, F["init." .. e.name]), 0) end
    opt.param_groups[1].lr = -1
    A.raises(function() opt:step() end, "AdamW", "param_groups[1].lr")
    opt.param_groups[1].lr = "0.1"
    A.raises(function() opt:step() end, "param_groups[1].lr")
end)

-- Errors --------------------------------------------------------------------------------------

-- Asserts that constructing `kind` over `params` with `opts` fails with a
-- message holding every given piece.
local function ctor_fails(kind, params, opts, ...)
    A.raises(function() local o = optim[kind](params, opts); return o end, ...)
end

local function entry(name, param, grad) return { name = name, param = param, grad = grad } end

test("constructor errors", function()
    ctor_fails("AdamW", entries(), { lr = -1 }, "AdamW", "lr", "non-negative")
    ctor_fails("AdamW", entries(), { betas = { 0.9, 1 } }, "betas", "beta2")
    ctor_fails("AdamW", entries(), { betas = { -0.1, 0.9 } }, "beta1")
    ctor_fails("AdamW", entries(), { betas = 0.9 }, "betas")
    ctor_fails("AdamW", entries(), { eps = -1 }, "eps")
    ctor_fails("AdamW", entries(), { weight_decay = -0.1 }, "weight_decay")
    ctor_fails("AdamW", entries(), { amsgrad = 1 }, "amsgrad", "boolean")
    ctor_fails("AdamW", entries(), { learning_rate = 1 }, "unknown option", "learning_rate")
    ctor_fails("AdamW", {}, nil, "empty")
    ctor_fails("AdamW", nil, nil, "AdamW", "expected a list")
    ctor_fails("SGD", entries(), nil, "SGD", "lr is required")
    ctor_fails("SGD", entries(), { lr = 0.1, nesterov = true }, "nesterov")
    ctor_fails("SGD", entries(), { lr = 0.1, momentum = 0.9, dampening = 0.1, nesterov = true },
        "nesterov", "dampening")
    ctor_fails("SGD", entries(), { lr = 0.1, momentum = -1 }, "momentum")
    local p = entries()
    ctor_fails("AdamW", { { params = { p[1] } }, { params = { p[2] }, lr = -3 } }, nil,
        "param_groups[2].lr")
    p[2].grad = nil
    ctor_fails("AdamW", p, nil, "parameter 'b'", "no grad")
    p = entries()
    p[3].grad = mt.zeros { 7 }
    ctor_fails("AdamW", p, nil, "'k'", "grad has shape 7", "2x1x2x2")
    p = entries()
    ctor_fails("AdamW", { p[1], p[2], p[1] }, nil, "named 'w'")
    ctor_fails("AdamW", { p[1], entry("w2", p[1].param, p[1].grad) }, nil, "more than once")
    local t = mt.zeros { 2, 3 }:transpose(1, 2)
    ctor_fails("AdamW", { entry("a", t, mt.zeros { 3, 2 }) }, nil, "contiguous")
    ctor_fails("AdamW", { entry("a,b", mt.zeros { 2 }, mt.zeros { 2 }) }, nil, "','")
end)

test("a gradient dropped after construction is reported by name", function()
    local p = entries()
    local opt = optim.AdamW(p)
    p[2].grad = nil
    A.raises(function() opt:step() end, "AdamW", "'b'", "grad")
    p[2].grad = mt.zeros { 5, 1 }
    A.raises(function() opt:step() end, "'b'", "grad has shape 5x1")
    -- The failed step left b without state; the others stepped.
    A.eq(opt.state.b.step, nil)
    A.eq(opt.state.w.step, 2)
end)

test("unnamed entries are numbered", function()
    local p = entries()
    for _, e in ipairs(p) do e.name = nil end
    local opt = optim.SGD(p, { lr = 0.1, momentum = 0.5 })
    for _, e in ipairs(p) do e.grad:fill(1) end
    opt:step()
    local tensors, info = opt:state_dict()
    A.eq(info["group.1.params"], "1,2,3")
    A.truthy(mt.is_tensor(tensors["state.2.momentum_buffer"]))
end)

test("kernels reject bad configurations", function()
    local K = require "machrt.kernels"
    local p, g, m, v = mt.zeros { 3 }, mt.zeros { 3 }, mt.zeros { 3 }, mt.zeros { 3 }
    A.raises(function() K.adamw_step(p, g, m, v, nil, {}, 1) end, "adamw_step", "lr must be a number")
    A.raises(function() K.adamw_step(p, g, m, v, nil, { lr = 1, amsgrad = true }, 1) end,
        "max_exp_avg_sq")
    A.raises(function() K.adamw_step(p, g, m, v, nil, { lr = 1 }, 0) end, "step")
    A.raises(function() K.adamw_step(p, g, m, mt.zeros { 4 }, nil, { lr = 1 }, 1) end,
        "exp_avg_sq", "4")
    A.raises(function() K.sgd_step(p, g, nil, { lr = 1, momentum = 0.9 }, true) end,
        "sgd_step", "momentum")
    local t = mt.zeros { 2, 3 }:transpose(1, 2)
    A.raises(function() local s = K.sum_squares(t); return s end, "contiguous")
    A.eq(K.sum_squares(mt.tensor { 1, 2, 3 }), 14)
end)

return T
