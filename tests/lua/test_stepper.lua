-- train.Stepper (machrt.stepper): gradient accumulation against a gradient
-- worked out by hand, the NaN stop, the loss-scaling skip, clipping, the
-- learning-rate update, the gradient-reduce hook and bad options. The model
-- is one Linear layer under BCE with logits, whose gradient has a closed
-- form: dL/dz = (sigmoid(z) - y) / (B * C), dW = dz^T x, db = sum of dz.

local A = require "assert"
local mt = require "machrt"
local nn = require "machrt.nn"
local optim = require "machrt.optim"
local amp = require "machrt.amp"
local train = require "machrt.train"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

local CIN, C = 6, 3

-- A fresh layer with the same weights each call.
local function layer()
    mt.manual_seed(3)
    return nn.Linear(CIN, C)
end

-- Inputs and one-hot targets of `n` samples starting at sample `from`.
local function batch(n, from, scale)
    local x, y = {}, {}
    for i = 1, n do
        local s = from + i - 1
        x[i], y[i] = {}, {}
        for j = 1, CIN do x[i][j] = (scale or 1) * math.sin(1.7 * s + 0.9 * j) end
        for c = 1, C do y[i][c] = (s % C + 1 == c) and 1 or 0 end
    end
    return mt.tensor(x), mt.tensor(y)
end

-- The closed-form gradient of the mean BCE over a batch: {weight = {C x CIN}, bias = {C}}.
local function bce_gradient(w, b, x, y)
    local n = #x
    local gw, gb = {}, {}
    for c = 1, C do
        gw[c], gb[c] = {}, 0
        for j = 1, CIN do gw[c][j] = 0 end
    end
    for i = 1, n do
        for c = 1, C do
            local z = b[c]
            for j = 1, CIN do z = z + w[c][j] * x[i][j] end
            local dz = (1 / (1 + math.exp(-z)) - y[i][c]) / (n * C)
            gb[c] = gb[c] + dz
            for j = 1, CIN do gw[c][j] = gw[c][j] + dz * x[i][j] end
        end
    end
    return { weight = gw, bias = gb }
end

local function param_tables(model)
    local t = {}
    for _, e in ipairs(model:parameters()) do t[e.name] = e.param:totable() end
    return t
end

local function grad_tables(model)
    local t = {}
    for _, e in ipairs(model:parameters()) do t[e.name] = e.grad:totable() end
    return t
end

local function config(o)
    o = o or {}
    return { training = { grad_accumulation = o.accumulation or 1, gradient_clip = o.clip or 0 } }
end

-- A stepper over a fresh layer with plain SGD (p <- p - lr * g) at rate `lr`.
local function make(o)
    o = o or {}
    local model = layer()
    local opt = optim.SGD(model:parameters(), { lr = o.lr or 0.1 })
    local rates = {}
    local state = o.state or { epoch = 0, step = 0 }
    local s = train.Stepper{
        model = model, loss = nn.BCEWithLogitsLoss(), optimizer = opt, scaler = o.scaler,
        set_lr = function(step)
            rates[#rates + 1] = step
            opt.param_groups[1].lr = o.lr or 0.1
            return opt.param_groups[1].lr
        end,
        cfg = config(o), state = state, checkpoint_dir = o.checkpoint_dir, reduce_gradients = o.reduce_gradients,
    }
    return s, model, state, rates
end

test("two accumulated half-batches hold the full batch's mean gradient, checked by hand", function()
    local seen
    local s, model, state = make{ accumulation = 2, reduce_gradients = function(m) seen = grad_tables(m) end }
    local before = param_tables(model)
    local x1, y1 = batch(4, 1)
    local x2, y2 = batch(4, 5)
    s:start_epoch(1)
    local _, stepped = s:step(x1, y1, 1)
    A.eq(stepped, false, "batch 1 of 2 does not step")
    A.eq(state.step, 0)
    A.eq(seen, nil, "no reduce before the accumulation is complete")
    A.eq(param_tables(model), before, "parameters untouched after the first micro-batch")
    _, stepped = s:step(x2, y2, 2)
    A.eq(stepped, true, "batch 2 of 2 steps")
    A.eq(state.step, 1)
    -- Each micro-batch's loss is its own mean, divided by the accumulation:
    -- together the mean gradient of the 8 samples as one batch.
    local x, y = batch(8, 1)
    local want = bce_gradient(before.weight, before.bias, x:totable(), y:totable())
    A.tensor_near(mt.tensor(seen.weight), want.weight, 1e-6, "weight gradient")
    A.tensor_near(mt.tensor(seen.bias), want.bias, 1e-6, "bias gradient")
    -- SGD: the update used exactly those gradients.
    local after = param_tables(model)
    for c = 1, C do
        A.near(after.bias[c], before.bias[c] - 0.1 * seen.bias[c], 1e-6, "bias update")
        for j = 1, CIN do
            A.near(after.weight[c][j], before.weight[c][j] - 0.1 * seen.weight[c][j], 1e-6, "weight update")
        end
    end
    for _, e in ipairs(model:parameters()) do A.eq(e.grad:abs():max(), 0, e.name .. " gradient zeroed after the step") end
end)

test("the reduce hook runs once per optimizer step, with the step counted and the rate set after it", function()
    local calls = {}
    local s, _, state, rates
    s, _, state, rates = make{ accumulation = 2, reduce_gradients = function(_, st)
        calls[#calls + 1] = st.state.step
    end }
    s:start_epoch(1)
    local weighted = 0
    for b = 1, 5 do
        local x, y = batch(2, 2 * b)
        weighted = weighted + 2 * s:step(x, y, b)
    end
    A.eq(calls, { 1, 2 }, "hook calls (the step number each saw)")
    A.eq(rates, { 1, 2 }, "set_lr called with each step number")
    A.eq(state.step, 2)
    A.near(s.lr, 0.1, 0, "stepper.lr is the rate set_lr returned")
    A.near(s:mean_loss(), weighted / 10, 1e-12, "mean loss per sample over the epoch")
    A.eq(s.seen, 10, "samples seen in the epoch")
end)

test("start_epoch drops a partial accumulation", function()
    local s, model = make{ accumulation = 2 }
    s:start_epoch(1)
    local x, y = batch(3, 1)
    s:step(x, y, 1)
    A.truthy(model:parameters()[1].grad:abs():max() > 0, "a gradient after one micro-batch")
    s:start_epoch(2)
    for _, e in ipairs(model:parameters()) do A.eq(e.grad:abs():max(), 0, e.name .. " gradient at the new epoch") end
    A.eq(s.seen, 0)
    A.eq(s:mean_loss(), 0)
end)

test("a NaN loss stops with the epoch, the step and the checkpoint folder named", function()
    local s, model, state = make{ state = { epoch = 2, step = 7 }, checkpoint_dir = "runs/x/fold4" }
    local before = param_tables(model)
    s:start_epoch(3)
    local x, y = batch(2, 1)
    x:set(0 / 0, 1, 1)
    A.raises(function() s:step(x, y, 1) end, "training loss is %-?nan at epoch 3, step 8; stopping",
             "last good checkpoint in runs/x/fold4 is kept")
    A.eq(state.step, 7, "no step counted")
    A.eq(param_tables(model), before, "parameters untouched")
    local s2 = make{ state = { epoch = 0, step = 0 } }
    s2:start_epoch(1)
    local msg = A.raises(function() s2:step(x, y, 1) end, "at epoch 1, step 1; stopping")
    A.truthy(not msg:find("checkpoint", 1, true), "no checkpoint named when none was given: " .. msg)
end)

test("loss scaling: an overflowing gradient skips the update and backs the scale off", function()
    local scaler = amp.GradScaler{ init_scale = 2.0 ^ 127 }
    local s, model, state, rates = make{ scaler = scaler }
    local before = param_tables(model)
    s:start_epoch(1)
    local x, y = batch(4, 1, 1e3) -- scaled gradients of inputs this large overflow float32
    local loss = s:step(x, y, 1)
    A.truthy(loss == loss and loss < math.huge, "the loss itself is finite: " .. tostring(loss))
    A.eq(state.step, 1, "a skipped step still counts")
    A.eq(rates, { 1 }, "and still sets its rate (the schedule does not shift)")
    A.eq(param_tables(model), before, "parameters untouched by the skipped step")
    A.eq(scaler:get_scale(), 2.0 ^ 126, "scale halved")
    A.eq(state.amp, { scale = 2.0 ^ 126, growth_tracker = 0 }, "scaler state kept in the run state")
    for _, e in ipairs(model:parameters()) do A.eq(e.grad:abs():max(), 0, e.name .. " gradient zeroed") end
end)

test("loss scaling: a clean step updates as unscaled training does", function()
    local scaled, model_a = make{ scaler = amp.GradScaler{ init_scale = 1024 } }
    local plain, model_b = make{}
    local x, y = batch(4, 1)
    scaled:start_epoch(1); plain:start_epoch(1)
    scaled:step(x, y, 1); plain:step(x, y, 1)
    local a, b = param_tables(model_a), param_tables(model_b)
    A.tensor_near(mt.tensor(a.weight), b.weight, 1e-6, "weight after a scaled step")
    A.tensor_near(mt.tensor(a.bias), b.bias, 1e-6, "bias after a scaled step")
    A.eq(scaled.state.amp, { scale = 1024, growth_tracker = 1 })
end)

test("gradient_clip bounds the global norm of the update", function()
    local norm
    local s, model = make{ clip = 0.01, lr = 1, reduce_gradients = function(m)
        local sq = 0
        for _, e in ipairs(m:parameters()) do sq = sq + (e.grad * e.grad):sum() end
        norm = math.sqrt(sq)
    end }
    local before = param_tables(model)
    s:start_epoch(1)
    local x, y = batch(4, 1)
    s:step(x, y, 1)
    A.truthy(norm > 0.01, "the raw gradient norm exceeds the clip: " .. tostring(norm))
    local after, sq = param_tables(model), 0
    for c = 1, C do
        sq = sq + (after.bias[c] - before.bias[c]) ^ 2
        for j = 1, CIN do sq = sq + (after.weight[c][j] - before.weight[c][j]) ^ 2 end
    end
    A.near(math.sqrt(sq), 0.01, 1e-4, "norm of the update at lr 1")
end)

test("a profile gets each batch's forward + backward and each step's optimizer time, apart", function()
    local profile = require "machrt.profile"
    -- The optimizer part takes 1000 s of a clock that runs 1000 s ahead from
    -- then on: which part a time went to shows, however loaded the machine.
    local real_clock, ahead = mt.clock, 0
    mt.clock = function() return real_clock() + ahead end
    local ok, err = pcall(function()
        local prof = profile.new()
        local s = make{ accumulation = 2, reduce_gradients = function() ahead = ahead + 1000 end }
        s.profile = prof
        s:start_epoch(1)
        local x, y = batch(4, 1)
        s:step(x, y, 1)
        A.truthy(prof.seconds["forward + backward"] > 0, "batch 1 timed")
        A.eq(prof.seconds.optimizer, nil, "no optimizer step after batch 1 of 2")
        s:step(x, y, 2)
        A.truthy(prof.seconds.optimizer >= 1000, "the step's time, the reduce hook's included")
        A.truthy(prof.seconds["forward + backward"] < 1000, "the optimizer's time is not counted twice")
    end)
    mt.clock = real_clock
    if not ok then error(err, 0) end
end)

test("bad options name what is wrong", function()
    local model = layer()
    local opt = optim.SGD(model:parameters(), { lr = 0.1 })
    local function stepper(o)
        local base = { model = model, loss = nn.BCEWithLogitsLoss(), optimizer = opt,
                       set_lr = function() return 0.1 end, cfg = config(), state = { step = 0 } }
        for k, v in pairs(o) do base[k] = v end
        if o.drop then base[o.drop] = nil end
        base.drop = nil
        return train.Stepper(base)
    end
    A.raises(function() stepper{ drop = "model" } end, "train.Stepper: model is required")
    A.raises(function() stepper{ drop = "set_lr" } end, "set_lr")
    A.raises(function() stepper{ cfg = config{ accumulation = 0 } } end,
             "training.grad_accumulation must be a positive integer, got 0")
    A.raises(function() stepper{ cfg = { training = { grad_accumulation = 1, gradient_clip = "x" } } } end,
             "training.gradient_clip must be a number")
    A.raises(function() stepper{ state = { step = 1.5 } } end, "state.step must be an integer")
    A.raises(function() stepper{ reduce_gradients = 3 } end, "reduce_gradients must be a function")
    A.raises(function() stepper{ profile = {} } end, "profile must be a machrt.profile (profile.new())")
end)

return T
