-- The layers of anomaly detection against PyTorch and scikit-learn
-- (tests/fixtures/anomaly.safetensors, from gen_anomaly_fixtures.py) and
-- finite differences: BatchNorm1d, the cosine head with ArcFace and AdaCos,
-- the Gaussian fit and the Mahalanobis distance, MSELoss, and the DCASE 2020
-- baseline autoencoder's forward, loss and one Adam step.
local mt = require "machrt"
local nn = require "machrt.nn"
local optim = require "machrt.optim"
local A = require "assert"

local tests = {}

local FX = mt.load("tests/fixtures/anomaly.safetensors")

local function fx(name)
    return FX[name] or error("fixture tensor " .. name .. " missing (rerun gen_anomaly_fixtures.py)", 2)
end

-- Largest |a - b| relative to the largest |b|.
local function rel_err(a, b)
    return (a - b):abs():max() / math.max(b:abs():max(), 1e-12)
end

local function near(t, want, tol, what)
    local e = rel_err(t:contiguous(), want)
    if not (e <= tol) then error(("%s: relative error %.3g above %.3g"):format(what, e, tol), 2) end
end

-- Central differences of f() (a number) over the entries of t, against grad.
local function finite_differences(f, t, grad, what, h, tol)
    local flat, g = t:reshape{ -1 }, grad:contiguous():reshape{ -1 }
    local scale = math.max(g:abs():max(), 1e-3)
    for idx = 1, flat:numel() do
        local old = flat:get(idx)
        flat:set(old + h, idx); local lp = f()
        flat:set(old - h, idx); local lm = f()
        flat:set(old, idx)
        local fd = (lp - lm) / (2 * h)
        if math.abs(fd - g:get(idx)) > tol * scale then
            error(("%s[%d]: analytic %.6g, finite difference %.6g"):format(what, idx, g:get(idx), fd), 2)
        end
    end
end

local function bn1d_from_fixture()
    local bn = nn.BatchNorm1d(5, { eps = 1e-3, momentum = 0.01 })
    bn:load_state_dict({ weight = fx("bn1d.weight"), bias = fx("bn1d.bias"),
                         running_mean = fx("bn1d.running_mean"):clone(), running_var = fx("bn1d.running_var"):clone(),
                         num_batches_tracked = mt.zeros({}, "int64") })
    return bn
end

tests["BatchNorm1d matches PyTorch in training and evaluation"] = function()
    local x, dy = fx("bn1d.x"), fx("bn1d.dy")
    local bn = bn1d_from_fixture()
    local y = bn:forward(x)
    near(y, fx("bn1d.train.y"), 1e-5, "train y")
    near(bn:backward(x, dy), fx("bn1d.train.dx"), 1e-4, "train dx")
    near(bn.params.weight.grad, fx("bn1d.train.dweight"), 1e-5, "dweight")
    near(bn.params.bias.grad, fx("bn1d.train.dbias"), 1e-5, "dbias")
    near(bn.buffers.running_mean, fx("bn1d.train.running_mean"), 1e-5, "running_mean")
    near(bn.buffers.running_var, fx("bn1d.train.running_var"), 1e-5, "running_var")
    local ev = bn1d_from_fixture()
    ev:evaluate()
    near(ev:forward(x), fx("bn1d.eval.y"), 1e-5, "eval y")
    near(ev:backward(x, dy), fx("bn1d.eval.dx"), 1e-5, "eval dx")
    A.raises(function() bn:forward(mt.zeros{ 4, 3 }) end, "BatchNorm1d", "N x 5", "4x3")
    A.raises(function() bn:forward(mt.zeros{ 1, 5 }) end, "more than one value per feature")
end

tests["BatchNorm1d backward matches finite differences"] = function()
    -- In training the output depends on the batch statistics only, so the
    -- running averages that each forward moves do not disturb the quotients.
    local bn = bn1d_from_fixture()
    local x = fx("bn1d.x"):clone()
    local w = fx("bn1d.dy")
    local function f() return (bn:forward(x) * w):sum() end
    f()
    local dx = bn:backward(x, w):clone()
    finite_differences(f, x, dx, "dx", 1e-2, 2e-2)
    finite_differences(f, bn.params.weight.param, bn.params.weight.grad:clone(), "dweight", 1e-2, 2e-2)
end

tests["cosine head with ArcFace matches PyTorch, both branches of the margin"] = function()
    local x, target = fx("arc.x"), fx("arc.target")
    local head = nn.CosineLinear(8, 5, { scale = fx("arc.scale"):get(1) })
    head:load_state_dict({ weight = fx("arc.w"), scale = fx("arc.scale") })
    local loss = nn.ArcFaceLoss(head, { margin = fx("arc.margin"):get(1) })
    local logits = head:forward(x)
    near(logits, fx("arc.logits"), 1e-5, "logits")
    A.near(loss:forward(logits, target), fx("arc.loss"):get(1), 1e-5)
    head:zero_grad()
    local dx = head:backward(x, loss:backward(logits, target))
    near(dx, fx("arc.dx"), 1e-4, "dx")
    near(head.params.weight.grad, fx("arc.dw"), 1e-4, "dw")
    -- One-hot targets, as the loaders give them, are the same classes.
    local one_hot = mt.zeros{ 6, 5 }
    for i = 1, 6 do one_hot:set(1, i, target:get(i)) end
    A.near(loss:forward(logits, one_hot), fx("arc.loss"):get(1), 1e-5)
end

tests["ArcFace through the cosine head matches finite differences"] = function()
    local x, target = fx("arc.x"):clone(), fx("arc.target")
    local head = nn.CosineLinear(8, 5, { scale = 10 })
    head:load_state_dict({ weight = fx("arc.w"):clone(), scale = mt.full({ 1 }, 10) })
    local loss = nn.ArcFaceLoss(head, { margin = 0.5 })
    local function f() return loss:forward(head:forward(x), target) end
    f()
    head:zero_grad()
    local dx = head:backward(x, loss:backward(head.output, target)):clone()
    local dw = head.params.weight.grad:clone()
    finite_differences(f, x, dx, "dx", 1e-3, 2e-2)
    finite_differences(f, head.params.weight.param, dw, "dw", 1e-3, 2e-2)
end

tests["AdaCos matches the reference: loss, adapted scale, gradients"] = function()
    local x, target = fx("ada.x"), fx("ada.target")
    local s0 = fx("ada.scale0"):get(1)
    A.near(s0, math.sqrt(2) * math.log(4), 1e-6)
    local head = nn.CosineLinear(8, 5, { scale = s0 })
    head:load_state_dict({ weight = fx("ada.w"), scale = mt.full({ 1 }, s0) })
    local loss = nn.AdaCosLoss(head)
    local logits = head:forward(x)
    near(logits, fx("ada.logits"), 1e-5, "logits")
    A.near(loss:forward(logits, target), fx("ada.loss"):get(1), 1e-5)
    A.near(head:get_scale(), fx("ada.scale"):get(1), 1e-5)
    head:zero_grad()
    -- The head multiplies by the scale in use when it ran: the adapted one
    -- enters through the loss's gradient.
    head:set_scale(s0)
    local dx = head:backward(x, loss:backward(logits, target))
    near(dx, fx("ada.dx"), 1e-4, "dx")
    near(head.params.weight.grad, fx("ada.dw"), 1e-4, "dw")
    -- In evaluation the scale stays.
    head:evaluate()
    head:set_scale(s0)
    loss:forward(head:forward(x), target)
    A.near(head:get_scale(), s0, 1e-7)
end

tests["gaussian_fit matches scikit-learn's LedoitWolf and a fixed shrinkage"] = function()
    local x = fx("gauss.x")
    local g = nn.gaussian_fit(x)
    A.near(g.shrinkage, fx("gauss.shrinkage"):get(1), 1e-5)
    near(g.mean, fx("gauss.mean"), 1e-6, "mean")
    near(g.covariance, fx("gauss.cov"), 1e-5, "covariance")
    near(g.precision, fx("gauss.precision"), 1e-4, "precision")
    local fixed = nn.gaussian_fit(x, { shrinkage = 0.2 })
    A.near(fixed.shrinkage, 0.2, 1e-12)
    near(fixed.covariance, fx("gauss.fixed.cov"), 1e-5, "fixed covariance")
    near(fixed.precision, fx("gauss.fixed.precision"), 1e-4, "fixed precision")
end

tests["Mahalanobis distance and its gradient match PyTorch and finite differences"] = function()
    local q, w = fx("gauss.q"):clone(), fx("gauss.g")
    local m = nn.Mahalanobis(fx("gauss.mean"), fx("gauss.precision"))
    near(m:forward(q), fx("gauss.dist"), 1e-5, "dist")
    local dq = m:backward(q, w):clone()
    near(dq, fx("gauss.dq"), 1e-4, "dq")
    finite_differences(function() return (m:forward(q) * w):sum() end, q, dq, "dq", 1e-2, 1e-2)
    -- At the mean itself the distance is 0 and so is the gradient.
    local at_mean = fx("gauss.mean"):reshape{ 1, 6 }
    A.near(m:forward(at_mean):get(1), 0, 1e-3)
    A.tensor_near(m:backward(at_mean, mt.ones{ 1 }), { { 0, 0, 0, 0, 0, 0 } }, 1e-6)
end

tests["gaussian_fit and Mahalanobis refuse what they cannot do"] = function()
    A.raises(function() nn.gaussian_fit(mt.ones{ 1, 4 }) end, "at least 2 rows", "1x4")
    A.raises(function() nn.gaussian_fit(mt.ones{ 5, 3 }) end, "singular")
    A.raises(function() nn.gaussian_fit(mt.ones{ 5, 3 }, { shrinkage = 2 }) end, "shrinkage", "[0, 1]")
    A.raises(function() nn.gaussian_fit(mt.zeros{ 5 }) end, "2-D")
    local bad = mt.randn{ 4, 2 }
    bad:set(0 / 0, 2, 1)
    A.raises(function() nn.gaussian_fit(bad) end, "row 2", "not finite")
    local m = nn.Mahalanobis(mt.zeros{ 3 }, mt.ones{ 3, 3 })
    A.raises(function() m:forward(mt.zeros{ 2, 4 }) end, "N x 3", "2x4")
end

tests["MSELoss: value and gradient"] = function()
    local y, t = mt.tensor{ { 1, 2 }, { 3, 5 } }, mt.tensor{ { 0, 2 }, { 1, 1 } }
    local l = nn.MSELoss()
    A.near(l:forward(y, t), (1 + 0 + 4 + 16) / 4, 1e-6)
    A.tensor_near(l:backward(y, t), { { 0.5, 0 }, { 1, 2 } }, 1e-6)
    A.raises(function() l:forward(y, mt.zeros{ 3 }) end, "MSELoss", "does not match")
end

tests["DCASE baseline autoencoder: forward, MSE and one Adam step match PyTorch"] = function()
    local model = nn.Module.without_init(function() return nn.dcase_autoencoder{} end)
    local sd = {}
    for k, v in pairs(FX) do
        local name = k:match("^ae%.w%.(.*)$")
        if name then sd[name] = v:clone() end
    end
    for k, v in pairs(model:state_dict()) do
        if k:match("num_batches_tracked$") then sd[k] = v end
    end
    model:load_state_dict(sd)
    local x = fx("ae.x")
    local y = model:forward(x)
    near(y, fx("ae.y"), 1e-4, "forward")
    local loss_fn = nn.MSELoss()
    A.near(loss_fn:forward(y, x), fx("ae.loss"):get(1), 1e-5)
    local opt = optim.AdamW(model:parameters(), { lr = 1e-3, eps = 1e-7, weight_decay = 0 })
    model:zero_grad()
    model:backward(x, loss_fn:backward(y, x))
    opt:step()
    -- Adam's first step is lr * g / (|g| + eps): about lr for every weight
    -- whose gradient is well above eps = 1e-7, and there it must match. Where
    -- |g| is near eps (the biases right before a batch norm, whose true
    -- gradient is exactly 0, and a few weights in 10^4), the step divides
    -- float32 rounding by itself and is only bounded by lr.
    local after, grads = model:state_dict(), {}
    for _, p in ipairs(model:parameters()) do grads[p.name] = p.grad:reshape{ -1 }:totable() end
    local checked, ill_conditioned = 0, 0
    for k, v in pairs(FX) do
        local name = k:match("^ae%.after%.(.*)$")
        if name then
            local before = fx("ae.w." .. name)
            local moved = (after[name] - before):reshape{ -1 }:totable()
            local want = (v - before):reshape{ -1 }:totable()
            local g = grads[name]
            for i = 1, #want do
                if math.abs(moved[i] - want[i]) > 2e-5 then
                    if not g or math.abs(g[i]) > 1e-5 or math.abs(moved[i]) > 1e-3 * (1 + 1e-5) then
                        error(("%s[%d]: step %.6g, PyTorch's %.6g (gradient %s)"):format(name, i, moved[i],
                            want[i], g and ("%.3g"):format(g[i]) or "none"))
                    end
                    if not name:match("%.bias$") then ill_conditioned = ill_conditioned + 1 end
                end
            end
            checked = checked + 1
        end
    end
    A.truthy(ill_conditioned < 50, ill_conditioned .. " weight steps differ")
    A.eq(checked, 9 * 4 + 2 + 9 * 2) -- weights, biases, BN weights/biases + running stats
end

return tests
