-- machrt.amp: the dynamic loss scaler's logic (PyTorch GradScaler
-- semantics), on CPU tensors: scaling, unscaling, a skipped step on an
-- Inf/NaN gradient with the scale backed off, growth after N clean steps,
-- and its state for checkpoints.

local mt = require "machrt"
local sys = require "machrt.sys"
local optim = require "machrt.optim"
local amp = require "machrt.amp"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

-- One parameter, SGD without momentum: p <- p - lr * g.
local function setup(grad_values)
    local p = mt.tensor{ 1, 2, 3 }
    local e = { name = "w", param = p, grad = mt.tensor(grad_values) }
    return e, optim.SGD({ e }, { lr = 0.5 })
end

test("defaults are PyTorch's: scale 2^16, growth 2 every 2000 steps, backoff 0.5", function()
    local s = amp.GradScaler()
    A.eq(s:get_scale(), 65536.0)
    A.eq(s.growth_factor, 2.0)
    A.eq(s.backoff_factor, 0.5)
    A.eq(s.growth_interval, 2000)
end)

test("a clean step: gradients scaled, then unscaled exactly, and the optimizer steps", function()
    local s = amp.GradScaler{ init_scale = 1024 }
    local e, opt = setup{ 0.25, -1, 3 }
    local g = s:scale(e.grad)
    A.tensor_near(g, { 256, -1024, 3072 }, 0, "scaled in place")
    A.truthy(s:unscale({ e }), "finite gradients may step")
    A.tensor_near(e.grad, { 0.25, -1, 3 }, 0, "unscaled (a power of two: exact)")
    opt:step()
    A.tensor_near(e.param, { 0.875, 2.5, 1.5 }, 1e-7, "the step used the unscaled gradient")
    A.eq(s:update(), 1024, "no growth before growth_interval")
    A.eq(s.growth_tracker, 1)
end)

test("an Inf or NaN gradient: the step is skipped and the scale halves", function()
    for _, bad in ipairs{ math.huge, -math.huge, 0 / 0 } do
        local s = amp.GradScaler()
        local e, opt = setup{ 1, bad, 1 }
        local clean = { name = "b", param = mt.zeros{ 2 }, grad = mt.ones{ 2 } }
        s.growth_tracker = 5
        local ok = s:unscale({ clean, e })
        A.eq(ok, false, "unscale reports the non-finite gradient " .. tostring(bad))
        if ok then opt:step() end
        A.tensor_near(e.param, { 1, 2, 3 }, 0, "parameters untouched")
        A.eq(s:update(), 32768.0, "backoff 0.5")
        A.eq(s.growth_tracker, 0, "the clean-step count restarts")
    end
end)

test("growth after growth_interval clean steps in a row, and only then", function()
    local s = amp.GradScaler{ init_scale = 8, growth_interval = 3 }
    local e = setup{ 1, 1, 1 }
    local seen = {}
    for step = 1, 7 do
        e.grad:fill(1)
        if step == 5 then e.grad:set(math.huge, 2) end
        s:unscale({ e })
        seen[step] = s:update()
    end
    -- clean, clean, clean (grow to 16), clean, Inf (back to 8), clean, clean
    A.eq(seen, { 8, 8, 16, 16, 8, 8, 8 })
    A.eq(s.growth_tracker, 2)
end)

test("state for checkpoints, and bad options", function()
    local s = amp.GradScaler{ init_scale = 4 }
    s.growth_tracker = 7
    local t = s:state_dict()
    local r = amp.GradScaler()
    r:load_state_dict(sys.json_decode(sys.json_encode(t)))
    A.eq(r:get_scale(), 4)
    A.eq(r.growth_tracker, 7)
    A.raises(function() amp.GradScaler{ init_scale = 0 } end)
    A.raises(function() amp.GradScaler{ backoff = 0.5 } end)
    A.raises(function() r:load_state_dict{ scale = "x" } end)
end)

return T
